"""Turn-by-turn rendering through real chat templates equals rendering the whole conversation,
while generated ids are kept as sampled."""

from __future__ import annotations

import copy

import pytest
from transformers import AutoTokenizer

from rrr.core.chat import ChatRenderer, ChatTemplateError
from rrr.core.tasks import get_task

# Llama-3.1's turn layout (header ids, <|eot_id|> without a newline), reduced to what matters.
LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@pytest.fixture(scope="module")
def tok(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path)


def _whole(tok, messages):
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("task_name", ["countdown", "apigen"])
def test_incremental_equals_whole_conversation(tok, task_name, sample_data):
    import json

    sample = "countdown_sample.jsonl" if task_name == "countdown" else "xlam_sample.jsonl"
    task = get_task(task_name, "qwen")
    row = task.validate_row(json.loads((sample_data / sample).read_text().splitlines()[0]))
    r = ChatRenderer(tok)
    first = task.first_messages(row)
    attempt = [*tok.encode("I think it is 42.", add_special_tokens=False), tok.eos_token_id]
    reflection = tok.encode("I ignored the numbers.", add_special_tokens=False)  # truncated
    ids = r.prompt_ids(first) + attempt
    history = [*first, {"role": "assistant", "content": "I think it is 42."}]
    ids += r.continuation_ids(first, [task.reflection_message(row)], attempt)
    history.append(task.reflection_message(row))
    ids += reflection
    ids += r.continuation_ids(history, task.retry_messages(row), reflection)
    history += [{"role": "assistant", "content": "I ignored the numbers."}]
    history += task.retry_messages(row)
    assert ids == _whole(tok, history)  # retry turns, incl. a mid-conversation system turn


def test_llama3_style_template(tok):
    t = copy.deepcopy(tok)
    t.chat_template = LLAMA3_STYLE
    t.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|start_header_id|>",
                                                        "<|end_header_id|>"]})  # fmt: skip
    r = ChatRenderer(t)
    eot = t.convert_tokens_to_ids("<|eot_id|>")
    assert eot in r.stop_token_ids()
    msgs = [{"role": "user", "content": "hi"}]
    gen = t.encode("hello", add_special_tokens=False)
    for sampled in ([*gen, eot], gen):  # stopped on end-of-turn, or cut by max_tokens
        ids = r.prompt_ids(msgs) + sampled
        ids += r.continuation_ids(msgs, [{"role": "user", "content": "again"}], sampled)
        whole = [*msgs, {"role": "assistant", "content": "hello"},
                 {"role": "user", "content": "again"}]  # fmt: skip
        # Compared as text: BPE may merge "\n\nhello" differently when re-tokenised whole,
        # which is exactly why episodes never re-tokenise generated text.
        expected = t.apply_chat_template(whole, tokenize=False, add_generation_prompt=True)
        assert t.decode(ids, skip_special_tokens=False) == expected


def test_stop_ids_and_missing_template(tok):
    r = ChatRenderer(tok)
    assert tok.convert_tokens_to_ids("<|im_end|>") in r.stop_token_ids()
    t = copy.deepcopy(tok)
    t.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatRenderer(t)


def test_truncated_turn_ending_in_ordinary_lt_token_still_gets_end_of_turn(tok):
    """A turn cut by max_tokens right after an ordinary `<` token: as text `<` is a prefix of
    `<|im_end|>`, but the context must still receive the real end-of-turn token id."""
    r = ChatRenderer(tok)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    lt = tok.encode("<", add_special_tokens=False)
    assert len(lt) == 1 and lt[0] != eot
    msgs = [{"role": "user", "content": "hi"}]
    sampled = [*tok.encode("a", add_special_tokens=False), *lt]  # cut by max_tokens
    cont = r.continuation_ids(msgs, [{"role": "user", "content": "again"}], sampled)
    assert cont[0] == eot
    stopped = [*sampled, eot]  # the sampler stopped on the marker: never a second one
    cont = r.continuation_ids(msgs, [{"role": "user", "content": "again"}], stopped)
    assert eot not in cont[:1]
    assert r.prompt_ids(msgs) + stopped + cont == _whole(
        tok, [*msgs, {"role": "assistant", "content": "a<"}, {"role": "user", "content": "again"}]
    )


def test_closing_ids_after_compares_ids() -> None:
    from rrr.core.chat import closing_ids_after

    closing = [2, 198]  # <|im_end|> \n
    assert closing_ids_after([5, 2], closing, 2) == [198]  # stopped on the marker
    assert closing_ids_after([5, 44], closing, 2) == [2, 198]  # cut after an ordinary token
    assert closing_ids_after([], closing, 2) == [2, 198]
    assert closing_ids_after([5, 0], closing, 2) == [2, 198]  # another stop id (plain EOS)
    assert closing_ids_after([5, 2], [198, 2], 2) == []  # marker after leading whitespace
    assert closing_ids_after([5, 2], closing, None) == [2, 198]  # no single-token marker

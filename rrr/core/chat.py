"""Render chat turns to token ids through the tokenizer's own chat template, turn by turn.

Episodes grow by appending: generated ids go in as they came out of the sampler (never
re-tokenised from text, which can change token boundaries and so the log-probs we train on),
and each new user/system turn is rendered as the *suffix* the chat template adds after an
assistant turn. The suffix is found by rendering the conversation twice, with and without the
new turns, around a placeholder assistant message, and taking the text difference; this works
for any template that renders earlier turns the same way regardless of what follows (ChatML,
Qwen2/2.5, Llama-3.1, Phi-3.5, SmolLM2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rrr.core.errors import RRRError

Message = dict[str, str]
_PLACEHOLDER = "\u2063rrr-placeholder\u2063"


class ChatTemplateError(RRRError, ValueError):
    """The tokenizer has no chat template, or its template cannot be extended turn by turn."""


class ChatRenderer:
    """Token-level chat rendering for one tokenizer (cheap to build; caches the turn suffix)."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "?")
            raise ChatTemplateError(f"tokenizer {name!r} has no chat template; rrr needs one")
        self.tokenizer = tokenizer
        self._end_of_turn = self._find_end_of_turn()
        self._end_of_turn_id = self._single_id(self._end_of_turn.strip())

    def _text(self, messages: Sequence[Message], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=generation_prompt
        )

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _find_end_of_turn(self) -> str:
        """The text a template puts right after an assistant message's content."""
        msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PLACEHOLDER}]
        text = self._text(msgs, generation_prompt=False)
        return text[text.rindex(_PLACEHOLDER) + len(_PLACEHOLDER) :]

    def _single_id(self, text: str) -> int | None:
        """The id of `text` when it encodes to exactly one token (an end-of-turn marker such as
        `<|im_end|>` or `<|eot_id|>`), else None."""
        enc = self._ids(text) if text else []
        return enc[0] if len(enc) == 1 else None

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Ids of a fresh conversation ending in the assistant generation prompt."""
        text = self._text(messages, generation_prompt=True)
        # The template text already holds BOS where the model wants one; encoding it without
        # special tokens keeps tokenizers that add BOS themselves from doubling it.
        return self._ids(text)

    def continuation_ids(
        self, history: Sequence[Message], new_turns: Sequence[Message], generated: Sequence[int]
    ) -> list[int]:
        """Ids to append after an assistant turn's `generated` ids to add `new_turns` and a
        generation prompt. `history` is the conversation before that assistant turn; only its
        shape matters (the templates we support render earlier turns independently of later
        ones)."""
        with_placeholder = [*history, {"role": "assistant", "content": _PLACEHOLDER}]
        before = self._text(with_placeholder, generation_prompt=False)
        after = self._text([*with_placeholder, *new_turns], generation_prompt=True)
        if not after.startswith(before):
            raise ChatTemplateError(
                "the chat template renders earlier turns differently once later turns follow; "
                "rrr cannot extend such conversations token by token"
            )
        cut = before.rindex(_PLACEHOLDER) + len(_PLACEHOLDER)
        closing = before[cut:]
        suffix = after[len(before) :]
        return self._close_turn(generated, closing) + self._ids(suffix)

    def _close_turn(self, generated: Sequence[int], closing: str) -> list[int]:
        """End-of-turn ids still missing after `generated`.

        A sampler that stopped on the end-of-turn token has already emitted it; one that hit
        max_tokens has not. Either way the context must read as a finished assistant turn.
        Decided on token ids, never on decoded text: an ordinary token that decodes to `<` or
        `<|` is a prefix of `<|im_end|>` as text, but the context would then lack the real
        end-of-turn token the model was trained to see.
        """
        closing_ids = self._ids(closing) if closing else []
        return closing_ids_after(generated, closing_ids, self._end_of_turn_id)

    def stop_token_ids(self) -> list[int]:
        """Token ids that end an assistant turn (EOS and the template's end-of-turn marker)."""
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        if self._end_of_turn_id is not None:
            ids.add(self._end_of_turn_id)
        return sorted(ids)


def closing_ids_after(
    generated: Sequence[int], closing_ids: Sequence[int], end_of_turn_id: int | None
) -> list[int]:
    """The part of `closing_ids` (the template's text after an assistant message, as ids) still
    to append after `generated`: everything after the end-of-turn marker when the sampler's
    last id IS that marker (it stopped on it), else all of it (it was cut by max_tokens, or
    stopped on another stop id such as a plain EOS, which the template does not render)."""
    if (
        end_of_turn_id is not None
        and generated
        and generated[-1] == end_of_turn_id
        and end_of_turn_id in closing_ids
    ):
        return list(closing_ids[list(closing_ids).index(end_of_turn_id) + 1 :])
    return list(closing_ids)

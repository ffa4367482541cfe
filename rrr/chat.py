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

from rrr.errors import RRRError

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
        """
        if generated:
            last = self.tokenizer.decode([generated[-1]], skip_special_tokens=False)
            if last and closing.startswith(last):
                closing = closing[len(last) :]
        return self._ids(closing) if closing else []

    def stop_token_ids(self) -> list[int]:
        """Token ids that end an assistant turn (EOS and the template's end-of-turn marker)."""
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        closing = self._end_of_turn.strip()
        if closing:
            enc = self._ids(closing)
            if len(enc) == 1:
                ids.add(enc[0])
        return sorted(ids)

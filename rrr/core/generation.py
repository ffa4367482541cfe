"""The contract between the episode logic and whatever generates tokens.

The episode engine (rrr/core/episodes.py) only knows `Generator.generate(requests)`; a local vLLM
engine, one Ray rollout worker or a fleet of them all satisfy it. Requests and samples are plain
token-id lists so they cross Ray cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GenRequest:
    """One prompt, sampled `n` times. `stop_token_ids` end a turn (EOS, end-of-turn marker).

    `noise_keys` (evaluation only): one key per sample (rrr.core.crn.noise_key); the engine then
    samples from softmax(logits / temperature) with noise keyed on (key, position, token), the
    same for any model, engine or batch (common random numbers); top_p is not applied."""

    prompt_ids: list[int]
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop_token_ids: list[int] = field(default_factory=list)
    noise_keys: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.noise_keys is not None and len(self.noise_keys) != self.n:
            raise ValueError(f"noise_keys: {len(self.noise_keys)} keys for n={self.n} samples")


@dataclass(frozen=True)
class Sample:
    """One generated continuation: ids, the sampler's log-prob of each id, its text, and the
    policy version of the weights that sampled it (the learner step they come from; 0 = the
    base model), as the sampling engine itself reports it."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_tokens)
    version: int = 0


class Generator(Protocol):
    def generate(self, requests: list[GenRequest]) -> list[list[Sample]]:
        """One list of `request.n` samples per request, in request order."""
        ...


class Verifier(Protocol):
    def verify(self, items: list[tuple[dict, str]]) -> list:
        """A `verifiers.Verdict` per (row, response) item, in order."""
        ...

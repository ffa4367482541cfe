"""vLLM (v1 model runner) logits processor that samples with keyed noise: common random
numbers for evaluation (rrr/core/crn.py has the maths and why).

A request opts in through `SamplingParams.extra_args[rrr.core.crn.EXTRA_ARGS_KEY] = [key, T]` and
runs with temperature 0. At every decode step this processor draws its token from
softmax(logits / T) with noise keyed on (key, output position, token id) and leaves that
token alone on top of the row (every other logit -inf), so greedy decoding takes it. Requests
without the extra arg (all of training) are not touched.

vLLM's CPU build runs the v1 model runner, whose custom logits processors implement this
interface; VLLMEngine registers the class on CPU only (see VLLMEngine.generate for the GPU
route). The output position is the number of tokens the request has generated so far, read
from the running output list vLLM hands over when the request joins the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from rrr.core.crn import EXTRA_ARGS_KEY, sample

FQCN = "rrr.actors.crn_logits:KeyedNoiseSampler"


def _noise_args(params: SamplingParams) -> tuple[int, float] | None:
    extra = params.extra_args or {}
    spec = extra.get(EXTRA_ARGS_KEY)
    if spec is None:
        return None
    key, temperature = spec
    return int(key), float(temperature)


class KeyedNoiseSampler(LogitsProcessor):
    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        spec = (sampling_params.extra_args or {}).get(EXTRA_ARGS_KEY)
        if spec is None:
            return
        if not (isinstance(spec, (list, tuple)) and len(spec) == 2 and float(spec[1]) > 0):
            raise ValueError(f"{EXTRA_ARGS_KEY} must be [key, temperature > 0], got {spec!r}")
        if sampling_params.temperature != 0:
            # The noise is the sampling: vLLM's own would be added on top.
            raise ValueError(f"{EXTRA_ARGS_KEY} needs temperature=0 (greedy) in SamplingParams")

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        del vllm_config, is_pin_memory
        self.device = device
        # batch index -> (key, temperature, the request's running output token list)
        self.rows: dict[int, tuple[int, float, list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the argmax

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def new_state(
            params: SamplingParams, _prompt: list[int] | None, output: list[int]
        ) -> tuple[int, float, list[int]] | None:
            args = _noise_args(params)
            return None if args is None else (args[0], args[1], output)

        process_dict_updates(self.rows, batch_update, new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        index = sorted(i for i in self.rows if i < logits.shape[0])
        if not index:
            return logits
        state = [self.rows[i] for i in index]
        rows = torch.tensor(index, dtype=torch.int64, device=logits.device)
        keys = torch.tensor([s[0] for s in state], dtype=torch.int64)
        temps = torch.tensor([s[1] for s in state], dtype=torch.float32)
        positions = torch.tensor([len(s[2]) for s in state], dtype=torch.int64)
        winners = sample(logits.index_select(0, rows), keys, positions, temps)
        chosen = torch.full((len(index), logits.shape[1]), float("-inf"), dtype=logits.dtype,
                            device=logits.device)  # fmt: skip
        chosen.scatter_(1, winners[:, None].to(logits.device), 0.0)
        logits.index_copy_(0, rows, chosen)
        return logits

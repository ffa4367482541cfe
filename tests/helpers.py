"""Helpers shared by tests (not fixtures): tiny models and HF log-prob recomputation."""

from __future__ import annotations

from pathlib import Path

# The engines that tests start themselves run vLLM's engine core in the actor's process
# (rollout.in_process_engine): one process to start instead of three (the actor, vLLM's engine
# core, its CPU worker), each importing vLLM. Measured on one core: 19 s to a ready engine
# instead of 43-50 s. vLLM's default, the child processes, stays covered where users meet it:
# tests/test_learnability.py runs its preset unchanged, and tests/test_sync_tensor_parallel.py
# starts a two-worker engine (always child processes).
IN_PROCESS = True
IN_PROCESS_OVERRIDE = f"rollout.in_process_engine={str(IN_PROCESS).lower()}"  # as a config override


def build_tiny_model(
    out: Path, tokenizer_source: str, *, seed: int = 0, tied: bool = False, extra_vocab: int = 0
) -> str:
    """Save a seeded 2-layer random Llama (head_dim 64, which vLLM's CPU attention supports)
    with the given tokenizer; fast to start and to run, for plumbing tests. `tied`: the head
    shares the embedding (as SmolLM2's and Qwen2.5-1.5B's do). `extra_vocab`: unused rows
    beyond the tokenizer, e.g. an odd vocabulary that vLLM pads (Qwen's 151,936 style)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + extra_vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Samples vary yet are far from uniform noise: untied, logits of std ~2; tied, where
        # logits are the hidden state against the embedding itself, a larger std makes the
        # model repeat its last token with probability ~1 and the default 0.02 is uniform.
        if tied:
            model.model.embed_tokens.weight.normal_(0, 0.07)
        else:
            model.lm_head.weight.normal_(0, 0.2)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return str(out)


def next_token_logprobs(logits, tokens, temperature: float = 1.0):
    """log p(tokens[:, t+1] | prefix) from logits[:, t], [B, T-1] float32: rrr's kernel
    (rrr.core.grpo.gathered_logprobs) with every position predicting its next token."""
    import torch

    from rrr.core.grpo import gathered_logprobs

    steps = tokens.shape[1] - 1
    index = torch.arange(steps, device=tokens.device).expand(tokens.shape[0], steps)
    return gathered_logprobs(logits[:, :-1], index, tokens[:, 1:], temperature)


def hf_token_logprobs(model_path: str, sequences: list[list[int]], starts: list[int]) -> list:
    """Log-prob of tokens[start:] under transformers (float32), per sequence."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for seq, start in zip(sequences, starts):
            ids = torch.tensor([seq])
            logits = model(ids).logits.float()
            logp = torch.log_softmax(logits[0, :-1], dim=-1)
            taken = logp.gather(-1, ids[0, 1:, None])[:, 0]
            out.append(taken[start - 1 :].tolist())
    return out


def actors_by_state(class_name: str) -> dict[str, list[int]]:
    """Pids of the actors of `class_name`, by state (ALIVE, DEAD, RESTARTING...), from Ray's
    GCS actor table. `ray.util.state.list_actors` says the same but needs the dashboard, which
    the test session's Ray runs without."""
    import ray

    out: dict[str, list[int]] = {}
    for info in ray._private.state.actors().values():
        if info["ActorClassName"] == class_name:
            out.setdefault(info["State"], []).append(int(info.get("Pid") or 0))
    return out


def same_samples(a: list, b: list, *, atol: float = 1e-4) -> bool:
    """Two generate() results sample the same tokens with the same log-probs."""
    if [[s.token_ids for s in g] for g in a] != [[s.token_ids for s in g] for g in b]:
        return False
    pairs = [
        (p, q) for g, h in zip(a, b) for s, t in zip(g, h) for p, q in zip(s.logprobs, t.logprobs)
    ]
    return all(abs(p - q) <= atol for p, q in pairs)


def free_port() -> int:
    """A free TCP port on this machine (for a second Ray head, its agents, its dashboard)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

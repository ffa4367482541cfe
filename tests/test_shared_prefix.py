"""The shared-prefix learner layout (issue 14): each failure's context forwarded once, then its
G reflections under a block attention mask. Pure layout and packing checks, then equivalence
on real weights (SmolLM2-135M, CPU, SDPA and eager attention): the per-token log-probs of the
trained tokens and the parameter gradients of the same loss equal those of one row per episode.
"""

from __future__ import annotations

import pytest
import torch

from rrr.core.config import LearnerConfig
from rrr.core.grpo import policy_loss
from rrr.core.train_batch import TrainBatch, build_train_batch
from rrr.learner.layout import (
    CONTEXT_SEGMENT,
    PAD_SEGMENT,
    block_attention_mask,
    shared_layout,
    shared_row_lengths,
    unshared_layout,
)
from rrr.learner.logprobs import layout_logprobs, shared_prefix_unsupported
from rrr.learner.packing import default_budget, pack_groups, shard_batch, shard_groups
from rrr.learner.worker import LearnerWorker

CPU = torch.device("cpu")
LIMIT = 12  # episode.max_reflection_tokens of the synthetic episodes: a truncated reflection
# float32, different summation orders (batch shapes) on each side: |log p| ~ 10-20 here.
LOGPROB_TOL = {"rtol": 1e-5, "atol": 1e-4}


def _episodes(vocab: int, seed: int = 0):
    """Failure-major groups shaped like rrr.episodes' output, with what makes sharing hard:
    - unequal context lengths (31, 47, 9, 20 tokens) and group sizes (4, 4, 1 = G=1, 3);
    - a reflection truncated at LIMIT tokens, next to short ones (1 and 2 tokens);
    - siblings whose reflections start with the same tokens (the shared context must stop at
      the first trained token anyway);
    - a group whose contexts differ after a common part (episode.rewarded_reflection > 0 puts
      each chain's earlier round in its context): only the common part is shared;
    - retry tokens after some reflections (never trained, never needed).
    G is 4 for group ids; groups 2 and 3 are padded to it with overflowed (empty) episodes,
    which build_train_batch drops, as rrr.episodes' context overflows are.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(n: int) -> list[int]:
        return torch.randint(0, vocab, (n,), generator=g).tolist()

    tokens, spans = [], []

    def add(context: list[int], reflection: list[int], tail: int = 0) -> None:
        tokens.append(context + reflection + rand(tail))
        spans.append((len(context), len(context) + len(reflection)))

    def empty() -> None:
        tokens.append([])
        spans.append((0, 0))

    ctx = rand(31)
    same_start = rand(3)
    add(ctx, same_start + rand(4), tail=5)
    add(ctx, same_start + rand(LIMIT - 3))  # truncated at the limit
    add(ctx, rand(1))  # one token: predicted by the context's last position only
    add(ctx, rand(6), tail=2)
    ctx = rand(47)
    for n in (LIMIT, 2, 9, 5):
        add(ctx, rand(n))
    add(rand(9), rand(7), tail=3)  # G = 1
    empty(), empty(), empty()
    common = rand(20)
    for n in (4, 8, LIMIT):
        add(common + rand(6), rand(n))  # contexts share only their first 20 tokens
    empty()
    logprobs = [(-torch.rand(e - s, generator=g) * 6).tolist() for s, e in spans]
    rewards = [float(i % 3 == 0) for i in range(len(tokens))]
    return tokens, spans, logprobs, rewards


@pytest.fixture(scope="module")
def vocab(smollm2_path) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(smollm2_path).vocab_size


@pytest.fixture(scope="module")
def batch(vocab) -> TrainBatch:
    return build_train_batch(*_episodes(vocab), group_size=4)


# ----------------------------------------------------------------------------- pure layout


def test_block_mask_context_causal_segments_private_pads_self():
    # context of 3, segments of 2 and 1, one pad
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, PAD_SEGMENT]])
    pos = torch.tensor([[0, 1, 2, 3, 4, 3, 0]])
    m = block_attention_mask(seg, pos)[0].int()
    want = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0, 1, 0],  # segment 2 sees the context and itself, not segment 1
            [0, 0, 0, 0, 0, 0, 1],  # a pad only itself: no empty softmax row
        ]
    )
    assert torch.equal(m, want)


def test_shared_layout_has_each_context_once_and_positions_restart(batch):
    lay = shared_layout(batch)
    assert lay.rows == 4  # one row per group
    group0 = (batch.group_ids == 0).nonzero().squeeze(1).tolist()
    seg, pos, ids = lay.segment_ids[0], lay.position_ids[0], lay.input_ids[0]
    context = seg == CONTEXT_SEGMENT
    assert int(context.sum()) == 31
    assert torch.equal(ids[context], batch.tokens[group0[0], :31])
    assert pos[context].tolist() == list(range(31))
    # Contexts end at one column in every row (left pads), so the rows' picks line up.
    ends = [int((lay.segment_ids[r] == CONTEXT_SEGMENT).nonzero()[-1]) for r in range(lay.rows)]
    assert len(set(ends)) == 1
    for s, b in enumerate(group0, start=1):
        at = (seg == s).nonzero().squeeze(1)
        end = int(batch.mask[b].nonzero()[-1, 0])
        # the segment: tokens after the context up to the last trained token's predictor
        assert torch.equal(ids[at], batch.tokens[b, 31 : end + 1])
        assert pos[at].tolist() == list(range(31, end + 1))
    # The group with differing contexts shares exactly their common part.
    assert int((lay.segment_ids[3] == CONTEXT_SEGMENT).sum()) == 20
    # Every trained token is picked once; retry tokens and pads are never forwarded.
    assert int(lay.pick_valid.sum()) == batch.global_num_tokens
    assert lay.forward_tokens < unshared_layout(batch).forward_tokens < batch.num_tokens
    assert lay.forward_tokens == sum(shared_row_lengths(batch).values())


def test_pack_groups_respects_the_budget_and_never_splits_a_group():
    lengths = {0: 100, 1: 90, 2: 40, 3: 35, 4: 300, 5: 10}
    bins = pack_groups(lengths, budget=200)
    assert sorted(g for b in bins for g in b) == sorted(lengths)
    assert bins[0] == [4]  # longer than the budget: alone
    for b in bins:
        assert len(b) == 1 or len(b) * max(lengths[g] for g in b) <= 200
    assert pack_groups(lengths, budget=10**6) == [[4, 0, 1, 2, 3, 5]]


@pytest.mark.parametrize("world,budget", [(1, 50), (1, 10**6), (2, 120), (3, 1)])
def test_group_shards_keep_groups_whole_and_sum_to_the_full_loss(batch, world, budget):
    full_lp = -torch.rand(batch.mask.shape, generator=torch.Generator().manual_seed(1)) * 5
    full, _ = policy_loss(full_lp, batch.old_logprobs, full_lp - 0.1, batch.advantages, batch.mask)
    shards = shard_groups(batch, world, budget)
    assert len({len(s) for s in shards}) == 1  # equal micro-batch counts on every rank
    seen: list[int] = []
    total = torch.zeros(())
    for mb in (mb for rank in shards for mb in rank):
        if mb.size == 0:
            continue
        groups = set(mb.group_ids.tolist())
        seen += groups
        for g in groups:  # whole groups only
            assert int((mb.group_ids == g).sum()) == int((batch.group_ids == g).sum())
        rows = [_row_of(batch, mb, r) for r in range(mb.size)]
        lp = full_lp[rows, : mb.mask.shape[1]]
        loss, _ = policy_loss(
            lp,
            mb.old_logprobs,
            lp - 0.1,
            mb.advantages,
            mb.mask,
            global_num_seqs=mb.global_num_seqs,
            global_num_tokens=mb.global_num_tokens,
        )
        total = total + loss
    assert sorted(seen) == sorted(set(batch.group_ids.tolist()))
    torch.testing.assert_close(total, full, rtol=0, atol=1e-6)


def _row_of(full: TrainBatch, mb: TrainBatch, r: int) -> int:
    length = mb.tokens.shape[1]
    for i in range(full.size):
        if torch.equal(full.tokens[i, :length], mb.tokens[r]) and torch.equal(
            full.mask[i, : length - 1], mb.mask[r]
        ):
            return i
    raise AssertionError("row not found")


def test_default_budget_is_an_unshared_micro_batch(batch):
    assert default_budget(batch, 4) == 4 * int(batch.attention_mask.sum(1).max())


def test_flash_attention_and_sliding_windows_fall_back():
    class Stub(torch.nn.Module):
        def __init__(self, **config) -> None:
            super().__init__()
            self.config = type("Config", (), config)()

    assert shared_prefix_unsupported(Stub(_attn_implementation="sdpa")) is None
    assert shared_prefix_unsupported(Stub(_attn_implementation="eager")) is None
    assert "4D mask" in shared_prefix_unsupported(Stub(_attn_implementation="flash_attention_2"))
    sliding = Stub(_attn_implementation="sdpa", layer_types=["full_attention", "sliding_attention"])
    assert "sliding" in shared_prefix_unsupported(sliding)
    qwen_like = Stub(_attn_implementation="sdpa", sliding_window=4096, use_sliding_window=False)
    assert shared_prefix_unsupported(qwen_like) is None


# ----------------------------------------------------------------------------- real weights


def _alone(model: torch.nn.Module, batch: TrainBatch) -> torch.Tensor:
    """The plainest reference: every episode forwarded by itself (no padding, no batch)."""
    out = torch.zeros(batch.mask.shape)
    for b in range(batch.size):
        row = layout_logprobs(model, unshared_layout(batch.select([b])), device=CPU)[0]
        out[b, : row.shape[0]] = row  # select() trims the row to its own length
    return out


@pytest.mark.model  # loads SmolLM2-135M's weights itself
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_log_probs_equal_one_row_per_episode(smollm2_path, batch, attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        smollm2_path, dtype=torch.float32, attn_implementation=attention
    ).eval()
    with torch.no_grad():
        want = _alone(model, batch)
        unshared = layout_logprobs(model, unshared_layout(batch), device=CPU)
        shared = layout_logprobs(model, shared_layout(batch), device=CPU)
    m = batch.mask
    assert want[m].abs().min() > 0  # every trained token was scored
    torch.testing.assert_close(unshared[m], want[m], **LOGPROB_TOL)
    torch.testing.assert_close(shared[m], want[m], **LOGPROB_TOL)
    assert (shared[~m] == 0).all()
    # Per micro-batch of whole groups as well (the packing the learner group does).
    for mb in shard_groups(batch, 1, budget=100)[0]:
        got = layout_logprobs(model, shared_layout(mb), device=CPU)
        rows = [_row_of(batch, mb, r) for r in range(mb.size)]
        width = mb.mask.shape[1]
        torch.testing.assert_close(got[mb.mask], want[rows, :width][mb.mask], **LOGPROB_TOL)


def _step_grads(model_path: str, micro_batches: list[TrainBatch], **cfg) -> tuple[dict, dict]:
    """One real learner step; the parameter gradients just before the optimizer uses them."""
    base = dict(lr=1e-5, lr_scheduler="constant", warmup_ratio=0.0, kl_coef=0.05, max_steps=10)
    worker = LearnerWorker(model_path, LearnerConfig(**(base | cfg)), temperature=0.8)
    grads: dict[str, torch.Tensor] = {}
    original = worker.engine.step

    def capture():
        for name, p in worker.engine.module.named_parameters():
            grads[name] = p.grad.clone()
        return original()

    worker.engine.step = capture
    try:
        metrics = worker.step(micro_batches)
    finally:
        # capture() refers to the worker that holds it: a cycle that kept each 135M model, its
        # reference and optimizer state (~2.7 GB) alive past the test until a full collection.
        del worker.engine.step
    return metrics, grads


@pytest.mark.model  # loads SmolLM2-135M's weights itself
def test_shared_gradients_equal_one_row_per_episode(smollm2_path, batch):
    """Same loss (clipped ratio vs sampler log-probs + k3 KL to the reference), same gradients,
    with gradient checkpointing on (the default) and micro-batches of whole groups."""
    # Advantages of both signs and a visible KL: the reference forward is in the loss.
    unshared, g_unshared = _step_grads(
        smollm2_path, shard_batch(batch, 1, 3)[0], shared_prefix=False
    )
    shared, g_shared = _step_grads(
        smollm2_path, shard_groups(batch, 1, budget=120)[0], shared_prefix=True
    )
    assert shared["forward_tokens"] < unshared["forward_tokens"]
    assert shared["loss"] == pytest.approx(unshared["loss"], rel=1e-5, abs=1e-7)
    assert shared["num_tokens"] == unshared["num_tokens"] == batch.global_num_tokens
    assert shared["grad_norm"] == pytest.approx(unshared["grad_norm"], rel=1e-4)
    scale = max(g.abs().max().item() for g in g_unshared.values())
    for name, g in g_unshared.items():
        torch.testing.assert_close(g_shared[name], g, rtol=1e-3, atol=1e-5 * scale, msg=name)


@pytest.mark.slow
def test_deepspeed_engine_takes_the_shared_layout(tiny_model_path, batch):
    """DeepSpeed ZeRO-2 (CPU) on the shared layout: the loss and gradient norm of the torch
    engine on one row per episode (the grouped micro-batches are a collective-safe shape: equal
    counts on every rank)."""
    pytest.importorskip("deepspeed")
    cfg = dict(gradient_checkpointing=False, micro_batch_size=3)
    want, _ = _step_grads(tiny_model_path, shard_batch(batch, 1, 3)[0], shared_prefix=False, **cfg)
    ds = LearnerWorker(
        tiny_model_path,
        LearnerConfig(
            lr=1e-5, lr_scheduler="constant", warmup_ratio=0.0, kl_coef=0.05, max_steps=10,
            backend="deepspeed", zero_stage=2, shared_prefix=True, **cfg,
        ),
        temperature=0.8,
    )  # fmt: skip
    assert ds.backend == "deepspeed" and ds.shared_prefix
    got = ds.step(shard_groups(batch, 1, budget=120)[0])
    assert got["forward_tokens"] < want["forward_tokens"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-7)
    assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)


@pytest.mark.model  # loads SmolLM2-135M's weights itself
@pytest.mark.gpu
def test_shared_layout_on_gpu_bf16_sdpa(smollm2_path, batch):
    """The GPU path: bf16 autocast over SDPA's memory-efficient CUDA kernel (forced: it takes
    the 4D block mask; flash does not and is never picked with a mask) gives the unshared
    layout's log-probs and gradients; the peak memory of each layout is printed (gpu-check.sh
    puts it in its summary)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import AutoModelForCausalLM

    cuda = torch.device("cuda")
    model = AutoModelForCausalLM.from_pretrained(
        smollm2_path, dtype=torch.float32, attn_implementation="sdpa"
    ).to(cuda)
    assert shared_prefix_unsupported(model) is None
    m = batch.mask.to(cuda)
    kw = {"device": cuda, "autocast": torch.bfloat16}
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION), torch.no_grad():
        unshared = layout_logprobs(model, unshared_layout(batch), **kw)
        shared = layout_logprobs(model, shared_layout(batch), **kw)
    # bf16 activations: a few 1e-2 of absolute log-prob noise between batch shapes.
    torch.testing.assert_close(shared[m], unshared[m], rtol=2e-2, atol=1e-1)
    grads, peaks = [], {}
    for make in (unshared_layout, shared_layout):
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            lp = layout_logprobs(model, make(batch), **kw)
            old, adv = batch.old_logprobs.to(cuda), batch.advantages.to(cuda)
            loss, _ = policy_loss(lp, old, None, adv, m, kl_coef=0.0)
            loss.backward()
        peaks[make.__name__] = (torch.cuda.max_memory_allocated() - base) / 2**20
        grads.append(torch.cat([p.grad.flatten().float() for p in model.parameters()]))
    print("shared-prefix peak memory above the weights (MiB): "
          + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))  # fmt: skip
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cos > 0.999, cos

"""The learner: batch building and sharding (pure), one real GRPO step on the tiny model against
the rrr.core.grpo formula, mask isolation, a real learning curve, and a 2-rank gloo group over
Ray."""

from __future__ import annotations

import pytest
import torch

from rrr.core.config import LearnerConfig, LoraConfig
from rrr.core.cpus import usable_cpus
from rrr.core.grpo import group_advantages, policy_loss, spans_to_mask
from rrr.core.train_batch import TrainBatch, build_train_batch
from rrr.learner.packing import shard_batch
from rrr.learner.worker import LearnerWorker
from tests.helpers import next_token_logprobs


def _cfg(**kw) -> LearnerConfig:
    base = dict(
        lr=1e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_steps=100,
        gradient_checkpointing=False,
        micro_batch_size=3,
        kl_coef=0.001,
        seed=0,
    )
    base.update(kw)
    return LearnerConfig(**base)


def _episodes(n: int = 8, seed: int = 0, tail: int = 0, vocab: int = 2000):
    """n episodes (G=4): random context + a reflection span, `tail` extra tokens after it."""
    g = torch.Generator().manual_seed(seed)
    tokens, spans, logprobs, rewards = [], [], [], []
    for i in range(n):
        ctx, refl = 10 + 3 * (i % 3), 4 + (i % 4)
        seq = torch.randint(0, vocab, (ctx + refl + tail,), generator=g).tolist()
        tokens.append(seq)
        spans.append((ctx, ctx + refl))
        logprobs.append((-torch.rand(refl, generator=g) * 8 - 2).tolist())
        rewards.append(float((i * 7 + seed) % 3 == 0))
    return tokens, spans, logprobs, rewards


# ----------------------------------------------------------------------------- pure batching


def test_learner_threads_use_the_cores_that_nothing_else_uses():
    """learner.cpu_threads: 0 shares the node's cores among the ranks while the rollout waits
    for the step; one step off, a rank keeps to the CPUs it reserved; a number is taken as is."""
    from rrr.learner.distributed import cpu_threads

    assert cpu_threads(0, share_cores=True, reserved=1.0, ranks=1, cores=2) == 2
    assert cpu_threads(0, share_cores=True, reserved=1.0, ranks=2, cores=2) == 1
    assert cpu_threads(0, share_cores=True, reserved=1.0, ranks=4, cores=2) == 1
    assert cpu_threads(0, share_cores=False, reserved=1.0, ranks=1, cores=16) == 1
    assert cpu_threads(0, share_cores=False, reserved=4.0, ranks=1, cores=16) == 4
    assert cpu_threads(3, share_cores=True, reserved=1.0, ranks=1, cores=16) == 3


def test_batch_places_mask_and_old_logprobs_on_the_span_columns():
    tokens, spans, logprobs, rewards = _episodes()
    b = build_train_batch(tokens, spans, logprobs, rewards, group_size=4, pad_id=7)
    assert b.tokens.shape == (8, max(map(len, tokens)))
    assert torch.equal(b.mask, spans_to_mask([[s] for s in spans], b.tokens.shape[1]))
    for row, ((s, e), lp) in enumerate(zip(spans, logprobs)):
        assert torch.allclose(b.old_logprobs[row, s - 1 : e - 1], torch.tensor(lp))
        assert b.old_logprobs[row][~b.mask[row]].abs().sum() == 0
        assert (b.tokens[row, len(tokens[row]) :] == 7).all()
    want = group_advantages(torch.tensor(rewards), 4).advantages
    assert torch.allclose(b.advantages, want)
    assert b.global_num_tokens == sum(e - s for s, e in spans) == int(b.mask.sum())


def test_overflowed_episode_is_dropped_but_counts_in_its_group():
    tokens, spans, logprobs, rewards = _episodes()
    tokens[1], spans[1], logprobs[1], rewards[1] = [], (0, 0), [], 0.0  # context overflow
    b = build_train_batch(tokens, spans, logprobs, rewards, group_size=4)
    assert b.size == 7 and b.metrics["dropped_seqs"] == 1
    full = group_advantages(torch.tensor(rewards), 4).advantages
    assert torch.allclose(b.advantages, torch.cat([full[:1], full[2:]]))


def test_drop_zero_std_groups_removes_whole_groups():
    tokens, spans, logprobs, _ = _episodes()
    rewards = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    b = build_train_batch(tokens, spans, logprobs, rewards, 4, drop_zero_std_groups=True)
    assert b.size == 4 and b.metrics["frac_zero_std"] == 0.5
    assert torch.equal(b.tokens[0, : len(tokens[4])], torch.tensor(tokens[4]))


def test_shards_sum_to_the_full_batch_loss():
    tokens, spans, logprobs, rewards = _episodes(n=12)
    b = build_train_batch(tokens, spans, logprobs, rewards, 4)
    lp = -torch.rand(b.mask.shape, generator=torch.Generator().manual_seed(1)) * 5
    full, _ = policy_loss(lp, b.old_logprobs, lp - 0.1, b.advantages, b.mask)
    for world, mbs in [(1, 5), (2, 2), (3, 4), (5, 1)]:
        shards = shard_batch(b, world, mbs)
        assert len({len(s) for s in shards}) == 1  # equal micro-batch counts on every rank
        total = torch.zeros(())
        rows = 0
        for rank in shards:
            for mb in rank:
                rows += mb.size
                if mb.size == 0:
                    continue
                assert mb.size <= mbs and mb.global_num_seqs == b.global_num_seqs
                # recompute this micro-batch's log-probs from the full-batch ones, by content
                idx = [_row_of(b, mb, r) for r in range(mb.size)]
                sub = lp[idx, : mb.mask.shape[1]]
                loss, _ = policy_loss(
                    sub,
                    mb.old_logprobs,
                    sub - 0.1,
                    mb.advantages,
                    mb.mask,
                    global_num_seqs=mb.global_num_seqs,
                    global_num_tokens=mb.global_num_tokens,
                )
                total = total + loss
        assert rows == b.size
        assert torch.allclose(total, full, atol=1e-6), (world, mbs)


def _row_of(full: TrainBatch, mb: TrainBatch, r: int) -> int:
    length = mb.tokens.shape[1]
    for i in range(full.size):
        if torch.equal(full.tokens[i, :length], mb.tokens[r]) and torch.equal(
            full.attention_mask[i, :length], mb.attention_mask[r]
        ):
            return i
    raise AssertionError("row not found")


# ----------------------------------------------------------------------------- real steps


@pytest.fixture(scope="module")
def fixed_batch(tiny_model_path) -> TrainBatch:
    tokens, spans, logprobs, rewards = _episodes(n=8, tail=0)
    return build_train_batch(tokens, spans, logprobs, rewards, 4)


def test_step_loss_equals_the_grpo_formula_and_moves_weights(tiny_model_path, fixed_batch):
    from transformers import AutoModelForCausalLM

    b = fixed_batch
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    with torch.no_grad():
        lp = next_token_logprobs(ref(b.tokens).logits, b.tokens)
    # Independent recomputation: full-vocab logits, one batch, no micro-batching; the
    # reference is the initial policy itself.
    want, want_m = policy_loss(lp, b.old_logprobs, lp, b.advantages, b.mask, kl_coef=0.001)

    worker = LearnerWorker(tiny_model_path, _cfg())
    before = {k: v.clone() for k, v in worker.engine.module.state_dict().items()}
    got = worker.step(shard_batch(b, 1, 3)[0])
    assert got["loss"] == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    assert got["clip_frac"] == pytest.approx(want_m["clip_frac"], abs=1e-6)
    assert got["kl"] == pytest.approx(0.0, abs=1e-7)  # policy == reference at step 0
    assert got["num_tokens"] == b.global_num_tokens and got["grad_norm"] > 0
    after = worker.engine.module.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) == len(before)
    assert worker.step(shard_batch(b, 1, 3)[0])["kl"] > 0  # now it has drifted from the reference


def _grads_of_one_step(model_path: str, batch: TrainBatch, **cfg) -> tuple[float, dict]:
    """The loss and every gradient of one step (the parameters that have one)."""
    worker = LearnerWorker(model_path, _cfg(**cfg))
    captured: dict[str, torch.Tensor] = {}
    original = worker.engine.step

    def capture():
        for name, p in worker.engine.module.named_parameters():
            if p.grad is not None:
                captured[name] = p.grad.clone()
        return original()

    worker.engine.step = capture
    try:
        return worker.step(shard_batch(batch, 1, 3)[0])["loss"], captured
    finally:
        del worker.engine.step  # capture() refers to the worker: no cycle keeps it alive


@pytest.mark.parametrize("lora", [0, 4], ids=["full", "lora"])
def test_tokens_outside_the_mask_do_not_change_loss_or_gradients(tiny_model_path, lora):
    """The trained span is the reflection alone, with full weights and with a LoRA adapter
    (whose gradients are then the only ones)."""
    tokens, spans, logprobs, rewards = _episodes(n=8, tail=5)
    a = build_train_batch(tokens, spans, logprobs, rewards, 4, pad_id=0)
    g = torch.Generator().manual_seed(9)
    changed = [
        seq[:e] + torch.randint(0, 2000, (len(seq) - e,), generator=g).tolist()
        for seq, (_, e) in zip(tokens, spans)
    ]
    b = build_train_batch(changed, spans, logprobs, rewards, 4, pad_id=5)
    assert not torch.equal(a.tokens, b.tokens)
    adapter = LoraConfig(rank=lora, alpha=8.0)
    loss_a, grads_a = _grads_of_one_step(tiny_model_path, a, lora=adapter)
    loss_b, grads_b = _grads_of_one_step(tiny_model_path, b, lora=adapter)
    assert loss_a == loss_b and set(grads_a) == set(grads_b)
    assert all((".lora_" in n) == bool(lora) for n in grads_a)  # LoRA: the adapter's alone
    assert any(g.abs().sum() > 0 for g in grads_a.values())
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-9, rtol=0), name


STEPS = 8


def test_grpo_learns_a_synthetic_reflection_reward(tiny_model_path):
    """reward 1 iff a sampled 'reflection' contains a token from a small target set; a few
    dozen real GRPO steps (sampled from the learner's own policy) raise the mean reward."""
    torch.manual_seed(0)
    worker = LearnerWorker(tiny_model_path, _cfg(lr=1e-3, kl_coef=0.0, micro_batch_size=64))
    model = worker.engine.module
    prompt = torch.tensor([[1, 42, 77, 1337, 9]])
    groups, G, length = 4, 8, 4

    @torch.no_grad()
    def sample(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = prompt.repeat(n, 1)
        lps = []
        for _ in range(length):
            logits = model(seqs, logits_to_keep=1).logits[:, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            nxt = torch.multinomial(logp.exp(), 1, generator=gen)
            lps.append(logp.gather(1, nxt))
            seqs = torch.cat([seqs, nxt], dim=1)
        return seqs, torch.cat(lps, dim=1)

    with torch.no_grad():  # target: tokens ranked 2..k at the first position, ~15 % mass
        p0 = torch.softmax(model(prompt).logits[0, -1].float(), dim=-1)
    ranked = p0.argsort(descending=True)
    mass = p0[ranked].cumsum(0) - p0[ranked[0]]
    target = set(ranked[1 : int((mass < 0.15).sum()) + 2].tolist())

    def reward(seqs: torch.Tensor) -> list[float]:
        return [float(any(t in target for t in row[prompt.shape[1] :].tolist())) for row in seqs]

    gen = torch.Generator().manual_seed(1)
    curve = []
    for _ in range(STEPS):
        seqs, lps = sample(groups * G, gen)
        r = reward(seqs)
        curve.append(sum(r) / len(r))
        start = prompt.shape[1]
        batch = build_train_batch(
            seqs.tolist(), [(start, start + length)] * len(r), lps.tolist(), r, G
        )
        worker.step(shard_batch(batch, 1, 64)[0])
    first, last = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    assert last > first + 0.25, curve


# ----------------------------------------------------------------------------- Ray group


@pytest.mark.slow
def test_two_rank_gloo_group_steps_and_resumes_bit_identically(
    ray_local, tiny_model_path, tmp_path
):
    """2 ranks over gloo: weights stay identical; save -> kill both actors -> a new group
    resumes and its next step's loss equals the uninterrupted run's bit for bit."""
    from rrr.learner.group import LearnerGroup

    cfg = _cfg(num_learners=2, micro_batch_size=2)
    b1 = build_train_batch(*_episodes(n=8, seed=1), 4)
    b2 = build_train_batch(*_episodes(n=8, seed=2), 4)
    group = LearnerGroup(cfg, tiny_model_path)
    try:
        m1 = group.step(b1)
        assert m1["learner/seqs"] == 8 and m1["learner/num_tokens"] == b1.global_num_tokens
        # Gradients are SUMMED over ranks (global normalisers): same step as one rank alone.
        alone = LearnerWorker(tiny_model_path, _cfg(micro_batch_size=8)).step(
            shard_batch(b1, 1, 8)[0]
        )
        assert m1["learner/loss"] == pytest.approx(alone["loss"], rel=1e-5)
        assert m1["learner/grad_norm"] == pytest.approx(alone["grad_norm"], rel=1e-4)
        w0, w1 = ray_local.get([a.state_dict_cpu.remote() for a in group.actors])
        assert w0.keys() == w1.keys()
        assert all(torch.equal(w0[k], w1[k]) for k in w0)
        ckpt = group.save_checkpoint(tmp_path / "ckpt", 1, {"cursor": 8})
        want = group.step(b2)
    finally:
        group.shutdown()
    resumed = LearnerGroup(cfg, tiny_model_path)
    try:
        state = resumed.load_checkpoint(tmp_path / "ckpt")
        assert state["step"] == 1 and state["extra_state"] == {"cursor": 8}
        assert state["backend"] == "torch" and ckpt.name == "step_00000001"
        got = resumed.step(b2)
    finally:
        resumed.shutdown()
    assert got["learner/loss"] == want["learner/loss"]
    assert got["learner/grad_norm"] == want["learner/grad_norm"]


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_two_deepspeed_ranks_equal_one_on_the_same_global_batch(ray_local, tiny_model_path,
                                                                zero_stage):  # fmt: skip
    """L=2 (DeepSpeed ZeRO-2 / ZeRO-3 over gloo) and L=1 take the same step on the same global
    batch: equal loss and grad norm, and equal updated weights (gathered through the manifest,
    every rank taking part)."""
    from rrr.learner.group import LearnerGroup

    batch = build_train_batch(*_episodes(n=8, seed=3), 4)
    results = {}
    for ranks in (1, 2):
        group = LearnerGroup(
            _cfg(backend="deepspeed", zero_stage=zero_stage, num_learners=ranks,
                 micro_batch_size=2, lr=1e-2), tiny_model_path,
        )  # fmt: skip
        try:
            # Nothing runs beside these ranks: they share the machine's cores (a rank reserves
            # one CPU, which Ray alone would turn into one torch thread).
            assert group.cpu_threads == [max(1, len(usable_cpus()) // ranks)] * ranks
            metrics = group.step(batch)
            results[ranks] = (metrics, group.state_dict())
        finally:
            group.shutdown()
    (m1, w1), (m2, w2) = results[1], results[2]
    assert m2["learner/loss"] == pytest.approx(m1["learner/loss"], rel=1e-5)
    assert m2["learner/grad_norm"] == pytest.approx(m1["learner/grad_norm"], rel=1e-4)
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-6, rtol=1e-5), k
    base = LearnerWorker(tiny_model_path, _cfg()).state_dict_cpu()
    moved = sum(not torch.equal(base[k], w1[k]) for k in w1)
    assert moved > len(w1) // 2  # the step really changed the weights being compared


@pytest.mark.slow
@pytest.mark.parametrize("offload", [False, True], ids=["on-device", "offload_optimizer"])
def test_deepspeed_zero2_on_cpu_matches_the_torch_engine_and_resumes(
    tiny_model_path, tmp_path, offload
):
    """DeepSpeed runs on this CPU (ZeRO-2; its first start JIT-builds a comm op): same losses
    and grad norms as the plain torch engine, and a bit-identical resume. The optimizer is
    torch's fused AdamW, offloaded or not (configs/single-gpu.yaml offloads): DeepSpeed's own
    Adam ops would need a compiler at first use (learner/engines.py)."""
    pytest.importorskip("deepspeed")
    from rrr.learner import checkpoint as ckpt

    batches = [build_train_batch(*_episodes(n=8, seed=s), 4) for s in range(3)]
    torch_run = LearnerWorker(tiny_model_path, _cfg())
    want = [torch_run.step(shard_batch(b, 1, 3)[0]) for b in batches]
    cfg = _cfg(backend="deepspeed", zero_stage=2, offload_optimizer=offload)
    ds = LearnerWorker(tiny_model_path, cfg)
    assert ds.backend == "deepspeed"
    engine = ds.engine.engine
    assert engine.zero_cpu_offload() is offload
    assert type(engine.basic_optimizer) is torch.optim.AdamW
    assert engine.basic_optimizer.defaults["fused"] is True
    got = [ds.step(shard_batch(b, 1, 3)[0]) for b in batches[:2]]
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-5, abs=1e-7)
        assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=1e-4)
    path = ckpt.write_checkpoint(tmp_path, 2, ds.save_state, meta={"backend": "deepspeed"})
    after = ds.step(shard_batch(batches[2], 1, 3)[0])
    del ds
    resumed = LearnerWorker(tiny_model_path, cfg)
    assert resumed.load_state(str(path)) == 2
    again = resumed.step(shard_batch(batches[2], 1, 3)[0])
    assert again["loss"] == after["loss"] and again["grad_norm"] == after["grad_norm"]
    assert (path / "policy" / "config.json").is_file()


# ----------------------------------------------------------------------------- old log-probs


@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.3])
def test_learner_scores_at_the_sampling_temperature(tiny_model_path, fixed_batch, temperature):
    """log softmax(logits / T) at every trained token, T the reflections' sampling temperature
    (what vLLM's processed log-probs are; issue 15)."""
    from transformers import AutoModelForCausalLM

    b = fixed_batch
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(b.tokens).logits
    want = torch.log_softmax(logits[:, :-1] / temperature, dim=-1)
    want = want.gather(-1, b.tokens[:, 1:, None]).squeeze(-1)
    worker = LearnerWorker(tiny_model_path, _cfg(kl_coef=0.0), temperature=temperature)
    got = worker.logprobs(b)
    torch.testing.assert_close(got[b.mask], want[b.mask], rtol=1e-5, atol=1e-5)
    assert (got[~b.mask] == 0).all()
    if temperature != 1.0:  # the test can tell the temperatures apart
        plain = torch.log_softmax(logits[:, :-1], -1).gather(-1, b.tokens[:, 1:, None])[..., 0]
        assert (got[b.mask] - plain[b.mask]).abs().max() > 1e-2


def test_old_logprobs_current_means_ratio_one(tiny_model_path, fixed_batch):
    """old_logprobs='current': old = the policy's own log-probs, detached, whatever the batch's
    sampler log-probs say; 'sampler' uses them (here far off: the ratio is not 1)."""
    b = fixed_batch
    current = LearnerWorker(tiny_model_path, _cfg(old_logprobs="current")).step([b])
    assert current["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and current["clip_frac"] == 0
    sampler = LearnerWorker(tiny_model_path, _cfg(old_logprobs="sampler")).step([b])
    assert abs(sampler["ratio_mean"] - 1.0) > 1e-2


def test_the_misnamed_recompute_key_fails_with_its_new_name():
    from rrr.core.config import ConfigError, load_config

    for value in ("true", "false"):
        with pytest.raises(ConfigError, match=r"renamed to learner\.old_logprobs"):
            load_config(None, [f"learner.recompute_old_logprobs={value}"])
    assert load_config(None, ["learner.old_logprobs=current"]).learner.old_logprobs == "current"


@pytest.mark.slow
def test_zero3_reference_is_partitioned_where_offload_reference_says(tiny_model_path, monkeypatch):
    """Under ZeRO-3, transformers partitions each loaded model with the config it holds at load
    time: the reference must be loaded under its own (offload_param: cpu), or it lands on the
    GPU beside the policy and `learner.offload_reference` does nothing. Every zero.Init records
    where it puts partitions; the policy's stay on the device, the reference's go to CPU
    memory; a step with the KL term then runs through the offloaded reference."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.zero.partition_parameters import Init

    offloaded: list[bool] = []
    real_init = Init.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        # The partitions' home: the local torch.device, or an offload target (cpu / nvme).
        offloaded.append(not isinstance(self.remote_device, torch.device))

    monkeypatch.setattr(Init, "__init__", recording_init)
    worker = LearnerWorker(tiny_model_path, _cfg(backend="deepspeed", zero_stage=3,
                                                  offload_reference=True, kl_coef=0.1))  # fmt: skip
    assert offloaded[:2] == [False, True], offloaded  # policy, then the reference
    from deepspeed.comm import comm

    # learner.cpu_shm_comm=false (the default): DeepSpeed's comm runs on torch.distributed,
    # without compiling its shared-memory op.
    assert comm.cdb is not None and comm.cdb.shm_comm_op is None
    first = worker.step(shard_batch(build_train_batch(*_episodes(n=8, seed=1), 4), 1, 3)[0])
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy is still the reference
    second = worker.step(shard_batch(build_train_batch(*_episodes(n=8, seed=2), 4), 1, 3)[0])
    assert second["kl"] > 1e-6  # the moved policy against the offloaded reference

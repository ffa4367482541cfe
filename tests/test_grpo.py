"""Tests for rrr.core.grpo: every formula is checked against a plain-Python loop
re-implementation."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from rrr.core.grpo import (
    LOSS_AGGREGATIONS,
    group_advantages,
    mask_stats,
    masked_mean,
    policy_loss,
    spans_to_mask,
)
from tests.helpers import next_token_logprobs

AGGS = sorted(LOSS_AGGREGATIONS)

# ----------------------------------------------------------------------------------------------
# group_advantages
# ----------------------------------------------------------------------------------------------


def loop_advantages(rewards: list[float], g: int, scale: bool, eps: float) -> list[float]:
    out: list[float] = []
    for i in range(0, len(rewards), g):
        grp = rewards[i : i + g]
        mu = statistics.mean(grp)
        if len(set(grp)) == 1:
            out += [0.0] * g
            continue
        sd = statistics.stdev(grp)  # unbiased, as TRL / torch.std
        out += [(r - mu) / (sd + eps) if scale else r - mu for r in grp]
    return out


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("g", [1, 2, 4, 8])
def test_group_advantages_matches_loop(binary: bool, scale: bool, g: int) -> None:
    gen = torch.Generator().manual_seed(g * 10 + binary)
    n_groups = 16
    if binary:
        r = (torch.rand(n_groups * g, generator=gen) < 0.4).float()
    else:
        r = torch.randn(n_groups * g, generator=gen)
    out = group_advantages(r, g, scale_by_std=scale, eps=1e-6)
    want = loop_advantages(r.tolist(), g, scale, 1e-6)
    assert out.advantages.shape == r.shape
    torch.testing.assert_close(out.advantages, torch.tensor(want), rtol=1e-5, atol=1e-5)
    groups = [r.tolist()[i : i + g] for i in range(0, len(r), g)]
    n_equal = sum(len(set(x)) == 1 for x in groups)
    assert out.frac_zero_std == pytest.approx(n_equal / n_groups)
    assert out.reward_mean == pytest.approx(statistics.mean(r.tolist()), abs=1e-6)
    assert out.reward_std == pytest.approx(statistics.pstdev(r.tolist()), abs=1e-6)
    assert out.keep.all()


def test_zero_std_groups_are_exactly_zero_and_counted() -> None:
    # In float32 mean([x, x, x]) != x for this x: the forced zero must leave no rounding residue
    # (which the std division by ~eps would blow up to ~1e-2).
    x = 0.4900934100151062
    assert (torch.tensor([x] * 3) - torch.tensor([x] * 3).mean() != 0).any()
    r = torch.tensor([x, x, x, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    out = group_advantages(r, 3)
    assert (out.advantages[0:3] == 0).all()
    assert (out.advantages[6:12] == 0).all()
    assert (out.advantages[3:6] != 0).all()
    assert out.frac_zero_std == pytest.approx(3 / 4)
    dropped = group_advantages(r, 3, drop_zero_std=True)
    assert dropped.keep.tolist() == [False] * 3 + [True] * 3 + [False] * 6
    torch.testing.assert_close(dropped.advantages, out.advantages)


def test_group_advantages_std_convention_is_unbiased() -> None:
    out = group_advantages(torch.tensor([1.0, 0.0]), 2, eps=0.0)
    # unbiased std of {1, 0} is sqrt(0.5); population std would give exactly +-1.
    torch.testing.assert_close(out.advantages, torch.tensor([0.5, -0.5]) / math.sqrt(0.5))


@pytest.mark.parametrize(
    ("rewards", "g"),
    [
        (torch.zeros(2, 3), 3),  # not 1-D
        (torch.zeros(7), 3),  # not divisible
        (torch.zeros(6), 0),  # group_size < 1
        (torch.zeros(0), 2),  # empty
        (torch.tensor([1.0, float("nan")]), 2),  # non-finite
    ],
)
def test_group_advantages_bad_inputs(rewards: torch.Tensor, g: int) -> None:
    with pytest.raises(ValueError):
        group_advantages(rewards, g)


# ----------------------------------------------------------------------------------------------
# masks
# ----------------------------------------------------------------------------------------------

SPANS = [[(2, 4)], [], [(1, 2), (4, 5)], [(1, 3), (2, 4)]]


def test_spans_to_mask_shifted() -> None:
    m = spans_to_mask(SPANS, 5)
    assert m.dtype == torch.bool
    assert m.tolist() == [
        [False, True, True, False],  # tokens 2, 3 -> targets at columns 1, 2
        [False, False, False, False],
        [True, False, False, True],  # tokens 1, 4
        [True, True, True, False],  # overlapping spans are unioned: tokens 1..3
    ]


def test_spans_to_mask_unshifted() -> None:
    m = spans_to_mask(SPANS, 5, shift=False)
    assert m.tolist() == [
        [False, False, True, True, False],
        [False, False, False, False, False],
        [False, True, False, False, True],
        [False, True, True, True, False],
    ]
    assert torch.equal(spans_to_mask(SPANS, 5), m[:, 1:])
    assert spans_to_mask([[(0, 2)]], 3, shift=False).tolist() == [[True, True, False]]


def test_mask_selects_span_tokens_as_logprob_targets() -> None:
    # The point of the shift: the targets picked out by the mask are exactly the span's tokens.
    tokens = torch.tensor([[10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26]])
    spans = [[(2, 5)], [(1, 2), (6, 7)]]
    m = spans_to_mask(spans, tokens.shape[1])
    targets = tokens[:, 1:]
    assert targets[0][m[0]].tolist() == [12, 13, 14]
    assert targets[1][m[1]].tolist() == [21, 26]
    logits = torch.randn(2, 7, 30)
    assert next_token_logprobs(logits, tokens).shape == m.shape


@pytest.mark.parametrize(
    ("span", "shift"),
    [((3, 3), True), ((4, 2), True), ((-1, 2), False), ((2, 6), True), ((0, 2), True)],
)
def test_spans_to_mask_bad_spans(span: tuple[int, int], shift: bool) -> None:
    with pytest.raises(ValueError):
        spans_to_mask([[(1, 2)], [span]], 5, shift=shift)


def test_mask_stats_and_masked_mean() -> None:
    m = spans_to_mask(SPANS, 5)
    s = mask_stats(m)
    assert s == {
        "num_rows": 4,
        "num_seqs": 3,
        "num_tokens": 7,
        "tokens_per_seq_mean": pytest.approx(7 / 3),
        "tokens_per_seq_max": 3,
    }
    x = torch.arange(16.0).view(4, 4)
    x[~m] = float("nan")  # garbage outside the mask must be ignored
    assert masked_mean(x, m).item() == pytest.approx((1 + 2 + 8 + 11 + 12 + 13 + 14) / 7)
    assert masked_mean(x, m, dim=-1).tolist() == pytest.approx([1.5, 0.0, 9.5, 13.0])


# ----------------------------------------------------------------------------------------------
# policy_loss
# ----------------------------------------------------------------------------------------------


def loop_loss(
    lp: list[list[float]],
    old: list[list[float]],
    ref: list[list[float]],
    adv: list[float],
    mask: list[list[bool]],
    eps_lo: float,
    eps_hi: float,
    beta: float,
    agg: str,
    max_norm: int | None,
) -> float:
    sums, counts = [], []
    for b in range(len(lp)):
        s, n = 0.0, 0
        for t in range(len(lp[b])):
            if not mask[b][t]:
                continue
            r = math.exp(lp[b][t] - old[b][t])
            r_clip = min(max(r, 1 - eps_lo), 1 + eps_hi)
            pg = -min(r * adv[b], r_clip * adv[b])
            d = ref[b][t] - lp[b][t]
            kl = math.exp(d) - d - 1
            s += pg + beta * kl
            n += 1
        sums.append(s)
        counts.append(n)
    nonempty = [b for b in range(len(lp)) if counts[b] > 0]
    if agg == "seq_mean_token_mean":
        return sum(sums[b] / counts[b] for b in nonempty) / len(nonempty)
    if agg == "token_mean":
        return sum(sums) / sum(counts)
    assert max_norm is not None
    return sum(sums[b] / max_norm for b in nonempty) / len(nonempty)


def make_batch(seed: int = 0, b: int = 6, t: int = 9) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lp = -3 * torch.rand(b, t, generator=gen, dtype=torch.float64)
    old = lp + 0.5 * torch.randn(b, t, generator=gen, dtype=torch.float64)  # ratios ~ e^+-0.5
    ref = lp + 0.3 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    adv = torch.randn(b, generator=gen, dtype=torch.float64)
    lengths = [t, 5, 0, 3, 7, 1][:b]  # different lengths, one all-false row
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if n:
            mask[i, t - n - (i % 2) : t - (i % 2)] = True
    return {"lp": lp, "old": old, "ref": ref, "adv": adv, "mask": mask}


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("eps_high", [None, 0.28])
def test_policy_loss_matches_loop(agg: str, eps_high: float | None) -> None:
    d = make_batch()
    assert not d["mask"][2].any() and d["mask"].sum(-1).unique().numel() > 3
    loss, metrics = policy_loss(
        d["lp"],
        d["old"],
        d["ref"],
        d["adv"],
        d["mask"],
        clip_eps=0.2,
        clip_eps_high=eps_high,
        kl_coef=0.05,
        loss_agg=agg,
        max_tokens_norm=12,
    )
    want = loop_loss(
        d["lp"].tolist(),
        d["old"].tolist(),
        d["ref"].tolist(),
        d["adv"].tolist(),
        d["mask"].tolist(),
        0.2,
        0.2 if eps_high is None else eps_high,
        0.05,
        agg,
        12,
    )
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert metrics["loss"] == pytest.approx(want, rel=1e-9, abs=1e-12)
    # policy_loss metric is the same aggregation without the KL term.
    want_pg = loop_loss(
        d["lp"].tolist(),
        d["old"].tolist(),
        d["ref"].tolist(),
        d["adv"].tolist(),
        d["mask"].tolist(),
        0.2,
        0.2 if eps_high is None else eps_high,
        0.0,
        agg,
        12,
    )
    assert metrics["policy_loss"] == pytest.approx(want_pg, rel=1e-9, abs=1e-12)
    assert 0.0 < metrics["clip_frac"] < 1.0  # clipping really active on some tokens


def test_policy_loss_metrics() -> None:
    d = make_batch()
    m = d["mask"]
    _, metrics = policy_loss(d["lp"], d["old"], d["ref"], d["adv"], m)
    lp, old, ref, adv = d["lp"], d["old"], d["ref"], d["adv"]
    kls, ratios, clips = [], [], []
    for b, t in m.nonzero().tolist():
        r = math.exp(lp[b, t] - old[b, t])
        dd = (ref[b, t] - lp[b, t]).item()
        kls.append(math.exp(dd) - dd - 1)
        ratios.append(r)
        clips.append((r < 0.8 and adv[b] < 0) or (r > 1.2 and adv[b] > 0))
    assert metrics["kl"] == pytest.approx(statistics.mean(kls))
    assert metrics["ratio_mean"] == pytest.approx(statistics.mean(ratios))
    assert metrics["clip_frac"] == pytest.approx(sum(clips) / len(clips))
    assert metrics["adv_mean"] == pytest.approx(adv.mean().item())
    assert metrics["num_tokens"] == m.sum().item()
    assert all(isinstance(v, float) for v in metrics.values())


def test_policy_loss_bad_args() -> None:
    d = make_batch()
    args = (d["lp"], d["old"], d["ref"], d["adv"], d["mask"])
    with pytest.raises(ValueError, match="token_mean"):
        policy_loss(*args, loss_agg="sum")
    with pytest.raises(ValueError, match="max_tokens_norm"):
        policy_loss(*args, loss_agg="seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(d["lp"], d["old"], None, d["adv"], d["mask"])
    with pytest.raises(ValueError):
        policy_loss(d["lp"], d["old"], d["ref"], d["adv"][:-1], d["mask"])
    with pytest.raises(ValueError):
        policy_loss(d["lp"], d["old"], d["ref"], d["adv"], d["mask"][:, 1:])


def test_empty_mask_gives_zero_loss_not_nan() -> None:
    d = make_batch()
    for agg in AGGS:
        loss, metrics = policy_loss(
            d["lp"], d["old"], d["ref"], d["adv"], torch.zeros_like(d["mask"]),
            loss_agg=agg, max_tokens_norm=4,
        )  # fmt: skip
        assert loss.item() == 0.0 and all(math.isfinite(v) for v in metrics.values())


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("poison", [None, float("nan"), float("-inf"), float("inf")])
def test_gradient_exactly_zero_outside_mask(agg: str, poison: float | None) -> None:
    d = make_batch(seed=1)
    m = d["mask"]
    lp, old, ref = d["lp"].clone(), d["old"].clone(), d["ref"].clone()
    if poison is not None:  # garbage outside the mask: padding, or -inf from masked logits
        lp[~m] = poison
        old[~m] = poison
        ref[~m] = poison
    lp.requires_grad_(True)
    loss, metrics = policy_loss(lp, old, ref, d["adv"], m, loss_agg=agg, max_tokens_norm=12)
    assert torch.isfinite(loss)
    assert all(math.isfinite(v) for v in metrics.values())
    loss.backward()
    assert lp.grad is not None
    assert (lp.grad[~m] == 0).all()
    assert torch.isfinite(lp.grad).all()
    assert (lp.grad[m] != 0).any()


def test_equal_reward_group_has_no_policy_gradient() -> None:
    g = 3
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # second group all succeeded
    adv = group_advantages(rewards, g).advantages.double()
    gen = torch.Generator().manual_seed(3)
    lp = (-3 * torch.rand(6, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    mask = torch.ones(6, 5, dtype=torch.bool)
    for old in (lp.detach().clone(), None):
        lp.grad = None
        loss, _ = policy_loss(lp, old, None, adv, mask, kl_coef=0.0)
        loss.backward()
        assert lp.grad is not None
        assert (lp.grad[g:] == 0).all()
        assert (lp.grad[:g] != 0).all()


@pytest.mark.parametrize("agg", AGGS)
def test_micro_batches_sum_to_full_batch(agg: str) -> None:
    d = make_batch(seed=2)
    kw = {"loss_agg": agg, "max_tokens_norm": 12, "kl_coef": 0.01}
    lp_full = d["lp"].clone().requires_grad_(True)
    full, _ = policy_loss(lp_full, d["old"], d["ref"], d["adv"], d["mask"], **kw)
    full.backward()

    stats = mask_stats(d["mask"])
    lp_acc = d["lp"].clone().requires_grad_(True)
    total = torch.zeros((), dtype=torch.float64)
    for idx in ([0, 1], [2, 3, 4], [5]):  # uneven, one micro-batch has the empty row
        part, _ = policy_loss(
            lp_acc[idx], d["old"][idx], d["ref"][idx], d["adv"][idx], d["mask"][idx],
            global_num_seqs=stats["num_seqs"], global_num_tokens=stats["num_tokens"], **kw,
        )  # fmt: skip
        part.backward()  # accumulate like the learner does
        total = total + part.detach()
    assert total.item() == pytest.approx(full.item(), rel=1e-12)
    assert lp_full.grad is not None and lp_acc.grad is not None
    torch.testing.assert_close(lp_acc.grad, lp_full.grad, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# log-probs (rrr.core.grpo.gathered_logprobs, the learner's one kernel)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_match_categorical(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    b, t, v = 3, 6, 11
    logits = (4 * torch.randn(b, t, v, generator=gen)).to(dtype)
    tokens = torch.randint(0, v, (b, t), generator=gen)
    got = next_token_logprobs(logits, tokens)
    assert got.shape == (b, t - 1) and got.dtype == torch.float32
    for i in range(b):
        for j in range(t - 1):
            dist = torch.distributions.Categorical(logits=logits[i, j].float())
            assert got[i, j].item() == pytest.approx(
                dist.log_prob(tokens[i, j + 1]).item(), abs=1e-5
            )


def test_logprobs_gradient_flows() -> None:
    logits = torch.randn(2, 4, 7, requires_grad=True)
    tokens = torch.randint(0, 7, (2, 4))
    next_token_logprobs(logits, tokens).sum().backward()
    assert logits.grad is not None
    assert (logits.grad[:, -1] == 0).all()  # the last position predicts nothing
    assert (logits.grad[:, :-1] != 0).any()


# ----------------------------------------------------------------------------- shuffled control


def test_shuffled_within_groups_keeps_each_groups_rewards_and_moves_them() -> None:
    from rrr.core.grpo import shuffled_within_groups

    rewards = [1.0, 0.0, 0.0, 0.0] * 8 + [0.0, 1.0, 1.0, 0.0]
    valid = [True] * 32 + [True, False, True, True]
    out = shuffled_within_groups(rewards, 4, seed=3, valid=valid)
    assert out == shuffled_within_groups(rewards, 4, seed=3, valid=valid)  # seeded
    for g in range(0, len(rewards), 4):
        assert sorted(out[g : g + 4]) == sorted(rewards[g : g + 4])
    assert out[33] == 1.0  # an invalid episode keeps its slot (it leaves the statistics anyway)
    assert out != rewards  # 9 groups: the chance that no winner moves is (1/4)^8 * 1/3
    with pytest.raises(ValueError, match="groups of 4"):
        shuffled_within_groups(rewards[:-1], 4, seed=0)


# ----------------------------------------------------------------------------- off-policy (TIS)


def test_truncated_importance_weight_rescales_each_tokens_gradient() -> None:
    """learner.tis_cap: the clip is around the current policy (old=None) and each token's
    policy term is weighted by min(exp(current - behaviour), cap), detached."""
    from rrr.core.grpo import policy_loss

    torch.manual_seed(0)
    lp0 = torch.randn(3, 5) * 0.3 - 1.0
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5, 2.0])
    gap = torch.tensor([[0.0, 0.0, 0.5, -0.5, 0.0], [2.0, -1.0, 0, 0, 0], [0, 0, 0.1, 0.9, 1.5]])
    behaviour = lp0 - gap  # weights exp(gap): 1.65, 0.61, 7.4 (capped), ...
    cap = 2.0

    def grads(**kw):
        lp = lp0.clone().requires_grad_(True)
        loss, m = policy_loss(lp, None, None, adv, mask, kl_coef=0.0, loss_agg="token_mean", **kw)
        loss.backward()
        return lp.grad, m

    plain, _ = grads()
    weighted, m = grads(behaviour_logprobs=behaviour, tis_cap=cap)
    w = torch.clamp(gap.exp(), max=cap)
    assert torch.allclose(weighted[mask], (plain * w)[mask], atol=1e-6)
    assert torch.all(weighted[~mask] == 0)
    assert m["tis_weight_max"] == pytest.approx(float(gap[mask].exp().max()), rel=1e-5)
    assert m["tis_clip_frac"] == pytest.approx(float((gap[mask].exp() > cap).float().mean()))
    assert m["tis_weight_mean"] == pytest.approx(float(w[mask].mean()), rel=1e-5)
    # behaviour == current: every weight is 1, the loss is today's
    same, m1 = grads(behaviour_logprobs=lp0, tis_cap=cap)
    assert torch.allclose(same, plain) and m1["tis_weight_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="behaviour_logprobs"):
        grads(tis_cap=cap)

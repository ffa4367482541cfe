"""Dynamic sampling with backfill (DAPO, Yu et al. 2025, section 3.2; verl's `filter_groups`,
OpenRLHF's `dynamic_filtering`): a step trains on `want` groups that carry a GRPO signal.

A group whose G rewards are all equal (every retry failed, or every one succeeded) gets
advantage 0: it costs the learner a forward and a backward and teaches nothing but the KL term.
In the CPU replication 70 % of the groups were such (`batch/frac_zero_std` 0.70,
docs/replication.md), so a step of 16 failures trained on about 5. With backfill those groups
are dropped and replaced: further failures are drawn and rolled out, in rounds, until `want`
groups have a signal or the failures drawn beyond `want` reach `max_extra`
(learner.backfill_max_draws). The step then trains on what it has; `backfill_short` says so.

Round sizes. Round 0 draws `want`, as a step without backfill does. Each later round draws the
groups still missing divided by the share of the groups drawn so far that had a signal (counted
as at least one), so that it is expected to finish the step, but never more than `want` nor
more than the budget left. `want` is the batch the user sized the engines' KV cache for: rounds
of 4x it, as a first version drew, made the CPU replication preset's rollout 20-30 % slower per
token (vLLM preempting and recomputing), and a round after an unlucky first one (1 signal group
in 16) spent the whole budget at once. Signal groups beyond `want` (a round that found more than
were missing) are not trained, so that the step's batch stays `want` groups, as in DAPO;
`groups_unused` counts them (the small last round keeps them few).

Everything drawn is consumed: the data cursor after the step counts every round's failures, so a
resumed run draws the same next step; an abandoned rollout puts every round's draw back (the
caller restores its sampler to before round 0). Every round samples with one policy version: the
fleet's weights change only between rollouts (rrr/driver/rollout_pipeline.py).

Pure logic over two callables; no Ray (tests/test_backfill.py runs it on stand-ins, and the real
stack through `rrr train`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rrr.core.episodes import EpisodeBatch, Failure


def backfilled_rollout(
    want: int,
    max_extra: int,
    draw: Callable[[int], list[Failure]],
    roll: Callable[[list[Failure]], EpisodeBatch],
) -> tuple[EpisodeBatch, dict[str, float]]:
    """Roll out `draw(want)`; with `max_extra` > 0, backfill until `want` groups have a signal.

    `draw(n)` returns up to n failures (fewer in online mode, where first tries that succeed
    leave; none ends the backfill), `roll` their episodes. Returns the rollout, every round's
    episodes in one batch whose `trained_groups` are the chosen signal groups (max_extra = 0:
    the one round, every group trained, no metrics), and the backfill's metrics.
    """
    if want < 1 or max_extra < 0:
        raise ValueError(f"want must be >= 1 and max_extra >= 0, got {want} and {max_extra}")
    first = roll(draw(want))
    if max_extra == 0:
        return first, {}
    parts = [first]
    drawn = len(first.failures)
    signal = [g for g in range(drawn) if first.has_signal(g)]
    while len(signal) < want and drawn < want + max_extra:
        share = max(len(signal), 1) / drawn
        needed = math.ceil((want - len(signal)) / share)
        failures = draw(min(needed, want, want + max_extra - drawn))
        if not failures:
            break
        part = roll(failures)
        signal += [drawn + g for g in range(len(part.failures)) if part.has_signal(g)]
        drawn += len(part.failures)
        parts.append(part)
    batch = EpisodeBatch.concat(parts)
    batch.trained_groups = signal[:want]
    return batch, {
        "groups_signal": float(len(batch.trained_groups)),
        "groups_dropped": float(drawn - len(signal)),
        "groups_unused": float(len(signal) - len(batch.trained_groups)),
        "backfill_rounds": float(len(parts) - 1),
        "backfill_short": float(len(signal) < want),
    }

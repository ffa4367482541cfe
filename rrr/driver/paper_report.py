"""Write one report shaped like the paper from result files: Tables 1/2 (first and second try,
vanilla vs trained), Table 3 (forgetting check), Tables 4/5 (first-try error categories),
Figure 2 (reflections before and after training, with lengths) and the training curves.
Parts with no input are marked "_missing: ..._" with the command that fills them.

RUN_DIR arguments are searched (up to 4 levels, skipping checkpoints/, tb/, failures/) for
`rrr eval` and `rrr eval-general` results.json files and training metrics.jsonl files; files may
also be named directly. Whether an `rrr eval` result is vanilla or trained: --vanilla/--trained
say so; otherwise rrr eval's own record ("trained" in results.json: null for a vanilla model);
for older files, a model directory made by `rrr export` (or a checkpoint) counts as trained and
anything else as vanilla. The report's Sources table lists each file with its role and why.

Writes report.md, report.html (self-contained: curves embedded) and curves-*.png into --out
(default <logging.output_dir>/paper-report).

  rrr paper-report runs/eval-vanilla runs/eval-trained runs/forgetting runs/qwen1.5b-countdown
  rrr paper-report runs/smoke --vanilla runs/calib1 --out runs/paper
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrr.core.config import Config

log = logging.getLogger("rrr.driver.paper_report")

# Paper Table numbers per rrr task: 1/4 are APIGen (function calling), 2/5 Countdown.
TASK_TABLES: dict[str, dict[str, Any]] = {
    "apigen": {"title": "APIGen (function calling)", "accuracy": 1, "errors": 4},
    "countdown": {"title": "Countdown (math equations)", "accuracy": 2, "errors": 5},
}
# Directories never searched for result files (large or irrelevant).
SKIP_DIRS = {"checkpoints", "tb", "failures", ".git", "__pycache__", ".venv"}
MAX_DEPTH = 4  # below each RUN_DIR argument
# What fills a missing task-eval part (the vanilla and the trained side).
VANILLA_HINT = "`rrr eval --config CONFIG data.task={task} --out DIR` on the vanilla model"
TRAINED_HINT = (
    "`rrr export RUN --out EXPORT`, then `rrr eval --config CONFIG data.task={task} "
    "model.name_or_path=EXPORT --out DIR`"
)
PASS_HINT = "; pass DIR to rrr paper-report"
GENERAL_HINT = (
    "run `rrr eval-general --model VANILLA --model TRAINED --out DIR` and pass DIR to "
    "rrr paper-report"
)
TRAIN_HINT = (
    "pass a training run directory (`logging.output_dir` of `rrr train`, with metrics.jsonl)"
)


# ----------------------------------------------------------------------------- inputs


@dataclass
class Source:
    """One input file: what it is, and for task evals whether it is vanilla or trained."""

    path: Path
    kind: str  # "task_eval" | "general_eval" | "training" | "ignored"
    data: Any = None  # the parsed results dict, or the metrics history (list of rows)
    role: str | None = None  # "vanilla" | "trained" for task evals
    why: str = ""  # how the role (or "ignored") was decided
    extra: dict[str, Any] = field(default_factory=dict)


def discover(paths: list[Path]) -> list[Path]:
    """results.json / metrics.jsonl files named directly or found below directories (sorted,
    deduplicated, skipping checkpoints/, tb/ and failures/)."""
    found: dict[Path, None] = {}
    for given in paths:
        if given.is_file():
            found[given.resolve()] = None
            continue
        if not given.is_dir():
            raise FileNotFoundError(f"{given} does not exist")
        base_depth = len(given.resolve().parts)
        for root, dirs, files in os.walk(given.resolve()):
            depth = len(Path(root).parts) - base_depth
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and depth < MAX_DEPTH)
            for name in sorted(files):
                if name in ("results.json", "metrics.jsonl"):
                    found[Path(root) / name] = None
    return list(found)


def load_source(path: Path, role: str | None = None) -> Source:
    """Parse one file and decide its kind (and role for task evals; `role` forces it)."""
    if path.name.endswith(".jsonl"):
        from rrr.driver.report import load_history

        history, malformed = load_history(path)
        if not history:
            return Source(path, "ignored", why="no metrics rows")
        return Source(path, "training", history, extra={"malformed": malformed})
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return Source(path, "ignored", why=f"unreadable: {exc}")
    if not isinstance(data, dict):
        return Source(path, "ignored", why="not an rrr results file")
    if data.get("kind") == "general_eval":
        return Source(path, "general_eval", data)
    if "first_try_accuracy" in data and "task" in data:
        found_role, why = classify(data, role)
        return Source(path, "task_eval", data, found_role, why)
    return Source(path, "ignored", why="not an rrr results file")


def classify(results: dict[str, Any], explicit: str | None = None) -> tuple[str, str]:
    """("vanilla" | "trained", reason) for an `rrr eval` result (rules in the module doc)."""
    if explicit:
        return explicit, f"given with --{explicit}"
    if "trained" in results:
        info = results["trained"]
        if info is None:
            return "vanilla", "recorded by rrr eval (not an rrr-trained model)"
        return "trained", f"recorded by rrr eval (step {info.get('step')})"
    from rrr.core.models import trained_provenance

    info = trained_provenance(results.get("model", ""))
    if info is not None:
        results["trained"] = info  # used for pairing below
        return "trained", f"model directory is an rrr export/checkpoint (step {info.get('step')})"
    return "vanilla", "assumed: no record of training (use --trained PATH to override)"


def _model_key(name: str | None) -> str | None:
    """A comparable name for a model: aliases lowercased, existing paths resolved."""
    if not name:
        return None
    from rrr.core.models import EMBEDDED_ALIASES

    if name.lower() in EMBEDDED_ALIASES:
        return "smollm2-135m"
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def pair_results(evals: list[Source]) -> dict[str, list[tuple[Source | None, Source | None]]]:
    """Per task: (vanilla, trained) pairs; a side is None where no result matches."""
    from rrr.driver.transfer import is_transfer

    # A model trained on another task is no "Trained" column here: the transfer table shows it.
    evals = [s for s in evals if not (s.role == "trained" and is_transfer(s.data))]
    by_task: dict[str, list[tuple[Source | None, Source | None]]] = {}
    tasks = sorted({s.data["task"] for s in evals})
    for task in tasks:
        vanilla = [s for s in evals if s.data["task"] == task and s.role == "vanilla"]
        trained = [s for s in evals if s.data["task"] == task and s.role == "trained"]
        unused = list(vanilla)
        pairs: list[tuple[Source | None, Source | None]] = []
        for t in trained:
            base = _model_key((t.data.get("trained") or {}).get("base_model"))
            match = next((v for v in unused if base and _model_key(v.data["model"]) == base), None)
            if match is None and len(vanilla) == 1 and unused:
                match = unused[0]  # the only vanilla result of this task
            if match is not None:
                unused.remove(match)
            pairs.append((match, t))
        pairs += [(v, None) for v in unused]
        by_task[task] = pairs
    return by_task


# ----------------------------------------------------------------------------- sections


def _pct(x: float | None) -> str:
    return "_missing_" if x is None else f"{100 * x:.1f}%"


def _get(src: Source | None, key: str) -> Any:
    return None if src is None else src.data.get(key)


def _model_name(v: Source | None, t: Source | None) -> str:
    if v is not None:
        return f"`{v.data['model']}`"
    if t is None:
        return "-"
    base = (t.data.get("trained") or {}).get("base_model")
    return f"`{base}`" if base else f"`{t.data['model']}` (base model unknown)"


def pair_labels(pairs: list[tuple[Source | None, Source | None]]) -> list[str]:
    """Row names: the (base) model, plus the results directory where two rows share a model."""
    names = [_model_name(v, t) for v, t in pairs]
    labels = []
    for name, (v, t) in zip(names, pairs):
        if names.count(name) > 1:
            dirs = " / ".join(s.path.parent.name for s in (v, t) if s is not None)
            name += f" ({dirs})"
        labels.append(name)
    return labels


def _eval_hint(task: str, role: str | None = None) -> str:
    """The commands that produce the missing `rrr eval` results of `task` (one side or both)."""
    vanilla, trained = VANILLA_HINT.format(task=task), TRAINED_HINT.format(task=task)
    if role == "vanilla":
        return vanilla + PASS_HINT
    if role == "trained":
        return trained + PASS_HINT
    return f"{vanilla}; for the trained model {trained}{PASS_HINT}"


def missing(text: str) -> str:
    return f"_missing: {text}_"


def accuracy_section(task: str, pairs: list[tuple[Source | None, Source | None]]) -> list[str]:
    """Paper Table 1 / 2: vanilla and trained, first try and second try after one reflection."""
    meta = TASK_TABLES.get(task, {"title": task, "accuracy": None})
    number = f"Table {meta['accuracy']}" if meta["accuracy"] else "Accuracy"
    lines = [f"## {number}: {meta['title']}, first and second try", ""]
    if not pairs:
        return [*lines, missing(_eval_hint(task)), ""]
    lines += [
        "| model | n (vanilla / trained) | Vanilla 1st Try | + Reflection 2nd Try | "
        "Trained 1st Try | + Reflection 2nd Try |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for label, (v, t) in zip(pair_labels(pairs), pairs):
        n = f"{_get(v, 'num_queries') or '-'} / {_get(t, 'num_queries') or '-'}"
        lines.append(
            f"| {label} | {n} | {_pct(_get(v, 'first_try_accuracy'))} | "
            f"{_pct(_get(v, 'second_try_accuracy'))} | {_pct(_get(t, 'first_try_accuracy'))} | "
            f"{_pct(_get(t, 'second_try_accuracy'))} |"
        )
        if (
            v
            and t
            and (v.data.get("source"), v.data["num_queries"])
            != (
                t.data.get("source"),
                t.data["num_queries"],
            )
        ):
            notes.append(
                f"- {label}: vanilla and trained were evaluated on different data "
                f"({v.data.get('source')} n={v.data['num_queries']} vs "
                f"{t.data.get('source')} n={t.data['num_queries']}); not comparable."
            )
    lines.append("")
    if any(t is None for _, t in pairs):
        notes.append("- " + missing("trained results: " + _eval_hint(task, "trained")))
    if any(v is None for v, _ in pairs):
        notes.append("- " + missing("vanilla results: " + _eval_hint(task, "vanilla")))
    return [*lines, *notes, *([""] if notes else [])]


def error_section(task: str, pairs: list[tuple[Source | None, Source | None]]) -> list[str]:
    """Paper Table 4 / 5: first-try error shares (over all queries), vanilla vs trained."""
    meta = TASK_TABLES.get(task, {"title": task, "errors": None})
    number = f"Table {meta['errors']}" if meta["errors"] else "Errors"
    lines = [f"## {number}: {meta['title']}, first-try error categories", ""]
    if not pairs:
        return [*lines, missing(_eval_hint(task)), ""]
    try:
        from rrr.core.tasks import task_class

        cats = list(task_class(task).error_categories)
    except ValueError:  # a task no longer installed: its categories come from the results
        cats = []
    seen = {k for v, t in pairs for s in (v, t) if s for k in s.data["first_try_errors"]}
    cats += sorted(seen - set(cats))  # e.g. context_overflow
    lines += ["| model | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
    for name, (v, t) in zip(pair_labels(pairs), pairs):
        for label, src in (("Vanilla", v), ("Trained", t)):
            if src is None:
                cells = " | ".join("_missing_" for _ in cats)
            else:
                errors = src.data["first_try_errors"]
                cells = " | ".join(_pct(errors.get(c, 0.0)) for c in cats)
            lines.append(f"| {label} {name} | {cells} |")
    return [*lines, ""]


def _quote(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reflections_section(
    pairs_by_task: dict[str, list[tuple[Source | None, Source | None]]],
    examples: int = 3,
    chars: int = 500,
) -> list[str]:
    """Paper Figure 2: reflections written before and after training, with their lengths."""
    lines = ["## Figure 2: reflections before and after training", ""]
    if not pairs_by_task:
        return [*lines, missing(_eval_hint("TASK")), ""]
    for task, pairs in pairs_by_task.items():
        for v, t in pairs:
            lines += [
                f"### {TASK_TABLES.get(task, {}).get('title', task)}: {_model_name(v, t)}",
                "",
            ]
            for label, role, src in (("Before", "vanilla", v), ("After", "trained", t)):
                label = f"{label} ({role})"
                if src is None:
                    lines += [f"**{label}**: " + missing(_eval_hint(task, role)), ""]
                    continue
                avg = src.data.get("avg_reflection_tokens", 0.0)
                lines += [f"**{label}**: average reflection length {avg:.1f} tokens", ""]
                shown = src.data.get("examples", [])[:examples]
                if not shown:
                    lines += [
                        missing("this evaluation kept no reflections (no failed first tries, "
                                "or `eval.num_examples=0`)"),
                        "",
                    ]  # fmt: skip
                for ex in shown:
                    mark = "fixed" if ex.get("retry_correct") else "not fixed"
                    lines += [
                        f"> ({ex.get('reflection_tokens')} tokens, retry {mark}) "
                        + html.escape(_quote(ex.get("reflection", ""), chars), quote=False),
                        "",
                    ]
    return lines


def general_section(generals: list[Source]) -> list[str]:
    """Paper Table 3: lm-eval benchmarks, vanilla vs trained, from `rrr eval-general`."""
    from rrr.driver import lm_eval_harness as ge

    lines = ["## Table 3: forgetting check (general benchmarks)", ""]
    if not generals:
        return [*lines, missing(GENERAL_HINT), ""]
    covered: set[str] = set()
    for src in generals:
        results = src.data
        models = results["models"]
        lines += [f"From `{src.path}`:", "", ge.markdown(results).rstrip(), ""]
        covered |= {r["task"] for r in results["tasks"] if all(r["scores"])}
        if len(models) < 2:
            lines += [missing("a second (trained) model: " + GENERAL_HINT), ""]
    not_run = [ge.PAPER_NAMES[t] for t in ge.PAPER_TASKS if t not in covered]
    if not_run:
        lines += [missing(f"paper benchmarks not run: {', '.join(not_run)} ({GENERAL_HINT})"), ""]
    return lines


def curves_section(trainings: list[Source], out_dir: Path | None) -> list[str]:
    """Training curves (the `rrr report` PNG) and summary of each run's metrics.jsonl."""
    from rrr.driver.report import format_summary, plot, summarize

    lines = ["## Training curves", ""]
    if not trainings:
        return [*lines, missing(TRAIN_HINT), ""]
    used: set[str] = set()
    for src in trainings:
        run_dir = src.path.parent
        lines += [f"### Run `{run_dir}`", ""]
        summary = summarize(src.data, src.extra.get("malformed", 0))
        lines += ["```", format_summary(summary), "```", ""]
        if out_dir is not None:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_dir.name) or "run"
            while name in used:
                name += "_"
            used.add(name)
            png = out_dir / f"curves-{name}.png"
            if plot(src.data, png):
                lines += [f"![training curves of {run_dir.name}]({png.name})", ""]
            else:
                lines += [missing("no known training metrics to plot in this run"), ""]
    return lines


def sources_section(sources: list[Source]) -> list[str]:
    lines = ["## Sources", "", "| file | kind | role | why |", "|---|---|---|---|"]
    for s in sources:
        if s.kind == "general_eval":
            role = " / ".join(m["role"] for m in s.data["models"])
            why = "first --model vanilla, second trained (rrr eval-general)"
        else:
            role, why = s.role or "-", s.why
        lines.append(f"| `{s.path}` | {s.kind} | {role} | {why} |")
    return [*lines, ""]


def build_report(sources: list[Source], out_dir: Path | None = None, examples: int = 3) -> str:
    """The whole Markdown report. `out_dir` receives curve PNGs (None: curves not drawn)."""
    evals = [s for s in sources if s.kind == "task_eval"]
    pairs = pair_results(evals)
    tasks = list(TASK_TABLES) + [t for t in pairs if t not in TASK_TABLES]
    lines = [
        "# Reflect, Retry, Reward: results",
        "",
        "Laid out like the paper's Tables 1-5 and Figure 2. Accuracy is over all queries; the "
        "second try counts a query solved if the first try was correct or the retry after one "
        "self-reflection was (paper section 3). Missing parts say which command fills them.",
        "",
    ]
    for task in tasks:
        lines += accuracy_section(task, pairs.get(task, []))
    lines += general_section([s for s in sources if s.kind == "general_eval"])
    for task in tasks:
        lines += error_section(task, pairs.get(task, []))
    lines += reflections_section(pairs, examples)
    from rrr.driver.transfer import transfer_section

    lines += transfer_section(evals, _model_key)
    lines += curves_section([s for s in sources if s.kind == "training"], out_dir)
    lines += sources_section(sources)
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- HTML


def _inline(text: str, base: Path | None) -> str:
    """Escape, then code spans, bold, _emphasis_ and images (embedded as data: URIs).
    Code spans are set aside first so nothing inside them is formatted, while emphasis may
    still span them (the report's "_missing: run `cmd`_" lines)."""
    held: list[str] = []  # finished HTML of code spans and images, put back at the end

    def hold(fragment: str) -> str:
        held.append(fragment)
        return f"\x00{len(held) - 1}\x00"

    text = re.sub(r"`([^`]+)`", lambda m: hold(f"<code>{html.escape(m[1])}</code>"), text)
    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", lambda m: hold(_img(m[1], m[2], base)), text)
    # Markdown sources may already hold entities (reflections are escaped): no double escape.
    text = html.escape(html.unescape(text), quote=False)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<!\w)_(\S[^_]*?)_(?!\w)", r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: held[int(m[1])], text)


def _img(alt: str, src: str, base: Path | None) -> str:
    path = (base / src) if base is not None else Path(src)
    if path.is_file() and path.suffix.lower() == ".png":
        data = base64.b64encode(path.read_bytes()).decode()
        src = f"data:image/png;base64,{data}"  # self-contained: the HTML needs no PNG beside it
    return f'<img alt="{html.escape(alt)}" src="{html.escape(src)}">'


def markdown_to_html(md: str, title: str = "rrr report", base: Path | None = None) -> str:
    """A small converter for the Markdown this module writes: headings, pipe tables, bullet
    lists, block quotes, fenced code, paragraphs, and inline code / bold / emphasis / images."""
    body: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body.append("<pre><code>" + html.escape("\n".join(lines[i + 1 : j])) + "</code></pre>")
            i = j + 1
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            n = len(m[1])
            body.append(f"<h{n}>{_inline(m[2], base)}</h{n}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split(" | ")])
                i += 1
            head, rest = rows[0], [r for r in rows[1:] if not re.fullmatch(r"[-:| ]+", "".join(r))]
            body.append("<table>")
            body.append("<tr>" + "".join(f"<th>{_inline(c, base)}</th>" for c in head) + "</tr>")
            for r in rest:
                body.append("<tr>" + "".join(f"<td>{_inline(c, base)}</td>" for c in r) + "</tr>")
            body.append("</table>")
        elif line.startswith("- "):
            body.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                body.append(f"<li>{_inline(lines[i][2:], base)}</li>")
                i += 1
            body.append("</ul>")
        elif line.startswith("> "):
            quote = []
            while i < len(lines) and lines[i].startswith("> "):
                quote.append(lines[i][2:])
                i += 1
            body.append(f"<blockquote>{_inline(' '.join(quote), base)}</blockquote>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"[#|>`]|- ", lines[i]):
                para.append(lines[i])
                i += 1
            body.append(f"<p>{_inline(' '.join(para), base)}</p>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "line-height:1.45}table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}"
        "blockquote{border-left:4px solid #ccc;margin:.6em 0;padding:.2em 1em;color:#333}"
        "pre{background:#f6f6f6;padding:.8em;overflow-x:auto}img{max-width:100%}"
        "em{color:#a33}"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        nargs="*",
        metavar="RUN_DIR",
        help="run or eval directories, or results.json / metrics.jsonl files",
    )
    parser.add_argument(
        "--vanilla", action="append", default=[], metavar="PATH",
        help="rrr eval results (file or directory) of a vanilla model",
    )  # fmt: skip
    parser.add_argument(
        "--trained", action="append", default=[], metavar="PATH",
        help="rrr eval results (file or directory) of a trained model",
    )  # fmt: skip
    parser.add_argument(
        "--out", help="output directory (default: <logging.output_dir>/paper-report)"
    )
    parser.add_argument(
        "--examples", type=int, default=3, help="reflections shown per model in Figure 2"
    )


def run(args: argparse.Namespace, cfg: Config) -> int:

    out = Path(args.out) if args.out else Path(cfg.logging.output_dir) / "paper-report"
    given = [(Path(p), None) for p in args.run_dirs]
    given += [(Path(p), "vanilla") for p in args.vanilla] + [
        (Path(p), "trained") for p in args.trained
    ]
    if not given:
        print(
            "rrr paper-report: name at least one RUN_DIR, --vanilla or --trained", file=sys.stderr
        )
        return 2
    sources: dict[Path, Source] = {}
    for path, role in given:
        try:
            files = discover([path])
        except FileNotFoundError as exc:
            print(f"rrr paper-report: {exc}", file=sys.stderr)
            return 1
        for f in files:
            # An explicit role wins over the same file found again under a RUN_DIR.
            if role is not None or f not in sources:
                sources[f] = load_source(f, role)
    out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(sources.values(), key=lambda s: str(s.path))
    md = build_report(ordered, out, examples=args.examples)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(markdown_to_html(md, "rrr paper report", base=out))
    used = sum(1 for s in ordered if s.kind != "ignored")
    print(f"{used} result files used ({len(ordered) - used} ignored); "
          f"{md.count('_missing')} parts missing")  # fmt: skip
    print(f"report: {out / 'report.md'}  html: {out / 'report.html'}")
    return 0

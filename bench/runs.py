"""What the benchmarks that run `rrr train` (bench/async.py, bench/backfill.py) read back: the
training steps of a run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path


def read_steps(path: Path) -> list[dict[str, float]]:
    """The training steps of metrics.jsonl, not its evaluation lines; keys of a run logged
    before the metric namespaces are renamed (rrr.core.metrics.read_jsonl_records)."""
    from rrr.core.metrics import read_jsonl_records

    records, _ = read_jsonl_records(path)
    return [m for m in records if "timing/learn_s" in m]

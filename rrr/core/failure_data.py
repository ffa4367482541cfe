"""The failure dataset (paper section 4.3): queries the model fails, each with one failed attempt.

On disk: a directory of parquet shards plus `manifest.json`.

  manifest.json           model, task, family, source, samples_per_query, keep, shard_size,
                          and the total query count; a rerun with other settings is refused
  shard-00000.parquet     one row per kept query, columns:
    query_key        string      task.row_key(row): stable id of the query
    row              string      the validated task row as JSON (countdown: nums, target;
                                 apigen: query, tools, answers, id)
    failed_response  string      the first failed sample's text
    failed_token_ids list<int32> its token ids as sampled (episodes append them as they are)
    failed_error     string      its verifier error (Tables 4/5 categories)
    num_samples      int32       K, samples drawn for this query
    num_failed       int32       how many of the K failed
    model            string      the model that produced them
    task, family     string

Each shard is written to a temporary file and renamed, so a shard is either complete or
absent: a crash loses at most the shard in progress, and a rerun skips finished shards.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rrr.core.errors import RRRError
from rrr.core.tasks.base import Task
from rrr.verifiers import Verdict
from rrr.verifiers.verdict import VERIFIER_ERROR

SCHEMA = pa.schema(
    [
        ("query_key", pa.string()),
        ("row", pa.string()),
        ("failed_response", pa.string()),
        ("failed_token_ids", pa.list_(pa.int32())),
        ("failed_error", pa.string()),
        ("num_samples", pa.int32()),
        ("num_failed", pa.int32()),
        ("model", pa.string()),
        ("task", pa.string()),
        ("family", pa.string()),
    ]
)
MANIFEST = "manifest.json"


class FailureDataError(RRRError, RuntimeError):
    pass


@dataclass(frozen=True)
class FailureRecord:
    row: dict[str, Any]
    failed_response: str
    failed_token_ids: list[int]
    failed_error: str
    num_samples: int
    num_failed: int


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:05d}.parquet"


def prepare_dir(directory: Path, manifest: dict[str, Any]) -> None:
    """Create the directory or check that an existing one was built with the same settings."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in manifest.items() if old.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise FailureDataError(
                f"{directory} holds failures built with other settings ({detail}); "
                "use another output directory"
            )
        return
    _atomic_write_bytes(path, json.dumps(manifest, indent=2).encode())


def write_shard(directory: Path, index: int, rows: list[dict[str, Any]]) -> Path:
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    path = shard_path(directory, index)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # atomic on POSIX: the shard is complete or absent
    return path


def done_shards(directory: Path) -> set[int]:
    return {int(p.stem.split("-")[1]) for p in directory.glob("shard-*.parquet")}


def read_failures(directory: str | Path) -> tuple[list[FailureRecord], dict[str, Any]]:
    """All kept failures of a dataset (shard order), and its manifest."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise FailureDataError(f"{directory} is not a failure dataset (no {MANIFEST})")
    manifest = json.loads((directory / MANIFEST).read_text())
    records = []
    for path in sorted(directory.glob("shard-*.parquet")):
        for r in pq.read_table(path, schema=SCHEMA).to_pylist():
            records.append(
                FailureRecord(
                    row=json.loads(r["row"]),
                    failed_response=r["failed_response"],
                    failed_token_ids=list(r["failed_token_ids"]),
                    failed_error=r["failed_error"] or "",
                    num_samples=r["num_samples"],
                    num_failed=r["num_failed"],
                )
            )
    return records, manifest


def failure_records(
    rows: list[dict[str, Any]],
    samples: list[list[Any]],
    verdicts: list[list[Verdict]],
    task: Task,
    keep: str,
    model: str,
) -> list[dict[str, Any]]:
    """The failure-dataset records of one shard: K sampled first attempts per query in, the
    queries the model fails out, each with its first failed attempt (paper 4.3). `keep` is
    "any" (one of K failed: the paper's rule) or "all" (every one of K failed)."""
    records = []
    for row, group, group_verdicts in zip(rows, samples, verdicts):
        if not group:  # the prompt alone fills the context: no attempt, nothing to keep
            continue
        # An attempt the verifier could not judge is not a failure of the model.
        judged = [(s, v) for s, v in zip(group, group_verdicts) if v.error != VERIFIER_ERROR]
        failed = [(s, v) for s, v in judged if not v.correct]
        if not judged:
            continue
        if not (failed if keep == "any" else len(failed) == len(judged)):
            continue
        sample, verdict = failed[0]
        records.append(
            {
                "query_key": task.row_key(row),
                "row": json.dumps(row),
                "failed_response": sample.text,
                "failed_token_ids": list(sample.token_ids),
                "failed_error": verdict.error or "",
                "num_samples": len(group),
                "num_failed": len(failed),
                "model": model,
                "task": task.name,
                "family": task.family,
            }
        )
    return records


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

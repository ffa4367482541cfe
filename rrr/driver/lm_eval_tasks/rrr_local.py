"""Dataset loader for the local lm-eval tasks shipped with rrr (no network needed).

lm-eval resolves `dataset_kwargs: {data_files: ...}` relative to the current directory, so a
task file that names its JSONL that way only works when run from one place. The YAML files here
instead point `custom_dataset` at `load`, which finds the JSONL beside this file wherever rrr is
installed or run from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load(file: str = "rrr_local_arith.jsonl", **_: Any) -> Any:
    """A DatasetDict with one `test` split read from `file` (a JSONL next to this module).

    lm-eval calls this with the task's `metadata` and `dataset_kwargs` merged; everything but
    `file` (version, model args, ...) is ignored.
    """
    import datasets

    return datasets.load_dataset("json", data_files={"test": str(HERE / file)})

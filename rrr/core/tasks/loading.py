"""Load task rows from files, Hugging Face datasets or the Countdown generator.

Every raw row goes through ``task.validate_row``; rows that fail are skipped and counted by
reason, so one malformed line never sinks a run (the paper trains on large public sets:
APIGen/xLAM §4.1, Countdown §4.2), while a source with no usable row fails loudly.

Sources, in routing order:

* whatever the task's own ``read_source(source, split)`` reads (e.g. ``humaneval`` for the code
  task); a task returns None for sources it does not know.
* ``gen:countdown?n=1000&seed=0&min_nums=3&...`` -- generated problems (``countdown_gen``).
* an existing local path: ``.jsonl`` (one object per line; a bad line counts as ``bad_json``),
  ``.json`` (a JSON array, a single object, or JSON lines), ``.parquet``; a directory written by
  ``datasets.save_to_disk``; a directory of parquet shards (read with pyarrow; when shard paths
  name splits, e.g. ``data/train-00000-of-00001.parquet``, only ``split`` is read); any other
  directory goes to ``datasets.load_dataset(dir, split=split)`` (local json/csv/parquet files).
* a string that looks like a path (starts with ``/ ./ ../ ~`` or ends in ``.jsonl/.json/.parquet``)
  but does not exist -> ``DataSourceNotFound`` naming the path.
* anything else is a Hugging Face dataset id: ``datasets.load_dataset(source, split=split)``
  (an optional ``hf:`` prefix is accepted), e.g. ``Jiayi-Pan/Countdown-Tasks-3to4``.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from rrr.core.errors import RRRError
from rrr.core.tasks.base import Row, RowError, Task
from rrr.core.tasks.countdown_gen import count_problems, generate_problems

LOCAL_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".parquet")
_SPLIT_NAMES: tuple[str, ...] = ("train", "test", "validation", "valid", "dev", "eval")
# Generator options accepted in ``gen:countdown?...`` (ints, and the strings ops and part).
_GEN_INT_KEYS: tuple[str, ...] = (
    "n",
    "seed",
    "min_nums",
    "max_nums",
    "min_num",
    "max_num",
    "min_target",
    "max_target",
)
_GEN_STR_KEYS: tuple[str, ...] = ("ops", "part")
_GEN_DEFAULT_N = 1000


class DataError(RRRError, RuntimeError):
    """A data source that yields no usable rows, or cannot be read at all."""


class DataSourceNotFound(DataError, FileNotFoundError):
    """A local data path that does not exist."""


@dataclass
class LoadResult:
    rows: list[Row]
    skipped: Counter[str] = field(default_factory=Counter)
    source: str = ""
    total_seen: int = 0

    def summary(self) -> str:
        """E.g. ``loaded 298 rows from X; skipped 2: tools_not_json=1, missing_field:query=1``."""
        total = sum(self.skipped.values())
        text = f"loaded {len(self.rows)} rows from {self.source}; skipped {total}"
        return f"{text}: {self.reasons()}" if total else text

    def reasons(self) -> str:
        """Skip reasons, most frequent first (ties by name, so the text is deterministic)."""
        ordered = sorted(self.skipped.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{reason}={count}" for reason, count in ordered)


class _BadRecord:
    """Placeholder for a raw record that could not even be decoded (counted, never raised)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


Raw = Mapping[str, Any] | _BadRecord


def load_rows(
    task: Task,
    source: str,
    *,
    split: str = "train",
    limit: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    dedupe: bool = False,
    cache_dir: str | None = None,
) -> LoadResult:
    """Validate every raw row of ``source`` with ``task`` and return the good ones.

    ``shuffle`` (seeded) permutes raw rows before ``limit`` is applied, so a limited load is a
    random subset; ``limit`` stops after that many *valid* rows. ``dedupe`` skips rows whose
    ``task.row_key`` was already loaded (reason ``duplicate``). ``cache_dir`` is passed to
    ``datasets``. Raises ``DataError`` when no row survives.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    raws = _raw_records(task, source, split=split, shuffle=shuffle, seed=seed,
                        cache_dir=cache_dir, limit=limit)  # fmt: skip
    result = LoadResult(rows=[], source=source)
    seen_keys: set[str] = set()
    for raw in raws:
        if limit is not None and len(result.rows) >= limit:
            break
        result.total_seen += 1
        if isinstance(raw, _BadRecord):
            result.skipped[raw.reason] += 1
            continue
        if not isinstance(raw, Mapping):
            result.skipped["not_an_object"] += 1
            continue
        try:
            row = task.validate_row(raw)
        except RowError as exc:
            result.skipped[exc.reason] += 1
            continue
        if dedupe:
            key = task.row_key(row)
            if key in seen_keys:
                result.skipped["duplicate"] += 1
                continue
            seen_keys.add(key)
        result.rows.append(row)
    if not result.rows:
        if result.total_seen == 0:
            raise DataError(f"no rows in data source {source!r} (split {split!r})")
        raise DataError(
            f"no usable {task.name} rows in {source!r}: all {result.total_seen} skipped "
            f"({result.reasons()})"
        )
    return result


# --- routing -------------------------------------------------------------------------------


def _raw_records(
    task: Task,
    source: str,
    *,
    split: str,
    shuffle: bool,
    seed: int,
    cache_dir: str | None,
    limit: int | None,
) -> Iterable[Raw]:
    reader = getattr(task, "read_source", None)  # optional in the task protocol
    own = reader(source, split) if reader is not None else None
    if own is not None:  # a source only this task knows (e.g. the code task's "humaneval")
        records = list(own)
        if shuffle:
            random.Random(seed).shuffle(records)
        return records
    if source.startswith("gen:"):
        # Generated rows are already a seeded random sample; shuffle/split do not apply.
        return _generated(task, source, limit)
    if source.startswith("hf:"):
        return _from_datasets(source[3:], split, shuffle, seed, cache_dir)
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_directory(path, split, shuffle, seed, cache_dir)
    if path.exists():
        records: list[Raw]
        if path.suffix == ".jsonl":
            records = list(_read_jsonl(path))
        elif path.suffix == ".json":
            records = _read_json(path)
        elif path.suffix == ".parquet":
            records = _read_parquet([path])
        else:
            raise DataError(
                f"unsupported data file {str(path)!r}: expected one of {LOCAL_SUFFIXES} "
                "or a directory"
            )
        if shuffle:
            random.Random(seed).shuffle(records)
        return records
    if _looks_local(source):
        raise DataSourceNotFound(f"data file not found: {str(path)!r}")
    return _from_datasets(source, split, shuffle, seed, cache_dir)


def _looks_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or source.endswith(LOCAL_SUFFIXES)


# --- local files ---------------------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[Raw]:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield _BadRecord("bad_json")


def _read_json(path: Path) -> list[Raw]:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return list(_read_jsonl(path))  # JSON lines saved with a .json suffix
    if isinstance(data, list):
        return data
    return [data]  # a single object is a single row (anything else fails validation)


def _read_parquet(files: list[Path]) -> list[Raw]:
    import pyarrow.parquet as pq

    records: list[Raw] = []
    for file in files:
        try:
            records.extend(pq.read_table(file).to_pylist())
        except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
            raise DataError(f"cannot read parquet file {str(file)!r}: {exc}") from exc
    return records


def _split_of(relative: Path) -> str | None:
    """The split a shard path names (``train/x.parquet``, ``data/test-0000-of-0001.parquet``)."""
    for part in (*relative.parent.parts, relative.stem):
        for name in _SPLIT_NAMES:
            if part == name or re.match(rf"{name}[-_.]", part):
                return name
    return None


def _from_directory(
    path: Path, split: str, shuffle: bool, seed: int, cache_dir: str | None
) -> Iterable[Raw]:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _from_saved(path, split, shuffle, seed)
    shards = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if shards:
        tagged = {shard: _split_of(shard.relative_to(path)) for shard in shards}
        if any(tagged.values()):
            chosen = [shard for shard in shards if tagged[shard] == split]
            if not chosen:
                found = sorted({name for name in tagged.values() if name})
                raise DataError(f"no {split!r} parquet shards under {str(path)!r}; found {found}")
            shards = chosen
        records = _read_parquet(shards)
        if shuffle:
            random.Random(seed).shuffle(records)
        return records
    return _from_datasets(str(path), split, shuffle, seed, cache_dir)


# --- Hugging Face datasets -----------------------------------------------------------------


def _from_saved(path: Path, split: str, shuffle: bool, seed: int) -> Iterable[Raw]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"split {split!r} not in {str(path)!r}; available {list(loaded)}")
        loaded = loaded[split]
    return loaded.shuffle(seed=seed) if shuffle else loaded


def _from_datasets(
    name: str, split: str, shuffle: bool, seed: int, cache_dir: str | None
) -> Iterable[Raw]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split, cache_dir=cache_dir)
    except FileNotFoundError as exc:
        raise DataSourceNotFound(f"dataset {name!r} not found: {exc}") from exc
    except ConnectionError as exc:  # offline (HF_DATASETS_OFFLINE=1) or no network
        raise DataError(
            f"cannot fetch Hugging Face dataset {name!r}: {exc}; "
            "use a local file/directory or a cached dataset"
        ) from exc
    except ValueError as exc:  # e.g. an unknown split
        raise DataError(f"cannot load dataset {name!r} split {split!r}: {exc}") from exc
    # Iterating a Dataset yields plain dicts one at a time; no need to materialise 490k rows.
    return dataset.shuffle(seed=seed) if shuffle else dataset


# --- generator -----------------------------------------------------------------------------


def parse_gen_source(source: str) -> tuple[str, dict[str, Any]]:
    """``gen:countdown?n=10&ops=+-`` -> ("countdown", {"n": 10, "ops": "+-"}).

    Parsed by hand: ``urllib.parse.parse_qsl`` would turn the ``+`` in ``ops=+-*/`` into a space.
    Unknown keys or non-integer values raise ``ValueError`` naming the key.
    """
    body = source.removeprefix("gen:")
    name, _, query = body.partition("?")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        key, value = unquote(key), unquote(value)
        if not sep:
            raise ValueError(f"generator option {key!r} in {source!r} has no value")
        if key in _GEN_STR_KEYS:
            options[key] = value
        elif key in _GEN_INT_KEYS:
            try:
                options[key] = int(value)
            except ValueError:
                raise ValueError(
                    f"generator option {key!r} must be an integer, got {value!r}"
                ) from None
        else:
            known = [*_GEN_INT_KEYS, *_GEN_STR_KEYS]
            raise ValueError(f"unknown generator option {key!r} in {source!r}; known: {known}")
    return name, options


def source_universe(source: str) -> int | None:
    """How many distinct problems a source can hold at most: for a generated source, the
    problems its settings can generate (whatever n, seed); None where unknown (files, hub
    datasets: their distinct rows are what `load_rows(..., dedupe=True)` counts)."""
    if not source.startswith("gen:"):
        return None
    name, options = parse_gen_source(source)
    if name != "countdown":
        return None
    options = {k: v for k, v in options.items() if k not in ("n", "seed")}
    return count_problems(**options)


def _generated(task: Task, source: str, limit: int | None) -> list[Raw]:
    name, options = parse_gen_source(source)
    if name != "countdown":
        raise ValueError(f"unknown generator {name!r} in {source!r}; available: ['countdown']")
    if task.name != "countdown":
        raise ValueError(f"generator {name!r} makes countdown rows, not {task.name!r} rows")
    n = options.pop("n", limit if limit is not None else _GEN_DEFAULT_N)
    seed = options.pop("seed", 0)
    return list(generate_problems(n, seed, **options))

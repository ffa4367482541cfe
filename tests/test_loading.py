"""Data loading: bundled samples, skip accounting, parquet, local HF datasets, generator, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rrr.core.tasks import get_task
from rrr.core.tasks.countdown_gen import generate_problems
from rrr.core.tasks.loading import DataError, DataSourceNotFound, load_rows, parse_gen_source

COUNTDOWN = get_task("countdown", "qwen")
APIGEN = get_task("apigen", "qwen")

TOOLS = [{"name": "add", "description": "Add.", "parameters": {"a": {"type": "int"}}}]
ANSWERS = [{"name": "add", "arguments": {"a": 1}}]
GOOD_XLAM = {"id": 1, "query": "add 1", "tools": json.dumps(TOOLS), "answers": json.dumps(ANSWERS)}


def _write_jsonl(path: Path, lines: list[object]) -> Path:
    # Strings are written verbatim (to inject malformed JSON), anything else as JSON.
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# --- the bundled samples ---------------------------------------------------------------------


def test_bundled_countdown_sample(sample_data: Path) -> None:
    source = str(sample_data / "countdown_sample.jsonl")
    result = load_rows(COUNTDOWN, source)
    assert len(result.rows) == 300 and result.total_seen == 300 and not result.skipped
    assert result.summary() == f"loaded 300 rows from {source}; skipped 0"
    assert all(set(row) == {"nums", "target"} for row in result.rows)


@pytest.mark.parametrize("family", ["qwen", "llama"])
def test_bundled_xlam_sample(sample_data: Path, family: str) -> None:
    result = load_rows(get_task("apigen", family), str(sample_data / "xlam_sample.jsonl"))
    assert len(result.rows) == 300 and not result.skipped
    row = result.rows[0]
    assert set(row) == {"id", "query", "tools", "answers"}
    assert isinstance(row["tools"], list) and isinstance(row["answers"], list)
    # Content keys are unique even though two xLAM rows share a query (ids 72 and 716).
    assert len({APIGEN.row_key(r) for r in result.rows}) == 300


# --- skip accounting ------------------------------------------------------------------------


def test_countdown_skip_reasons_counted(tmp_path: Path) -> None:
    lines: list[object] = [
        {"nums": [1, 2, 3], "target": 6},
        {"nums": [10, 20], "target": 30, "id": "x"},
        "{not json",
        '{"nums": [1, 2], "target": ',
        [1, 2, 3],
        {"target": 5},
        {"nums": [1, 2], "target": None},
        {"nums": "1,2", "target": 3},
        {"nums": [1, True], "target": 3},
        {"nums": [1, 2.5], "target": 3},
        {"nums": [1], "target": 1},
        {"nums": [1, 2, 3, 4, 5, 6, 7], "target": 1},
        {"nums": [0, 2], "target": 2},
        {"nums": [1, 1_000_000], "target": 2},
        {"nums": [1, 2], "target": "3"},
        {"nums": [1, 2], "target": 3.0},
        {"nums": [1, 2], "target": False},
    ]
    path = _write_jsonl(tmp_path / "mixed.jsonl", [*lines[:3], "", *lines[3:]])  # blank: ignored
    result = load_rows(COUNTDOWN, str(path))
    assert result.rows == [
        {"nums": [1, 2, 3], "target": 6},
        {"nums": [10, 20], "target": 30, "id": "x"},
    ]
    assert result.total_seen == len(lines)
    assert result.skipped == Counter(
        {
            "bad_json": 2,
            "not_an_object": 1,
            "missing_field:nums": 1,
            "missing_field:target": 1,
            "bad_type:nums": 3,
            "bad_length:nums": 2,
            "out_of_range:nums": 2,
            "bad_type:target": 3,
        }
    )
    assert result.summary().startswith(f"loaded 2 rows from {path}; skipped 15: bad_type:nums=3, ")


def test_apigen_skip_reasons_counted(tmp_path: Path) -> None:
    def bad(**changes: object) -> dict:
        row = dict(GOOD_XLAM, **changes)
        return {k: v for k, v in row.items() if v is not ...}

    lines: list[object] = [
        GOOD_XLAM,
        dict(GOOD_XLAM, tools=TOOLS, answers=ANSWERS, id=None),  # parsed lists, no id
        bad(query=...),
        bad(tools=...),
        bad(answers=...),
        bad(query=3),
        bad(query="   "),
        bad(tools="[{'name': 'add'}]"),  # Python repr, not JSON
        bad(answers="[{name: add}]"),
        bad(tools=json.dumps({"name": "add"})),  # an object, not a list
        bad(tools=json.dumps([{"description": "no name"}])),
        bad(tools=json.dumps(["add"])),
        bad(answers=json.dumps([{"name": "add", "arguments": "a=1"}])),
        bad(answers=json.dumps([{"arguments": {}}])),
        bad(tools="[]"),
        bad(answers="[]"),
        bad(answers=json.dumps([{"name": "sub", "arguments": {"a": 1}}])),
        "[1, 2",
    ]
    result = load_rows(APIGEN, str(_write_jsonl(tmp_path / "xlam.jsonl", lines)))
    assert len(result.rows) == 2
    assert result.rows[0]["id"] == 1 and "id" not in result.rows[1]
    assert result.rows[0]["tools"] == result.rows[1]["tools"] == TOOLS
    assert result.skipped == Counter(
        {
            "missing_field:query": 1,
            "missing_field:tools": 1,
            "missing_field:answers": 1,
            "bad_type:query": 1,
            "empty_field:query": 1,
            "tools_not_json": 1,
            "answers_not_json": 1,
            "bad_shape:tools": 3,
            "bad_shape:answers": 2,
            "empty_field:tools": 1,
            "empty_field:answers": 1,
            "answer_tool_not_in_tools": 1,
            "bad_json": 1,
        }
    )
    assert result.total_seen == len(lines)


def test_all_bad_rows_raise_with_reasons(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "bad.jsonl", [{"nums": [1, 2]}, "nope", {"nums": "x", "target": 1}]
    )
    with pytest.raises(DataError) as info:
        load_rows(COUNTDOWN, str(path))
    message = str(info.value)
    assert str(path) in message
    for reason in ("missing_field:target=1", "bad_json=1", "bad_type:nums=1"):
        assert reason in message


def test_empty_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        load_rows(COUNTDOWN, str(path))


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "rows.jsonl"
    with pytest.raises(DataSourceNotFound, match=r"nope/rows\.jsonl"):
        load_rows(COUNTDOWN, str(missing))
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for generic callers
        load_rows(COUNTDOWN, "./no/such/dir")
    with pytest.raises(DataSourceNotFound, match=r"rows\.parquet"):
        load_rows(COUNTDOWN, "rows.parquet")


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("nums,target\n")
    with pytest.raises(DataError, match="unsupported"):
        load_rows(COUNTDOWN, str(path))


# --- options --------------------------------------------------------------------------------


def test_limit_shuffle_dedupe(sample_data: Path) -> None:
    source = str(sample_data / "countdown_sample.jsonl")
    full = load_rows(COUNTDOWN, source).rows
    limited = load_rows(COUNTDOWN, source, limit=10)
    assert limited.rows == full[:10] and limited.total_seen == 10
    shuffled = load_rows(COUNTDOWN, source, shuffle=True, seed=1, limit=10).rows
    assert shuffled == load_rows(COUNTDOWN, source, shuffle=True, seed=1, limit=10).rows
    assert shuffled != full[:10]
    assert all(row in full for row in shuffled)
    with pytest.raises(ValueError):
        load_rows(COUNTDOWN, source, limit=0)


def test_dedupe(tmp_path: Path) -> None:
    row = {"nums": [1, 2], "target": 3}
    path = _write_jsonl(tmp_path / "dup.jsonl", [row, row, {"nums": [2, 1], "target": 3}])
    assert len(load_rows(COUNTDOWN, str(path)).rows) == 3
    deduped = load_rows(COUNTDOWN, str(path), dedupe=True)
    assert len(deduped.rows) == 2 and deduped.skipped == Counter({"duplicate": 1})


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"nums": [1, 2], "target": 3}, {"nums": [4], "target": 4}]))
    result = load_rows(COUNTDOWN, str(path))
    assert result.rows == [{"nums": [1, 2], "target": 3}]
    assert result.skipped == Counter({"bad_length:nums": 1})


# --- parquet and Hugging Face datasets ------------------------------------------------------


def test_parquet_round_trip(tmp_path: Path, sample_data: Path) -> None:
    for task, name in ((COUNTDOWN, "countdown_sample.jsonl"), (APIGEN, "xlam_sample.jsonl")):
        raw = [json.loads(line) for line in (sample_data / name).read_text().splitlines()]
        path = _write_parquet(tmp_path / f"{task.name}.parquet", raw)
        from_parquet = load_rows(task, str(path))
        assert from_parquet.rows == load_rows(task, str(sample_data / name)).rows
        assert not from_parquet.skipped


def test_parquet_shard_directory_selects_split(tmp_path: Path) -> None:
    rows = generate_problems(30, seed=4)
    root = tmp_path / "snapshot"
    _write_parquet(root / "data" / "train-00000-of-00002.parquet", rows[:10])
    _write_parquet(root / "data" / "train-00001-of-00002.parquet", rows[10:20])
    _write_parquet(root / "data" / "test-00000-of-00001.parquet", rows[20:])
    train = load_rows(COUNTDOWN, str(root))
    assert train.rows == rows[:20]
    assert load_rows(COUNTDOWN, str(root), split="test").rows == rows[20:]
    with pytest.raises(DataError, match="validation"):
        load_rows(COUNTDOWN, str(root), split="validation")
    # Untagged shards are all read, whatever the split.
    plain = tmp_path / "plain"
    _write_parquet(plain / "a.parquet", rows[:5])
    _write_parquet(plain / "b.parquet", rows[5:8])
    assert load_rows(COUNTDOWN, str(plain), split="test").rows == rows[:8]


def test_local_hf_dataset_offline(
    tmp_path: Path, sample_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    # A local dataset repository layout (JSON lines under data/), read by datasets.load_dataset.
    repo = tmp_path / "xlam-local"
    (repo / "data").mkdir(parents=True)
    lines = (sample_data / "xlam_sample.jsonl").read_text().splitlines()
    (repo / "data" / "train.jsonl").write_text("\n".join(lines[:40]) + "\n")
    (repo / "data" / "test.jsonl").write_text("\n".join(lines[40:50]) + "\n")
    cache = str(tmp_path / "hf-cache")
    train = load_rows(APIGEN, str(repo), cache_dir=cache)
    expected = load_rows(APIGEN, str(sample_data / "xlam_sample.jsonl"), limit=50).rows
    assert train.rows == expected[:40]
    assert load_rows(APIGEN, str(repo), split="test", cache_dir=cache).rows == expected[40:]
    shuffled = load_rows(APIGEN, str(repo), shuffle=True, seed=0, limit=5, cache_dir=cache)
    assert len(shuffled.rows) == 5 and all(row in expected for row in shuffled.rows)

    # A DatasetDict written by save_to_disk.
    saved = tmp_path / "saved"
    problems = generate_problems(12, seed=9)
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(problems[:8]),
            "test": datasets.Dataset.from_list(problems[8:]),
        }
    ).save_to_disk(str(saved))
    assert load_rows(COUNTDOWN, str(saved), split="test").rows == problems[8:]
    with pytest.raises(DataError, match="split"):
        load_rows(COUNTDOWN, str(saved), split="validation")


# --- generator source -----------------------------------------------------------------------


def test_generator_source() -> None:
    source = (
        "gen:countdown?n=25&seed=3&min_nums=3&max_nums=4&max_num=99"
        "&min_target=10&max_target=100&ops=+-*/"
    )
    result = load_rows(COUNTDOWN, source)
    assert result.rows == generate_problems(25, seed=3)
    assert result.source == source and not result.skipped
    assert load_rows(COUNTDOWN, "gen:countdown?seed=3", limit=7).rows == result.rows[:7]
    easy = load_rows(COUNTDOWN, "gen:countdown?n=20&seed=0&min_nums=2&max_nums=3&max_num=9&ops=+-")
    assert all(set(row["solution"]) <= set("0123456789+-() ") for row in easy.rows)


def test_generator_source_errors() -> None:
    assert parse_gen_source("gen:countdown?ops=%2B-&n=2") == ("countdown", {"ops": "+-", "n": 2})
    with pytest.raises(ValueError, match="'bogus'"):
        load_rows(COUNTDOWN, "gen:countdown?n=5&bogus=1")
    with pytest.raises(ValueError, match="'n'"):
        load_rows(COUNTDOWN, "gen:countdown?n=five")
    with pytest.raises(ValueError, match="unknown generator"):
        load_rows(COUNTDOWN, "gen:sudoku?n=5")
    with pytest.raises(ValueError, match="apigen"):
        load_rows(APIGEN, "gen:countdown?n=5")

"""APIGen verifier: every xLAM sample row accepted in both templates; corruptions rejected."""

from __future__ import annotations

import copy
import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from rrr.verifiers.apigen import FORMAT, PARAMETERS, RESPONSE_CAP, TOOL_CHOICE, verify

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "data"  # the bundled samples (data/SOURCES.md); never outside the repo
TEMPLATES = ("qwen", "llama")


@lru_cache(maxsize=1)
def rows() -> list[dict[str, Any]]:
    """The bundled xLAM sample, ``tools``/``answers`` kept as the original JSON strings."""
    with open(SAMPLE_DATA / "xlam_sample.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def gold(row: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(row["answers"])


def render(calls: list[dict[str, Any]], template: str) -> str:
    """Gold-format calls ({name, arguments}) as a model would write them in ``template``."""
    if template == "qwen":
        blocks = [f"<tool_call>\n{json.dumps(call)}\n</tool_call>" for call in calls]
        return "<think>The user needs these tools.</think>\n" + "\n".join(blocks)
    objects = [{"name": c["name"], "parameters": c["arguments"]} for c in calls]
    return json.dumps(objects[0] if len(objects) == 1 else objects)


def shuffled(value: Any, rng: random.Random) -> Any:
    """``value`` with every dict's key order shuffled (list order kept: it is meaningful)."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def failures(cases: list[tuple[str, dict[str, Any], str]], expected: str | None) -> list:
    """Cases (response, row, template) whose verdict error differs from ``expected``."""
    out = []
    for response, row, template in cases:
        verdict = verify(response, row["answers"], row["tools"], template)
        if verdict.error != expected or verdict.correct != (expected is None):
            out.append((row["id"], template, response[:120], verdict))
    return out


# --- the whole sample, rendered correctly -------------------------------------------------------


def test_sample_shape() -> None:
    assert len(rows()) == 300
    assert sum(len(gold(row)) > 1 for row in rows()) > 100


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_sample_row_verifies_when_rendered_correctly(template: str) -> None:
    cases = [(render(gold(row), template), row, template) for row in rows()]
    assert failures(cases, None) == []


@pytest.mark.parametrize("template", TEMPLATES)
def test_shuffled_calls_and_keys_still_verify(template: str) -> None:
    rng = random.Random(1234)
    cases = []
    for row in rows():
        calls = shuffled(gold(row), rng)
        rng.shuffle(calls)
        cases.append((render(calls, template), row, template))
    assert failures(cases, None) == []


def test_parsed_lists_work_like_json_strings() -> None:
    for row in rows()[:50]:
        parsed = {**row, "answers": gold(row), "tools": json.loads(row["tools"])}
        assert failures([(render(gold(row), "qwen"), parsed, "qwen")], None) == []


@pytest.mark.parametrize(
    "wrap",
    [
        "```json\n{}\n```",
        "Here is the call:\n```json\n{}\n```\nDone.",
        "```\n{}\n```",
        "<|python_tag|>{}<|eom_id|>",
        "  {}  \n",
    ],
)
def test_llama_tolerated_wrappers(wrap: str) -> None:
    row = rows()[0]
    response = wrap.replace("{}", render(gold(row), "llama"))
    assert verify(response, row["answers"], "[]", "llama").correct


def test_llama_accepts_arguments_key_and_single_item_list() -> None:
    row = next(r for r in rows() if len(gold(r)) == 1)
    as_arguments = json.dumps(gold(row)[0])
    assert verify(as_arguments, row["answers"], row["tools"], "llama").correct
    assert verify(f"[{as_arguments}]", row["answers"], row["tools"], "llama").correct


# --- corruptions ---------------------------------------------------------------------------------


def corrupt_value(value: Any) -> Any:
    """A value that is certainly different under the matching rule."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    if isinstance(value, dict):
        return {**value, "x": 1}
    return "x"


def rows_with_arguments() -> list[dict[str, Any]]:
    return [row for row in rows() if gold(row)[0]["arguments"]]


@pytest.mark.parametrize("template", TEMPLATES)
def test_wrong_tool_name_is_tool_choice(template: str) -> None:
    cases = []
    for row in rows():
        calls = gold(row)
        calls[0]["name"] += "_v2"
        cases.append((render(calls, template), row, template))
    assert failures(cases, TOOL_CHOICE) == []


@pytest.mark.parametrize("template", TEMPLATES)
def test_dropped_or_extra_call_is_tool_choice(template: str) -> None:
    cases = []
    for row in rows():
        calls = gold(row)
        cases.append((render([*calls, calls[0]], template), row, template))  # extra call
        if len(calls) > 1:
            cases.append((render(calls[1:], template), row, template))  # dropped call
    assert len(cases) > 400
    assert failures(cases, TOOL_CHOICE) == []


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("kind", ["value", "missing", "extra"])
def test_wrong_arguments_are_parameters(template: str, kind: str) -> None:
    cases = []
    for row in rows_with_arguments():
        calls = copy.deepcopy(gold(row))
        arguments = calls[0]["arguments"]
        key = sorted(arguments)[0]
        if kind == "value":
            arguments[key] = corrupt_value(arguments[key])
        elif kind == "missing":
            del arguments[key]
        else:
            arguments["unexpected_argument"] = 1
        cases.append((render(calls, template), row, template))
    assert len(cases) > 250
    assert failures(cases, PARAMETERS) == []


@pytest.mark.parametrize("template", TEMPLATES)
def test_broken_json_is_format(template: str) -> None:
    cases = []
    for row in rows():
        response = render(gold(row), template)
        cut = response.rindex("}")  # drop the final closing brace
        cases.append((response[:cut] + response[cut + 1 :], row, template))
    assert failures(cases, FORMAT) == []


@pytest.mark.parametrize(
    ("template", "response"),
    [
        ("qwen", "I will call the search tool now."),
        ("qwen", ""),
        ("qwen", '{"name": "basic_search", "arguments": {}}'),  # JSON but no tags
        ("qwen", '<tool_call>{"name": "f", "arguments": {}}'),  # unclosed tag
        ("qwen", '<tool_call>["f"]</tool_call>'),
        ("qwen", '<tool_call>{"name": 3, "arguments": {}}</tool_call>'),
        ("qwen", '<tool_call>{"name": "f", "arguments": [1]}</tool_call>'),
        ("qwen", '<tool_call>{"name": "f", "parameters": {}}</tool_call>'),
        ("llama", "I will call the search tool now."),
        ("llama", "[]"),
        ("llama", "42"),
        ("llama", '{"name": "f"}'),
        ("llama", '[{"name": "f", "parameters": {}}, 3]'),
        ("llama", '```json\n{"name": "f", "parameters": {}}'),
        ("llama", "\ud800\x00"),
        ("llama", '{"name": "f", "parameters": {}} {"name": "f", "parameters": {}}'),
        ("qwen", '<tool_call>{"name": "f", "arguments": {}} trailing</tool_call>'),
    ],
)
def test_no_call_is_format(template: str, response: str) -> None:
    verdict = verify(response, [{"name": "f", "arguments": {}}], "[]", template)
    assert verdict.error == FORMAT
    assert not verdict.correct


def test_truncated_trailing_call_is_format() -> None:
    gold_calls = [{"name": "f", "arguments": {}}]
    complete = render(gold_calls, "qwen")
    assert verify(complete, gold_calls, "[]", "qwen").correct
    truncated = complete + '\n<tool_call>\n{"name": "f", "argu'
    assert verify(truncated, gold_calls, "[]", "qwen").error == FORMAT


def test_oversized_response_is_format() -> None:
    call = render([{"name": "f", "arguments": {}}], "qwen")
    assert verify(call, [{"name": "f", "arguments": {}}], "[]", "qwen").correct
    padded = " " * RESPONSE_CAP + call
    assert verify(padded, [{"name": "f", "arguments": {}}], "[]", "qwen").error == FORMAT


# --- the value rule -------------------------------------------------------------------------------


def _qwen(arguments: Any) -> str:
    return render([{"name": "f", "arguments": arguments}], "qwen")


@pytest.mark.parametrize(
    ("gold_arguments", "predicted", "equal"),
    [
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1.5}, {"a": 1.5}, True),
        ({"a": [1, 2]}, {"a": [1.0, 2.0]}, True),
        ({"a": {"b": 0}}, {"a": {"b": -0.0}}, True),
        ({"a": True}, {"a": 1}, False),
        ({"a": 1}, {"a": True}, False),
        ({"a": False}, {"a": 0}, False),
        ({"a": [True]}, {"a": [1]}, False),
        ({"a": {"b": True}}, {"a": {"b": 1.0}}, False),
        ({"a": 1}, {"a": "1"}, False),
        ({"a": None}, {"a": "null"}, False),
        ({"a": [1, 2]}, {"a": [2, 1]}, False),
        ({"a": ["b", True]}, {"a": True}, False),
        ({"a": []}, {"a": {}}, False),
        ({"a": "true", "b": 1}, {"a": "true", "b": 1.0}, True),
        ({"a": "false"}, {"a": False}, False),
        ({"a": [1, "x"]}, {"a": [1.0, "x"]}, True),
    ],
)
def test_value_matching_rule(gold_arguments: dict, predicted: dict, equal: bool) -> None:
    gold_calls = [{"name": "f", "arguments": gold_arguments}]
    verdict = verify(_qwen(predicted), gold_calls, "[]", "qwen")
    assert verdict.correct is equal
    assert verdict.error == (None if equal else PARAMETERS)


def test_duplicate_calls_are_a_multiset() -> None:
    gold_calls = [{"name": "f", "arguments": {"x": 1}}, {"name": "f", "arguments": {"x": 2}}]
    same = [gold_calls[1], gold_calls[0]]
    assert verify(render(same, "qwen"), gold_calls, "[]", "qwen").correct
    twice = [gold_calls[0], gold_calls[0]]
    assert verify(render(twice, "qwen"), gold_calls, "[]", "qwen").error == PARAMETERS


def test_empty_gold_means_no_call_expected() -> None:
    assert verify("Sorry, no tool can do that.", [], "[]", "qwen").correct
    assert verify("Sorry, no tool can do that.", "[]", "[]", "llama").correct
    called = render([{"name": "f", "arguments": {}}], "qwen")
    assert verify(called, [], "[]", "qwen").error == TOOL_CHOICE


def test_unknown_template_and_bad_gold_raise() -> None:
    with pytest.raises(ValueError):
        verify("x", [], "[]", "mistral")
    with pytest.raises(ValueError):
        verify("x", '[{"name": "f"}]', "[]", "qwen")


@pytest.mark.parametrize(
    "value", ["```", "```python\nprint(1)\n```", "see ``` and ```json {} ```", "x```"]
)
def test_llama_fence_inside_a_json_string_is_data(value: str) -> None:
    """A ``` inside an argument value (code passed to a tool) is no fence around the call: the
    call is right as written (found by the round-trip fuzz test with arguments {'```': None})."""
    answers = [{"name": "run", "arguments": {"code": value, value: None}}]
    response = json.dumps({"name": "run", "parameters": {"code": value, value: None}})
    assert verify(response, answers, "[]", "llama").correct

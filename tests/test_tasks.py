"""Tasks: Appendix A prompt texts, message structure per family, family detection, verify()."""

from __future__ import annotations

import json

import pytest

import rrr.verifiers.apigen
import rrr.verifiers.countdown
from rrr.core.tasks import (
    ApiGenTask,
    CountdownTask,
    RowError,
    detect_family,
    get_task,
    installed_tasks,
)
from rrr.core.tasks import apigen as ag
from rrr.core.tasks import countdown as cd
from rrr.core.tasks import countdown_gen as cdg

TOOLS = [
    {
        "name": "vimeo",
        "description": "Checks if a given Vimeo username is available using the Toolbench "
        "RapidAPI service.",
        "parameters": {
            "username": {
                "description": "The Vimeo username to check for availability.",
                "type": "str",
                "default": "username",
            }
        },
    },
    {
        "name": "get_user_pins",
        "description": "Retrieves the Pinterest pins of a specified user.",
        "parameters": {
            "username": {
                "description": "The Pinterest username whose pins are to be fetched.",
                "type": "str",
                "default": "0869178429hau",
            }
        },
    },
]
ANSWERS = [{"name": "vimeo", "arguments": {"username": "john_doe_artist"}}]
QUERY = "Check if the Vimeo username 'john_doe_artist' is available."
# The paper's §4.1 sample datapoint, as xLAM stores it (tools/answers are JSON strings).
XLAM_RAW = {"id": 7, "query": QUERY, "tools": json.dumps(TOOLS), "answers": json.dumps(ANSWERS)}
TOOL_LINES = "\n".join(json.dumps(tool) for tool in TOOLS)


def _apigen_row(family: str = "qwen") -> dict:
    return get_task("apigen", family).validate_row(XLAM_RAW)


# --- exact prompt texts (Appendix A) --------------------------------------------------------


def test_countdown_prompts_are_the_paper_text() -> None:
    task = get_task("countdown", "qwen")
    row = task.validate_row({"nums": [4, 73, 4, 23], "target": 76})
    system, user = task.first_messages(row)
    assert system == {
        "role": "system",
        "content": "Please reason step by step, and put your final answer within \\boxed{}.",
    }
    assert user["role"] == "user"
    assert user["content"] == (
        "Using the numbers [4, 73, 4, 23] create an equation that equals 76. You can use basic "
        "arithmetic operations (+, -, *, /) and each number can only be used once.\n"
        "Please reason step by step, and put your final answer within \\boxed{}."
    )
    # The model sees a single backslash (the paper's LaTeX shows it escaped).
    assert "\\boxed{}" in user["content"] and "\\\\boxed" not in user["content"]
    assert task.reflection_message(row) == {
        "role": "user",
        "content": "You tried solving the problem and got the wrong answer. Reflect on what went "
        "wrong and write a short explanation that will help you do better next time.",
    }
    # A.2: "we repeat the user message from above".
    assert task.retry_messages(row) == [user]
    assert "→" not in cd.COUNTDOWN_USER_TEMPLATE and "\n\n" not in cd.COUNTDOWN_USER_TEMPLATE


def test_countdown_prompt_is_family_independent() -> None:
    row = {"nums": [1, 2, 3], "target": 6}
    qwen, llama = get_task("countdown", "qwen"), get_task("countdown", "llama")
    assert qwen.first_messages(row) == llama.first_messages(row)
    assert qwen.retry_messages(row) == llama.retry_messages(row)


def test_apigen_reflection_prompt_is_the_paper_text() -> None:
    expected = (
        "You tried performing the task, but failed in generating the correct tool call. Reflect "
        "on what went wrong and write a short explanation that will help you do better next time."
    )
    assert expected == ag.APIGEN_REFLECTION_PROMPT
    for family in ("qwen", "llama"):
        assert get_task("apigen", family).reflection_message(_apigen_row()) == {
            "role": "user",
            "content": expected,
        }


def test_qwen_apigen_system_prompt_exact() -> None:
    task = get_task("apigen", "qwen")
    system, user = task.first_messages(_apigen_row())
    assert system["role"] == "system"
    assert system["content"] == (
        "You are a helpful assistant that can answer questions and help with tasks.\n\n"
        "# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{TOOL_LINES}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        "<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n'
        "</tool_call>"
    )
    assert user == {"role": "user", "content": QUERY}


def test_llama_apigen_prompts_exact() -> None:
    task = get_task("apigen", "llama")
    system, user = task.first_messages(_apigen_row())
    assert system == {
        "role": "system",
        "content": "When you receive a tool call response, use the output to format an answer "
        "to the original user question.\n\n"
        "You are a helpful assistant with tool calling capabilities.",
    }
    assert user["role"] == "user"
    assert user["content"] == (
        "Given the following functions, please respond with a JSON for a function call with its "
        "proper arguments that best answers the given prompt.\n\n"
        'Respond in the format {"name": function name, "parameters": dictionary of argument name '
        "and its value}. Do not use variables.\n\n"
        f"{TOOL_LINES}\n\n"
        f"Question: {QUERY}"
    )


@pytest.mark.parametrize(
    "template",
    [
        cd.COUNTDOWN_SYSTEM_PROMPT,
        cd.COUNTDOWN_USER_TEMPLATE,
        cd.COUNTDOWN_REFLECTION_PROMPT,
        ag.QWEN_SYSTEM_TEMPLATE,
        ag.LLAMA_SYSTEM_PROMPT,
        ag.LLAMA_USER_TEMPLATE,
        ag.APIGEN_REFLECTION_PROMPT,
    ],
)
def test_prompt_constants_have_no_pdf_artifacts(template: str) -> None:
    # PDF extraction arrows and LaTeX escaping must not leak into what the model sees.
    for artifact in ("→", "↪", "↳", "\\\\", "`", "  "):
        assert artifact not in template
    assert template == template.strip()


# --- message structure per family -----------------------------------------------------------


def test_qwen_apigen_retry_resends_system_and_query() -> None:
    task = get_task("apigen", "qwen")
    row = _apigen_row()
    retry = task.retry_messages(row)
    assert [m["role"] for m in retry] == ["system", "user"]
    assert retry == task.first_messages(row)


def test_llama_apigen_retry_is_one_user_turn() -> None:
    task = get_task("apigen", "llama")
    row = _apigen_row()
    retry = task.retry_messages(row)
    assert [m["role"] for m in retry] == ["user"]
    assert retry[0] == task.first_messages(row)[1]  # full user turn: tools + "Question: ..."
    bare = get_task("apigen", "llama", retry_user="query").retry_messages(row)
    assert bare == [{"role": "user", "content": QUERY}]
    with pytest.raises(ValueError):
        get_task("apigen", "llama", retry_user="nope")


def test_tools_appear_one_per_line() -> None:
    row = _apigen_row()
    for family in ("qwen", "llama"):
        content = "\n".join(m["content"] for m in get_task("apigen", family).first_messages(row))
        lines = content.split("\n")
        for tool in TOOLS:
            assert json.dumps(tool) in lines  # a whole line each, parseable on its own
        tool_lines = [line for line in lines if line.startswith('{"name": "')]
        assert [json.loads(line)["name"] for line in tool_lines] == ["vimeo", "get_user_pins"]


@pytest.mark.parametrize("name", ["countdown", "apigen"])
@pytest.mark.parametrize("family", ["qwen", "llama"])
def test_full_conversation_order(name: str, family: str) -> None:
    task = get_task(name, family)
    row = _apigen_row() if name == "apigen" else {"nums": [1, 2, 3], "target": 6}
    convo = task.retry_conversation(row, "first try", "my reflection")
    roles = [m["role"] for m in convo]
    first = task.first_messages(row)
    assert convo[: len(first)] == first
    assert convo[len(first)] == {"role": "assistant", "content": "first try"}
    assert convo[len(first) + 1] == task.reflection_message(row)
    assert convo[len(first) + 2] == {"role": "assistant", "content": "my reflection"}
    assert convo[len(first) + 3 :] == task.retry_messages(row)
    assert roles[0] == "system" and roles[-1] == "user"
    for msg in convo:
        assert set(msg) == {"role", "content"} and isinstance(msg["content"], str)


# --- family detection and registry ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("Qwen/Qwen2-7B-Instruct", "qwen"),
        ("Qwen/Qwen2.5-1.5B-Instruct", "qwen"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama"),
        ("meta-llama/Llama-3.2-3B-Instruct", "llama"),
        ("microsoft/Phi-3.5-mini-instruct", "llama"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "qwen"),
        ("/home/philip/checkpoints/step-100", "qwen"),  # "phi" inside a word is not Phi
        ("/models/qwen2-ft/checkpoint-50", "qwen"),
    ],
)
def test_detect_family(name: str, family: str) -> None:
    assert detect_family(name) == family
    assert detect_family(name, "auto") == family


def test_detect_family_override() -> None:
    assert detect_family("Qwen/Qwen2-7B-Instruct", "llama") == "llama"
    assert detect_family("microsoft/Phi-3.5-mini-instruct", "qwen") == "qwen"
    with pytest.raises(ValueError, match="override"):
        detect_family("Qwen/Qwen2-7B-Instruct", "mistral")


def test_get_task_registry() -> None:
    assert {"countdown", "apigen"} <= set(installed_tasks())
    assert isinstance(get_task("countdown", "qwen"), CountdownTask)
    task = get_task("apigen", "llama")
    assert isinstance(task, ApiGenTask) and task.family == "llama" and task.name == "apigen"
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess", "qwen")
    with pytest.raises(ValueError, match="family"):
        get_task("countdown", "gpt")
    with pytest.raises(TypeError):
        get_task("countdown", "qwen", bogus=1)


def test_error_categories_match_verifiers_in_paper_table_order() -> None:
    # Table 5 columns, Table 4 columns.
    assert CountdownTask.error_categories == ("invalid_equation", "wrong_numbers", "missed_target")
    assert ApiGenTask.error_categories == ("tool_choice", "parameters", "format")
    assert set(CountdownTask.error_categories) == set(rrr.verifiers.countdown.ERRORS)
    assert set(ApiGenTask.error_categories) == set(rrr.verifiers.apigen.ERRORS)


# --- validation, keys, verify ---------------------------------------------------------------


def test_validate_rows_normalise() -> None:
    row = _apigen_row()
    assert row == {"query": QUERY, "tools": TOOLS, "answers": ANSWERS, "id": 7}
    # Already-parsed lists are accepted and give the same row.
    parsed = dict(XLAM_RAW, tools=TOOLS, answers=ANSWERS)
    assert get_task("apigen", "qwen").validate_row(parsed) == row
    countdown = get_task("countdown", "qwen")
    assert countdown.validate_row({"nums": (3, 4), "target": 7, "extra": 1}) == {
        "nums": [3, 4],
        "target": 7,
    }
    # numpy values (pandas/parquet callers) become plain ints, so rows stay JSON-serialisable.
    np = pytest.importorskip("numpy")
    row = countdown.validate_row({"nums": np.array([3, 4]), "target": np.int64(7)})
    assert row == {"nums": [3, 4], "target": 7} and type(row["target"]) is int
    assert json.dumps(row)
    with pytest.raises(RowError) as info:
        countdown.validate_row({"nums": [True, 2], "target": 3})
    assert info.value.reason == "bad_type:nums"


def test_row_keys_are_stable_and_distinct() -> None:
    task = get_task("apigen", "qwen")
    row = _apigen_row()
    assert task.row_key(row) == task.row_key(json.loads(json.dumps(row)))
    assert task.row_key(row) == get_task("apigen", "llama").row_key(row)
    other = dict(row, query=QUERY + "?")
    assert task.row_key(other) != task.row_key(row)
    countdown = get_task("countdown", "qwen")
    assert countdown.row_key({"nums": [1, 2, 3], "target": 6}) == "countdown:1,2,3->6"
    assert countdown.row_key({"nums": [1, 2, 3], "target": 5}) != "countdown:1,2,3->6"


def test_countdown_verify_delegates() -> None:
    task = get_task("countdown", "qwen")
    row = task.validate_row({"nums": [4, 73, 4, 23], "target": 76})
    solution = cdg.solve(row["nums"], row["target"])
    assert solution is not None
    good = task.verify(row, f"Let me think.\n\\boxed{{{solution}}}")
    assert good.correct and good.error is None
    bad = task.verify(row, "\\boxed{4 + 73 + 4 + 23}")
    assert not bad.correct and bad.error == "missed_target"
    assert task.verify(row, "\\boxed{4 + 73}").error == "wrong_numbers"


def test_apigen_verify_delegates_per_family() -> None:
    gold_call = json.dumps(ANSWERS[0])
    qwen = get_task("apigen", "qwen")
    row = _apigen_row()
    assert qwen.verify(row, f"<tool_call>\n{gold_call}\n</tool_call>").correct
    wrong_tool = json.dumps({"name": "get_user_pins", "arguments": {"username": "john"}})
    verdict = qwen.verify(row, f"<tool_call>\n{wrong_tool}\n</tool_call>")
    assert not verdict.correct and verdict.error == "tool_choice"
    llama = get_task("apigen", "llama")
    llama_call = json.dumps({"name": "vimeo", "parameters": {"username": "john_doe_artist"}})
    assert llama.verify(row, llama_call).correct
    assert llama.verify(row, "I cannot help with that.").error == "format"

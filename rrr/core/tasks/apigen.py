"""APIGen / xLAM function calling (paper §4.1, prompts from Appendix A.1).

Normalised row: ``{"query": str, "tools": list[dict], "answers": list[dict]}`` plus ``id`` when
present. xLAM stores ``tools``/``answers`` as JSON strings; we keep the *parsed* lists (the
verifier accepts lists, and prompts re-serialise each tool with ``json.dumps``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar

import rrr.verifiers.apigen
from rrr.core.tasks.base import Message, Row, RowError, Task, message, require
from rrr.verifiers import Verdict

# Appendix A.1 writes "{List of tools, each on a new line}" where the tools go.
TOOLS_PLACEHOLDER = "{List of tools, each on a new line}"

# Paper A.1, "Qwen 2 models": system prompt. The PDF's "↪" continuation is joined; backticks
# (inline code in the PDF) and code fences are dropped. The paper's extracted text shows the
# heading as "Tools"; we use "# Tools" as in Qwen's own tool template, which the rest of this
# prompt reproduces verbatim (the PDF-to-text conversion strips "#" heading markers).
QWEN_SYSTEM_TEMPLATE = (
    "You are a helpful assistant that can answer questions and help with tasks.\n"
    "\n"
    "# Tools\n"
    "\n"
    "You may call one or more functions to assist with the user query.\n"
    "\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    "{List of tools, each on a new line}\n"
    "</tools>\n"
    "\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)

# Paper A.1, "Llama 3.1 and Phi 3.5 models": system prompt (Meta's recommended Llama 3.1 JSON
# tool-calling prompt; the blank line between the sentences is as in Meta's template).
LLAMA_SYSTEM_PROMPT = (
    "When you receive a tool call response, use the output to format an answer to the "
    "original user question.\n"
    "\n"
    "You are a helpful assistant with tool calling capabilities."
)

# Paper A.1, Llama/Phi user turn: instructions + tools + "Question: " + the dataset query.
QUERY_PLACEHOLDER = "{query}"
LLAMA_USER_TEMPLATE = (
    "Given the following functions, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt.\n"
    "\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name '
    "and its value}. Do not use variables.\n"
    "\n"
    "{List of tools, each on a new line}\n"
    "\n"
    "Question: {query}"
)

# Paper §4.1 / A.1: self-reflection prompt after a failed tool call.
APIGEN_REFLECTION_PROMPT = (
    "You tried performing the task, but failed in generating the correct tool call. "
    "Reflect on what went wrong and write a short explanation that will help you "
    "do better next time."
)

# How the Llama/Phi second attempt is set up. A.1 says "we prompt with just the user query";
# we read "user query" as the whole user turn of the first attempt (instructions + tools +
# question), since the query alone would drop the tools the model must choose from. "query"
# sends the bare dataset query instead.
RETRY_USER_MODES: tuple[str, ...] = ("full", "query")


def format_tools(tools: list[dict[str, Any]]) -> str:
    """A.1 "{List of tools, each on a new line}": one compact JSON object per line."""
    return "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)


def qwen_system_prompt(tools: list[dict[str, Any]]) -> str:
    return QWEN_SYSTEM_TEMPLATE.replace(TOOLS_PLACEHOLDER, format_tools(tools))


def llama_user_prompt(query: str, tools: list[dict[str, Any]]) -> str:
    # Substitute the query last so a query containing the tools placeholder stays literal.
    return LLAMA_USER_TEMPLATE.replace(TOOLS_PLACEHOLDER, format_tools(tools)).replace(
        QUERY_PLACEHOLDER, query
    )


def _parse_json_list(raw: Mapping[str, Any], field: str) -> list[Any]:
    value = require(raw, field)
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RowError(f"{field}_not_json", str(exc)) from None
    if not isinstance(value, (list, tuple)):
        raise RowError(f"bad_shape:{field}", f"not a list: {type(value).__name__}")
    if not value:
        raise RowError(f"empty_field:{field}")
    return list(value)


def _check_tools(tools: list[Any]) -> list[dict[str, Any]]:
    for tool in tools:
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise RowError("bad_shape:tools", "each tool must be an object with a string name")
    return [dict(tool) for tool in tools]


def _check_answers(answers: list[Any]) -> list[dict[str, Any]]:
    for answer in answers:
        if (
            not isinstance(answer, Mapping)
            or not isinstance(answer.get("name"), str)
            or not isinstance(answer.get("arguments"), Mapping)
        ):
            raise RowError("bad_shape:answers", "each answer must be {name: str, arguments: {}}")
    return [dict(answer) for answer in answers]


class ApiGenTask(Task):
    """Function calling on APIGen/xLAM rows with the family-specific A.1 prompts."""

    name: ClassVar[str] = "apigen"
    # Table 4 column order: tool choice, parameter, format errors.
    error_categories: ClassVar[tuple[str, ...]] = ("tool_choice", "parameters", "format")

    def __init__(self, family: str = "qwen", *, retry_user: str = "full") -> None:
        super().__init__(family)
        if retry_user not in RETRY_USER_MODES:
            raise ValueError(f"retry_user must be one of {RETRY_USER_MODES}, got {retry_user!r}")
        self.retry_user = retry_user

    def __repr__(self) -> str:
        return f"ApiGenTask(family={self.family!r}, retry_user={self.retry_user!r})"

    def validate_row(self, raw: Mapping[str, Any]) -> Row:
        if not isinstance(raw, Mapping):
            raise RowError("not_an_object")
        query = require(raw, "query")
        if not isinstance(query, str):
            raise RowError("bad_type:query", type(query).__name__)
        if not query.strip():
            raise RowError("empty_field:query")
        tools = _check_tools(_parse_json_list(raw, "tools"))
        answers = _check_answers(_parse_json_list(raw, "answers"))
        tool_names = {tool["name"] for tool in tools}
        for answer in answers:
            if answer["name"] not in tool_names:
                raise RowError("answer_tool_not_in_tools", answer["name"])
        row: Row = {"query": query, "tools": tools, "answers": answers}
        if raw.get("id") is not None:
            row["id"] = raw["id"]
        return row

    def first_messages(self, row: Row) -> list[Message]:
        if self.family == "qwen":
            # A.1 Qwen 2: tools live in the system prompt; the query follows "as role user".
            return [
                message("system", qwen_system_prompt(row["tools"])),
                message("user", row["query"]),
            ]
        # A.1 Llama 3.1 / Phi 3.5: fixed system prompt; tools and query in the user turn.
        return [
            message("system", LLAMA_SYSTEM_PROMPT),
            message("user", llama_user_prompt(row["query"], row["tools"])),
        ]

    def reflection_message(self, row: Row) -> Message:
        return message("user", APIGEN_REFLECTION_PROMPT)

    def retry_messages(self, row: Row) -> list[Message]:
        if self.family == "qwen":
            # A.1 Qwen 2: "we again prompt with the system prompt and user query".
            return self.first_messages(row)
        # A.1 Llama/Phi: "we prompt with just the user query" (see RETRY_USER_MODES).
        if self.retry_user == "query":
            return [message("user", row["query"])]
        return [message("user", llama_user_prompt(row["query"], row["tools"]))]

    def verify(self, row: Row, response: str) -> Verdict:
        return rrr.verifiers.apigen.verify(response, row["answers"], row["tools"], self.family)

    def row_key(self, row: Row) -> str:
        # Content hash, not the dataset id: ids differ between xLAM redistributions, and xLAM
        # has rows sharing a query but not tools/answers.
        canonical = json.dumps(
            [row["query"], row["tools"], row["answers"]], sort_keys=True, ensure_ascii=False
        )
        return "apigen:" + hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:16]

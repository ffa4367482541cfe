"""APIGen / xLAM function-calling verifier: exact match of the predicted calls to the gold calls.

Templates (how the model writes its calls):

* ``"qwen"``: every ``<tool_call>...</tool_call>`` block holds one JSON object
  ``{"name": str, "arguments": {...}}``; several blocks are several parallel calls (the paper's
  appendix A.1). Text outside the blocks is ignored. An unclosed ``<tool_call>`` is a format
  error (a truncated generation should not be rewarded).
* ``"llama"``: the whole response is one JSON object ``{"name": str, "parameters": {...}}`` or a
  JSON list of them. Tolerated: ``"arguments"`` instead of ``"parameters"`` (``"parameters"`` wins
  if both are present), the JSON inside a Markdown code fence (the last fence, looked for only
  when the whole response is not JSON, so a ``` inside a string value is data; prose around the
  fence is ignored), and Llama's ``<|python_tag|>`` prefix / ``<|eom_id|>``/``<|eot_id|>``
  suffix.
* Extra keys in a call object (e.g. ``"type"``) are ignored in both templates.

Matching: the multiset of predicted calls must equal the multiset of gold calls. Order of calls
and of keys does not matter; values compare exactly, numbers by value (``1 == 1.0``), but a bool
is not a number (``True != 1``), recursively through lists and dicts.

Errors (the paper's Table 4): ``format`` (no parsable call, broken JSON, wrong shape),
``tool_choice`` (multiset of called names differs from the gold names), ``parameters`` (names
right, some argument name or value wrong). If the gold list is empty (an irrelevance row), the
correct response makes no call: no ``<tool_call>`` block (qwen) or anything that is not a call
(llama, including ``[]``); a response that does call is ``tool_choice``.

Bounds: a response longer than ``RESPONSE_CAP`` characters is a ``format`` error (rejected, not
truncated, so a cut cannot turn garbage into a call); ``json.loads`` failures of every kind
(``RecursionError`` from deep nesting, ``ValueError`` from over-long integer strings) are
``format``; canonicalisation stops at ``DEPTH_CAP`` levels (deeper values never match).
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Hashable
from functools import lru_cache
from typing import Any, NamedTuple

from rrr.verifiers.verdict import Verdict

FORMAT = "format"
TOOL_CHOICE = "tool_choice"
PARAMETERS = "parameters"
ERRORS: tuple[str, ...] = (FORMAT, TOOL_CHOICE, PARAMETERS)

TEMPLATES: tuple[str, ...] = ("qwen", "llama")

RESPONSE_CAP = 200_000
"""Longest response judged; longer is a ``format`` error."""

DEPTH_CAP = 32
"""Deepest list/dict nesting compared; xLAM arguments are a few levels deep at most."""

_OPEN = "<tool_call>"
_CLOSE = "</tool_call>"
_FENCE = "```"
_LLAMA_PREFIXES = ("<|python_tag|>",)
_LLAMA_SUFFIXES = ("<|eom_id|>", "<|eot_id|>")


class _Format(Exception):
    """The response is not a well-formed call list; the message is the reason."""


class _Marker:
    """Unique tags that keep canonical lists, dicts, bools and NaNs apart from JSON data.

    JSON values can never contain these objects, so e.g. the list ``["b", true]`` can never
    collide with the canonical form of the bool ``true``.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_LIST = _Marker("list")
_DICT = _Marker("dict")
_BOOL = _Marker("bool")
_NAN = _Marker("nan")
_TRUE_FORM = (_BOOL, True)
_FALSE_FORM = (_BOOL, False)
_NAN_FORM = (_NAN,)
_PLAIN = frozenset({str, int, type(None)})  # types whose canonical form is the value itself

# The standard library's JSON scanner (the C one where available), called directly: for the
# short objects of a tool call, json.loads' Python wrappers (argument checks, two whitespace
# regex matches, exception translation) cost about 3x the scan itself.
_SCAN = json.scanner.make_scanner(json.JSONDecoder())

RawCall = tuple[str, dict]  # (tool name, arguments as parsed)
Call = tuple[str, Hashable]  # (tool name, canonical arguments)


class _Gold(NamedTuple):
    """Gold calls in both forms, computed once per distinct answer string.

    ``plain`` says the gold holds no bool, NaN or over-deep value; then, for a prediction whose
    JSON text has no ``true``/``false`` literal either, Python's own ``==`` on the parsed values
    IS the matching rule (it differs only on bool-vs-number and NaN), so the fast C-level
    comparison can be used instead of building canonical forms.
    """

    raw: tuple[RawCall, ...]
    canonical: tuple[Call, ...]
    names: list[str]
    plain: bool


def verify(response: str, answers: str | list, tools: str | list, template: str) -> Verdict:
    """Judge ``response`` against the gold ``answers`` (JSON string or parsed list).

    ``template`` is ``"qwen"`` or ``"llama"``; anything else raises ``ValueError``, as does
    malformed gold data (both are programming or data errors, not model output). ``tools`` is
    only used to explain ``tool_choice`` errors. Never raises on any ``response``.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")
    gold = _gold_from_json(answers) if type(answers) is str else _gold_from_list(answers)
    try:
        return _judge(response, gold, tools, template)
    except Exception as exc:  # last resort: a verifier bug must not kill a reward loop
        return Verdict.fail(FORMAT, f"verifier error: {type(exc).__name__}")


def _judge(response: str, gold: _Gold, tools: str | list, template: str) -> Verdict:
    """Parse, then compare names, then arguments."""
    if not isinstance(response, str):
        return Verdict.fail(FORMAT, f"response is {type(response).__name__}, not str")
    if len(response) > RESPONSE_CAP:
        return Verdict.fail(FORMAT, f"response longer than {RESPONSE_CAP} characters")
    try:
        extracted, predicted = _PARSERS[template](response)
    except _Format as exc:
        if not gold.raw and template == "llama":
            # Llama answers in prose when it makes no call; only a call could be wrong here.
            return Verdict.ok(detail="no call expected, none made")
        return Verdict.fail(FORMAT, str(exc))
    if not predicted:
        if gold.raw:
            return Verdict.fail(FORMAT, "no call made", extracted or None)
        return Verdict.ok(extracted or None, "no call expected, none made")
    return _compare(predicted, gold, tools, extracted)


def _compare(predicted: list[RawCall], gold: _Gold, tools: str | list, text: str) -> Verdict:
    """Multiset comparison: names first (``tool_choice``), then whole calls (``parameters``).

    Sorted name lists and ``list.remove`` beat ``Counter`` for the handful of calls a row has;
    a response with thousands of calls fails the (cheap) name check before the quadratic part.
    """
    names = [predicted[0][0]] if len(predicted) == 1 else sorted([name for name, _ in predicted])
    if names != gold.names:
        return Verdict.fail(TOOL_CHOICE, _names_detail(names, gold.names, tools), text)
    if gold.plain and "true" not in text and "false" not in text:
        # JSON spells bools only as true/false, so neither side holds one: == is exact here.
        pending: list[Any] = list(gold.raw)
        calls: list[Any] = predicted
    else:
        pending = list(gold.canonical)
        calls = [(name, _canonical(arguments, 0)) for name, arguments in predicted]
    for call in calls:
        try:
            pending.remove(call)
        except ValueError:
            return Verdict.fail(PARAMETERS, f"arguments differ for {call[0]!r:.100}", text)
    return Verdict.ok(text)


def _names_detail(predicted: list[str], gold: list[str], tools: str | list) -> str:
    """Explain a ``tool_choice`` error: missing / extra names, and names not among the tools."""
    extra = list(predicted)
    missing = []
    for name in gold:
        if name in extra:
            extra.remove(name)
        else:
            missing.append(name)
    known = _tool_names(tools)
    unknown = [name for name in extra[:20] if name not in known]
    detail = f"extra calls {extra[:20]}, missing calls {missing}"
    return f"{detail}; not in tools: {unknown}" if unknown else detail


def _tool_names(tools: str | list) -> frozenset[str]:
    """Names of the offered tools, best effort (empty if ``tools`` is malformed)."""
    if isinstance(tools, str):
        return _tool_names_from_json(tools)
    return _names_of(tools)


@lru_cache(maxsize=1024)
def _tool_names_from_json(tools: str) -> frozenset[str]:
    try:
        return _names_of(json.loads(tools))
    except (ValueError, RecursionError):
        return frozenset()


def _names_of(tools: Any) -> frozenset[str]:
    if not isinstance(tools, list):
        return frozenset()
    return frozenset(
        t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
    )


# --- gold -----------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _gold_from_json(answers: str) -> _Gold:
    """Gold from its JSON text, cached: RL samples each prompt many times."""
    return _gold_from_list(json.loads(answers))


def _gold_from_list(answers: list) -> _Gold:
    if not isinstance(answers, list):
        raise ValueError(f"gold answers must be a list, got {type(answers).__name__}")
    raw = []
    for answer in answers:
        if not (
            isinstance(answer, dict)
            and isinstance(answer.get("name"), str)
            and isinstance(answer.get("arguments"), dict)
        ):
            raise ValueError(f"malformed gold answer {answer!r:.200}")
        raw.append((answer["name"], answer["arguments"]))
    return _Gold(
        raw=tuple(raw),
        canonical=tuple((name, _canonical(arguments, 0)) for name, arguments in raw),
        names=sorted(name for name, _ in raw),
        plain=all(_is_plain(arguments, 0) for _, arguments in raw),
    )


def _is_plain(value: Any, depth: int) -> bool:
    """True if ``value`` holds only exact JSON types, no bool, no NaN, within ``DEPTH_CAP``."""
    kind = type(value)
    if kind is str or kind is int or value is None:
        return True
    if kind is float:
        return value == value
    if depth >= DEPTH_CAP:
        return False
    if kind is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    if kind is list:
        return all(_is_plain(v, depth + 1) for v in value)
    return False  # bool, or a subclass from a gold list built in Python: use canonical forms


# --- parsing model output -------------------------------------------------------------------


def _parse_qwen(response: str) -> tuple[str, list[RawCall]]:
    """Every ``<tool_call>`` block, in order (none: an empty list).

    ``str.find`` keeps this linear; a ``<tool_call>(.*?)</tool_call>`` regex would rescan to the
    end of the text once per unclosed opening tag.
    """
    blocks: list[str] = []
    position = response.find(_OPEN)
    while position >= 0:
        body = position + len(_OPEN)
        end = response.find(_CLOSE, body)
        if end < 0:
            raise _Format("unclosed <tool_call>")
        blocks.append(response[body:end].strip())
        position = response.find(_OPEN, end + len(_CLOSE))
    calls = [_call(_loads(block), "arguments", None) for block in blocks]
    return "\n".join(blocks), calls


def _parse_llama(response: str) -> tuple[str, list[RawCall]]:
    """The response (or its last code fence) as one call object or a list of them."""
    text = _strip_llama_tokens(response.strip())
    try:
        parsed = _loads(text)
    except _Format:
        # Only a response that is not JSON as a whole is searched for a fence: a ``` inside a
        # JSON string (code in an argument) is data, not a fence.
        if _FENCE not in text:
            raise
        text = _last_fence(text)
        parsed = _loads(text)
    if isinstance(parsed, dict):
        return text, [_call(parsed, "parameters", "arguments")]
    if isinstance(parsed, list):
        return text, [_call(item, "parameters", "arguments") for item in parsed]
    raise _Format(f"JSON {type(parsed).__name__} is not a call or a list of calls")


def _strip_llama_tokens(text: str) -> str:
    if not (text.startswith(_LLAMA_PREFIXES) or text.endswith(_LLAMA_SUFFIXES)):
        return text  # the common case, in two C calls
    for prefix in _LLAMA_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :].lstrip()
    for suffix in _LLAMA_SUFFIXES:
        if text.endswith(suffix):
            text = text[: -len(suffix)].rstrip()
    return text


def _last_fence(text: str) -> str:
    """Content of the last complete ```` ``` ```` fence, minus a ``json`` language tag."""
    end = text.rfind(_FENCE)
    start = text.rfind(_FENCE, 0, end)
    if start < 0:
        raise _Format("unclosed code fence")
    body = text[start + len(_FENCE) : end]
    if body[:4].lower() == "json":
        body = body[4:]
    return body.strip()


def _loads(text: str) -> Any:
    """Parse ``text`` (already stripped) as exactly one JSON value; any failure is ``_Format``.

    Failures include ``StopIteration`` (no value), ``JSONDecodeError``, ``RecursionError`` (deep
    nesting) and the ``ValueError`` int() raises for a literal over Python's digit limit.
    """
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        raise _Format("invalid JSON: no value") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise _Format(f"invalid JSON: {type(exc).__name__}") from None
    if end != len(text):
        raise _Format("invalid JSON: extra data after the value")
    return value


def _call(obj: Any, key: str, alternative: str | None) -> RawCall:
    """One call as (name, arguments); ``alternative`` is a tolerated argument key."""
    if not isinstance(obj, dict):
        raise _Format(f"call is a JSON {type(obj).__name__}, not an object")
    name = obj.get("name")
    if not isinstance(name, str):
        raise _Format("call has no string 'name'")
    arguments = obj.get(key)
    if arguments is None and alternative is not None:
        arguments = obj.get(alternative)
    if not isinstance(arguments, dict):
        raise _Format(f"call {name!r:.50} has no '{key}' object")
    return name, arguments


_PARSERS = {"qwen": _parse_qwen, "llama": _parse_llama}


# --- canonical values -----------------------------------------------------------------------


def _canonical(value: Any, depth: int) -> Hashable:
    """A hashable form whose equality is the matching rule (see module docstring).

    ints and floats stay themselves (``1 == 1.0`` and they hash alike); bools, lists and dicts
    are tagged with private markers so ``True`` never equals ``1``; NaN equals NaN. Exact-type
    checks first because JSON only produces exact types and this is the verifier's hot path;
    the ``isinstance`` fallback serves gold lists built in Python with subclasses.
    """
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
    if kind is float:
        return value if value == value else _NAN_FORM
    if kind is bool:
        return _TRUE_FORM if value else _FALSE_FORM
    if depth >= DEPTH_CAP:
        return object()  # unique: equal to nothing, so too-deep values never match
    # Plain scalars are inlined below: most argument values are strings and ints, and skipping a
    # Python call per value is most of this function's cost.
    if kind is dict:
        return (
            _DICT,
            frozenset(
                [
                    (k, v if type(v) in _PLAIN else _canonical(v, depth + 1))
                    for k, v in value.items()
                ]
            ),
        )
    if kind is list:
        return (_LIST, *[v if type(v) in _PLAIN else _canonical(v, depth + 1) for v in value])
    return _canonical_subclass(value, depth)


def _canonical_subclass(value: Any, depth: int) -> Hashable:
    """``_canonical`` for subclasses of the JSON types (never reached for parsed JSON)."""
    if isinstance(value, bool):
        return _TRUE_FORM if value else _FALSE_FORM
    if isinstance(value, float):
        return float(value) if value == value else _NAN_FORM
    if isinstance(value, str | int):
        return value
    if isinstance(value, dict):
        return (_DICT, frozenset([(k, _canonical(v, depth + 1)) for k, v in value.items()]))
    if isinstance(value, list | tuple):
        return (_LIST, *[_canonical(item, depth + 1) for item in value])
    return value

"""JSON in replies: found wherever it stands, repaired when cut off, read by meaning.

Every object or array in a reply (fenced or bare) is decoded; trailing commas are forgiven.
One cut off at the end is repaired by closing its open string and brackets, or by dropping
its last, incomplete member. Keys are matched by meaning ("short_term_memory", "Updated
memory", "summary" ...), at any nesting depth.
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Iterable, Iterator

from .clean import clean_block, normalise_label

_MAX_JSON_DEPTH = 32  # deeper nesting is not a reply to our prompts; skip it
_MAX_REPAIR_TRIES = 40
_MAX_REPAIRS_PER_TEXT = 3
_MAX_JSON_STARTS = 24

_JSON_START = re.compile(r"[{\[]")
_FENCED_BLOCK = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*(?=[}\]])")
# The one scanner of JSON text: a whole string (closed, or cut off by the end of the text,
# maybe right after its escaping backslash), or a bracket or comma outside strings.
_JSON_TOKEN = re.compile(r'"(?:\\.|[^"\\])*(?:(?P<closed>")|(?P<cut_escape>\\)?\Z)|[{}\[\],]', re.DOTALL)


def _json_end(text: str, start: int) -> int | None:
    """Where the JSON value that opens at `start` ends; None if the text ends first.

    A mismatched bracket or nesting past `_MAX_JSON_DEPTH` ends the walk there, so that the
    decoder rejects the value.
    """
    stack: list[str] = []
    pairs = {"}": "{", "]": "["}
    for token in _JSON_TOKEN.finditer(text, start):
        char = token.group()[0]
        if char in "{[":
            stack.append(char)
            if len(stack) > _MAX_JSON_DEPTH:
                return token.end()
        elif char in "}]":
            if not stack or stack[-1] != pairs[char]:
                return token.end()
            stack.pop()
            if not stack:
                return token.end()
    return None


def _without_trailing_commas(text: str) -> str:
    """Drop commas that directly precede a closing bracket, outside strings."""
    kept, position = [], 0
    for token in _JSON_TOKEN.finditer(text):
        trailing = _TRAILING_COMMA.match(text, token.start()) if token.group() == "," else None
        if trailing:
            kept.append(text[position : trailing.start()])
            position = trailing.end()
    kept.append(text[position:])
    return "".join(kept)


def _loads(text: str) -> object | None:
    """json.loads, forgiving trailing commas; None if it is not JSON."""
    for attempt in (text, _without_trailing_commas(text) if _TRAILING_COMMA.search(text) else None):
        if attempt is None:
            break
        try:
            return json.loads(attempt)
        except (ValueError, RecursionError):
            continue
    return None


def _repair_truncated(fragment: str) -> object | None:
    """Decode a JSON value cut off at the end: close it, or drop its incomplete last member.

    A list item cut mid-string is dropped rather than closed (half an instruction is not an
    instruction); a cut string value of an object is kept (half a memory is still memory).
    """
    # One pass records where the text may be cut (before a comma, after an opener) and which
    # brackets are open there, so each try below is a single json.loads. The open brackets
    # are a linked list of (bracket, rest) so that keeping them per cut costs nothing.
    cuts: deque[tuple[int, tuple | None, bool]] = deque(maxlen=_MAX_REPAIR_TRIES)
    stack: tuple | None = None
    depth = 0
    ends_in_string = ends_after_escape = False
    for token in _JSON_TOKEN.finditer(fragment):
        char = token.group()[0]
        if char == '"':
            if token.group("closed") is None:  # the last token: a string the cut ends inside
                ends_in_string, ends_after_escape = True, token.group("cut_escape") is not None
        elif char == ",":
            cuts.append((token.start(), stack, False))
        elif char in "{[":
            stack, depth = (char, stack), depth + 1
            if depth > _MAX_JSON_DEPTH:
                return None
            cuts.append((token.end(), stack, False))
        elif char in "}]" and stack is not None:
            stack, depth = stack[1], depth - 1
    cuts.append((len(fragment), stack, ends_in_string))
    for cut, open_brackets, cut_in_string in reversed(cuts):
        prefix = fragment[:cut].rstrip()
        if cut_in_string:
            if open_brackets is not None and open_brackets[0] == "[":
                continue
            if ends_after_escape:
                prefix = prefix[:-1]  # a lone backslash would escape the closing quote
            prefix += '"'
        prefix = re.sub(r",\s*$", "", prefix)
        closing = []
        while open_brackets is not None:
            closing.append("}" if open_brackets[0] == "{" else "]")
            open_brackets = open_brackets[1]
        value = _loads(prefix + "".join(closing))
        if value is not None:
            return value
    return None


def json_values(text: str) -> tuple[list[object], bool]:
    """Every JSON object or array found in the reply, and whether one had to be repaired."""
    decoder = json.JSONDecoder()
    values: list[object] = []
    truncated = False
    candidates = [match.group(1) for match in _FENCED_BLOCK.finditer(text)] + [text]
    for candidate in candidates:
        position, tries, repairs = 0, 0, 0
        while tries < _MAX_JSON_STARTS:
            match = _JSON_START.search(candidate, position)
            if match is None:
                break
            start, tries = match.start(), tries + 1
            try:
                value, end = decoder.raw_decode(candidate, start)
            except (ValueError, RecursionError):
                value, end = None, None
            if value is None:
                end = _json_end(candidate, start)
                if end is not None:
                    value = _loads(candidate[start:end])
                elif repairs < _MAX_REPAIRS_PER_TEXT:
                    repairs += 1
                    value = _repair_truncated(candidate[start:])
                    if value is not None:
                        truncated = True
                        end = len(candidate)
            if isinstance(value, (dict, list)) and value:
                values.append(value)
                position = end
            else:
                position = start + 1
        if values:
            break  # a fenced block held JSON: the prose around it is not a second source
    return values, truncated


def as_text(value: object, depth: int = 0) -> str | None:
    """A JSON value as plain text: lists become lines, objects become 'Key: value' lines."""
    if value is None or isinstance(value, bool) or depth > _MAX_JSON_DEPTH:
        return None
    if isinstance(value, str):
        text = clean_block(value)
        return text or None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        items = [as_text(item, depth + 1) for item in value]
        text = "\n".join(item for item in items if item)
        return text or None
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            item_text = as_text(item, depth + 1)
            if item_text:
                heading = normalise_label(str(key)).capitalize()
                separator = "\n" if "\n" in item_text else " "
                lines.append(f"{heading}:{separator}{item_text}" if heading else item_text)
        return "\n".join(lines) or None
    return None


def dicts_breadth_first(values: Iterable[object], max_depth: int = 3) -> Iterator[dict]:
    """The objects among `values` and inside them, shallowest first, down to `max_depth`."""
    level = [value for value in values if isinstance(value, (dict, list))]
    for _ in range(max_depth):
        next_level: list[object] = []
        for value in level:
            if isinstance(value, dict):
                yield value
                next_level.extend(v for v in value.values() if isinstance(v, (dict, list)))
            else:
                next_level.extend(v for v in value if isinstance(v, (dict, list)))
        level = next_level


def find_json_field(values: list[object], names: tuple[str, ...]) -> tuple[str, object] | None:
    """The (key, value) whose key means one of `names`; shallower objects and better names win.

    A key whose value is an object ({"memory_update": {...}}) is a wrapper: a match inside it
    is preferred, and the wrapper is the answer only when nothing inside matches.
    """
    wrapper = None
    for mapping in dicts_breadth_first(values):
        keys = {normalise_label(str(key)): key for key in mapping}
        for name in names:
            if name in keys:
                value = mapping[keys[name]]
                if not isinstance(value, dict):
                    return name, value
                wrapper = wrapper or (name, value)
    return wrapper

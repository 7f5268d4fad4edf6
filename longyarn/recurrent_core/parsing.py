"""Reading model replies: tolerant of messy formats, never raising, always ending complete.

Real models rarely answer exactly as asked. They wrap labels in markdown (`**Reason:**`,
`## Short-term memory`), answer in JSON instead of labels (bare, or in a ```json fence with
prose around it), use synonyms ("Summary", "Rationale", "Options"), number their lists in
every way ("1.", "2)", "- ", "Instruction 3:", "Option B:"), and stop mid-reply. Each
`parse_*` function reads what can be read and returns None (or fewer items) for the rest;
`resolve_step_outputs` then fills every gap with a stated fallback, so a step always ends
with a short-term memory, a reason and three instructions, plus a sentence for the user
for each gap it filled.

How a reply is read, in order:
1. `<think>...</think>` blocks (reasoning models) are dropped, and so is everything before a
   lone `</think>` (a chat template that opened the block itself); the reply ends at a leaked
   chat-template token (`<|eot_id|>`, `<|im_end|>` ...); trailing talk to the user ("Let me
   know if ...") is dropped.
2. JSON: every object or array in the reply (fenced or bare) is decoded; one cut off at the
   end is repaired by closing its open string and brackets, or by dropping its last,
   incomplete member. Keys are matched by meaning ("short_term_memory", "Updated memory",
   "summary" ...), at any nesting depth.
3. Labelled text: a line that starts with a known label, however decorated, opens a section
   that runs to the next known label. A final line that is only the start of a label (a reply
   cut off inside "Reas...") is dropped.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter, deque
from dataclasses import dataclass
from typing import Iterable, Iterator

__all__ = [
    "BibleParse",
    "MemoryParse",
    "StepOutputs",
    "clean_paragraph",
    "describe_problem",
    "ends_mid_sentence",
    "trim_to_last_sentence",
    "instructions_from_paragraph",
    "parse_bible",
    "parse_choice",
    "parse_instructions",
    "parse_memory_update",
    "resolve_step_outputs",
]


@dataclass(frozen=True)
class BibleParse:
    title: str | None
    outline: str | None
    truncated: bool = False  # the reply's JSON was cut off and repaired


@dataclass(frozen=True)
class MemoryParse:
    short_term_memory: str | None
    reason: str | None
    truncated: bool = False  # the reply's JSON was cut off and repaired


@dataclass(frozen=True)
class StepOutputs:
    """Everything a step needs after its paragraph; complete even when the model was not."""

    short_term_memory: str
    memory_reason: str
    instructions: tuple[str, str, str]
    fallbacks: tuple[str, ...]  # one sentence for the user per gap that was filled


# ---- what the labels and keys mean ------------------------------------------------------
# Normalised (lowercase words), best match first: when a reply has both "Memory:" and
# "Updated memory:", the updated one wins.

MEMORY_NAMES = (
    "updated short term memory", "new short term memory", "short term memory", "updated memory",
    "new memory", "memory update", "updated summary", "short memory", "output memory", "stm",
    "memory", "summary",
)
REASON_NAMES = (
    "reason", "memory reason", "reason for update", "reasoning", "rationale", "rational",
    "explanation", "why", "what changed", "changes",
)
TITLE_NAMES = (
    "title", "story title", "novel title", "book title", "name of the novel", "name of the story",
    "name",
)
# Too common as words inside a memory or a paragraph to end a section there, so they count as
# labels only where they are expected (a title's "Name:") or when numbered ("Plan 2:").
_BIBLE_ONLY_LABELS = frozenset({"name"})
_NUMBERED_ONLY_LABELS = frozenset(
    {"option", "choice", "direction", "plan", "next step", "step", "candidate", "possibility",
     "idea", "suggestion", "path"}
)
OUTLINE_NAMES = (
    "outline", "story outline", "plot outline", "story bible", "bible", "synopsis", "overview",
    "summary",
)
# Parts of a story bible that a model may give as separate labels instead of one outline.
BIBLE_PART_NAMES = (
    "setting", "world", "main characters", "characters", "cast", "arc", "story arc", "plot",
    "conflict", "themes", "theme", "tone", "ending",
)
INSTRUCTION_ITEM_NAMES = (
    "instruction", "option", "choice", "direction", "plan", "next step", "step", "candidate",
    "possibility", "idea", "suggestion", "path", "output instruction",
)
INSTRUCTION_LIST_NAMES = (
    "instructions", "next instructions", "options", "choices", "directions", "plans",
    "next steps", "candidates", "possibilities", "ideas", "suggestions", "paths",
    "output instructions",
)
PARAGRAPH_NAMES = (
    "paragraph", "next paragraph", "new paragraph", "output paragraph", "extended paragraph",
    "continuation",
)
NOTE_NAMES = ("note", "notes", "author s note", "comment", "comments")

# Every label that ends the section before it.
_ALL_LABELS = frozenset(
    MEMORY_NAMES + REASON_NAMES + TITLE_NAMES + OUTLINE_NAMES + INSTRUCTION_ITEM_NAMES
    + INSTRUCTION_LIST_NAMES + PARAGRAPH_NAMES + NOTE_NAMES
) - _BIBLE_ONLY_LABELS
_BIBLE_LABELS = _ALL_LABELS | _BIBLE_ONLY_LABELS
# Labels after which a writer's reply is no longer the paragraph. A "Note:" line may be story
# (a character reads a note), so only a decorated one ("**Note:**", "(Note:") ends the prose.
_AFTER_PARAGRAPH_LABELS = frozenset(
    MEMORY_NAMES + REASON_NAMES + INSTRUCTION_ITEM_NAMES + INSTRUCTION_LIST_NAMES
)
_DECORATED_NOTE = re.compile(r"^\s*[(\[*_#]+\s*(?:author'?s\s+)?notes?\b", re.IGNORECASE)

# ---- fallback sentences (shown to the user) --------------------------------------------

MEMORY_KEPT = (
    "The model's memory update could not be read, so the previous short-term memory was kept."
)
MEMORY_STARTED = (
    "The model's memory update could not be read, so the short-term memory was started from "
    "the new paragraph."
)
MEMORY_CUT = "The model's memory update was cut off, so the part that arrived was kept."
REASON_MISSING = "The model gave no reason for its memory update."
DEFAULT_REASON = "(The model gave no reason for this update.)"
KEPT_REASON = "(The previous short-term memory was kept: the model's update could not be read.)"
STARTED_REASON = "(Started from the new paragraph: the model's update could not be read.)"
PARAGRAPH_CUT = (
    "The model reached its length limit mid-sentence, so the paragraph was cut back to its "
    "last full sentence."
)
PARAGRAPH_CUT_KEPT = "The model reached its length limit, so the paragraph ends mid-sentence."
INSTRUCTIONS_DERIVED = (
    "The model's next instructions could not be read, so three were derived from the new "
    "paragraph."
)
PROSE_ONLY_OUTPUTS = (
    "This model writes story prose only, so the short-term memory carries the new paragraph's "
    "first and last sentences forward and the next instructions were derived from the paragraph."
)
PROSE_ONLY_REASON = "(Carried forward from the paragraph: this model writes story prose only.)"
PROSE_ONLY_BIBLE = (
    "This model writes story prose only, so the title was taken from the premise and the "
    "premise serves as the outline."
)
PROSE_ONLY_CHOICE = "This model writes story prose only, so the first instruction was taken."
# Fallbacks that describe the model rather than one step: front ends say each once, since
# the same sentence after every paragraph would bury the story it is about.
MODEL_FALLBACKS = frozenset({PROSE_ONLY_OUTPUTS, PROSE_ONLY_BIBLE, PROSE_ONLY_CHOICE})


def fallbacks_to_tell(sentences: Iterable[str], told: set[str]) -> list[str]:
    """The fallback sentences a front end should say: all, except a `MODEL_FALLBACKS` one said
    before (recorded in `told`, which this updates)."""
    fresh = []
    for sentence in sentences:
        if sentence in MODEL_FALLBACKS:
            if sentence in told:
                continue
            told.add(sentence)
        fresh.append(sentence)
    return fresh

MEMORY_WORD_LIMIT = 150
GIST_SENTENCE_WORDS = 40


# ---- text helpers --------------------------------------------------------------------

# A closed block anywhere; an unclosed one only where reasoning starts, at the reply's start
# (a literal "<thinking>" later in prose must not swallow the rest).
_THINK_BLOCK = re.compile(
    r"<(think|thinking)>.*?</\1>|\A\s*<(?:think|thinking)>.*\Z", re.DOTALL | re.IGNORECASE
)
# A closing tag with no opening one: the server's chat template opened the block in the prompt
# (DeepSeek-R1 distills, QwQ), so everything before it is reasoning.
_THINK_CLOSE = re.compile(r"</(?:think|thinking)>", re.IGNORECASE)
# Chat-template tokens that a misconfigured server lets through as text: the reply ends there.
_TURN_MARKER = re.compile(
    r"<\|(?:eot_id|eom_id|im_end|im_start|end|endoftext|end_of_text|start_header_id|"
    r"end_header_id|assistant|user|system)\|>|</s>|\[/?INST\]|<(?:end|start)_of_turn>",
    re.IGNORECASE,
)
_MARKER_ROLE = re.compile(r"\A\s*(?:assistant|model)?[ \t]*\n", re.IGNORECASE)
_FENCE_LINE = re.compile(r"^[ \t]*(?:```|~~~)[\w+-]*[ \t]*$", re.MULTILINE)
_FENCED_BLOCK = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")
_QUOTE_PAIRS = {'"': '"', "“": "”", "«": "»", "'": "'", "‘": "’"}


def _prepare(text: object) -> str:
    """The reply as text, without reasoning blocks and with plain newlines."""
    if not isinstance(text, str):
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    return _without_turn_markers(text).strip()


def _without_turn_markers(text: str) -> str:
    """The text up to the first leaked chat-template token (leading ones are skipped)."""
    while (match := _TURN_MARKER.match(text.lstrip())) is not None:
        text = text.lstrip()[match.end() :]
        role = _MARKER_ROLE.match(text)
        if role:
            text = text[role.end() :]
    match = _TURN_MARKER.search(text)
    return text[: match.start()] if match else text


# A trailing block of talk to the user ("Let me know if ...") rather than part of the answer.
# A story's last paragraph may begin "Let me know when...", "Shall I tell you..." or "I read
# the last paragraph of her letter", so only unmistakable remarks count: an opener that asks
# the user what to do next or names the text as the model's output, in a short block. Markup
# may precede it, a quotation mark may not (dialogue is the story's).
_REMARK_OPENER = re.compile(
    r"""^[\s*_(\[]*(?:
        let\ me\ know\ if | feel\ free\ to | hope\ this\ helps
        | (?:would\ you\ like\ me\ to | do\ you\ want\ me\ to | if\ you(?:'d|’d|\ would)\ like\ me\ to
            | (?:shall|should)\ i)
          \ (?:continue|go\ on|keep\ going|write|rewrite|revise|change|adjust|expand|shorten|tweak|modify)\b
        | (?:approximate\ )?word\ count\b | \d{2,4}\ words\)
        | (?:this|the\ above)\ (?:paragraph|continuation)\ (?:builds|continues|keeps|maintains|sets
            |introduces|captures|follows|adds|focuses|shows|ends|uses)\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# In replies that are not prose (memory, instructions, outline), a remark about the answer.
_ANSWER_REMARK_OPENER = re.compile(
    r"""^[\s*_(\[]*(?:
        (?:this|the\ above|in\ this)\ (?:paragraph|continuation|update|outline|summary|memory)\b
        | (?:these|all\ three|each\ of\ these)\ (?:three\ )?(?:directions|options|instructions
            |choices|ideas|suggestions|continuations|paths)\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_FIRST_PERSON_OPENER = re.compile(r"^[\s*_(\[]*(?:i|i've|i’ve|i\ have|i'm|i’m|here)\b", re.IGNORECASE)
# With a first-person opener: words only a note about the model's own output uses.
_ABOUT_THE_WRITING = re.compile(
    r"\b(?:this\ paragraph|the\ paragraph\ above|this\ continuation|word\ count|as\ requested"
    r"|you\ requested|the\ story\ so\ far|your\ (?:instructions?|directions?|prompt))\b",
    re.IGNORECASE | re.VERBOSE,
)
# Remarks are a sentence or two; a longer block is more likely the story's.
REMARK_MAX_WORDS = 50
_BLOCK_BREAK = re.compile(r"\n[ \t]*(?:(?:-{3,}|\*{3,}|_{3,}|={3,})[ \t]*)?\n(?:[ \t]*\n)*")


def _is_commentary(block: str, prose: bool) -> bool:
    block = block.strip()
    if len(block.split()) > REMARK_MAX_WORDS:
        return False
    if _REMARK_OPENER.match(block) or (not prose and _ANSWER_REMARK_OPENER.match(block)):
        return True
    return bool(_FIRST_PERSON_OPENER.match(block) and _ABOUT_THE_WRITING.search(block))


def _without_trailing_commentary(text: str, *, prose: bool = False) -> str:
    """Drop blocks of commentary that follow the answer (never the only block).

    `prose`: the answer is story text, so remarks about "these options" or "this memory" are
    read as story.
    """
    blocks = _BLOCK_BREAK.split(text)
    while len(blocks) > 1 and (not blocks[-1].strip() or _is_commentary(blocks[-1], prose)):
        blocks.pop()
    if len(blocks) == len(_BLOCK_BREAK.split(text)):
        return text
    # Rejoin from the original text, so separators inside the kept part stay as they were.
    breaks = list(_BLOCK_BREAK.finditer(text))
    return text[: breaks[len(blocks) - 1].start()]


def _normalise_label(label: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", label.lower()))


def _strip_enclosing_quotes(text: str) -> str:
    """Remove quotes that enclose the whole text, and only then."""
    if len(text) >= 2 and text[0] in _QUOTE_PAIRS and text[-1] == _QUOTE_PAIRS[text[0]]:
        opening, closing = text[0], _QUOTE_PAIRS[text[0]]
        inner = text[1:-1]
        if opening == closing:
            enclosed = opening not in inner
        else:
            enclosed = opening not in inner and closing not in inner
        if enclosed and inner.strip():
            return inner.strip()
    return text


def _strip_emphasis(text: str) -> str:
    """Remove markdown emphasis around the whole text, or a stray unpaired "**" at an edge."""
    for marker in ("**", "__", "*", "_"):
        inner = text[len(marker) : -len(marker)]
        if text.startswith(marker) and text.endswith(marker) and inner.strip() and marker not in inner:
            return inner.strip()
    for marker in ("**", "__"):
        if text.count(marker) % 2 == 1:
            if text.startswith(marker):
                return text[len(marker) :].strip()
            if text.endswith(marker):
                return text[: -len(marker)].strip()
    return text


def _clean_value(text: str) -> str:
    """A one-piece value (an instruction, a title): no markdown edges, quotes or runs of space."""
    text = _WHITESPACE.sub(" ", text).strip()
    for _ in range(3):
        previous = text
        text = _strip_emphasis(text)
        text = _strip_enclosing_quotes(text)
        text = text.strip(" \t-–—:").strip()
        if text == previous:
            break
    return text


def _clean_block(text: str) -> str:
    """A multi-line value (a memory, an outline): trimmed lines, no blank-line runs or fences."""
    text = _FENCE_LINE.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return _strip_enclosing_quotes(_strip_emphasis(text))


def _dedupe_key(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _has_words(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


# ---- JSON: find, decode, repair -----------------------------------------------------


_MAX_JSON_DEPTH = 32  # deeper nesting is not a reply to our prompts; skip it


def _scan_json(text: str, start: int) -> tuple[int | None, list[str], bool]:
    """Walk a JSON value from `start`: (end or None if unterminated, open brackets, in string).

    A mismatched bracket or nesting past `_MAX_JSON_DEPTH` ends the walk there, so that the
    decoder rejects the value.
    """
    stack: list[str] = []
    in_string = escaped = False
    pairs = {"}": "{", "]": "["}
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
            if len(stack) > _MAX_JSON_DEPTH:
                return index + 1, stack, False
        elif char in "}]":
            if not stack or stack[-1] != pairs[char]:
                return index + 1, stack, False
            stack.pop()
            if not stack:
                return index + 1, stack, False
    return None, stack, in_string


def _loads(text: str) -> object | None:
    """json.loads, forgiving trailing commas; None if it is not JSON."""
    for attempt in (text, _without_trailing_commas(text) if _COMMA_BEFORE_CLOSER.search(text) else None):
        if attempt is None:
            break
        try:
            return json.loads(attempt)
        except (ValueError, RecursionError):
            continue
    return None


_COMMA_BEFORE_CLOSER = re.compile(r",\s*(?=[}\]])")


# A JSON string (possibly cut off at the end of the text), or a comma right before a closer.
_STRING_OR_TRAILING_COMMA = re.compile(r'"(?:\\.|[^"\\])*(?:"|\\?\Z)|,\s*(?=[}\]])', re.DOTALL)


def _without_trailing_commas(text: str) -> str:
    """Drop commas that directly precede a closing bracket, outside strings."""
    return _STRING_OR_TRAILING_COMMA.sub(lambda m: m.group(0) if m.group(0)[0] == '"' else "", text)


_MAX_REPAIR_TRIES = 40
_MAX_REPAIRS_PER_TEXT = 3


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
    in_string = escaped = False
    for index, char in enumerate(fragment):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == ",":
            cuts.append((index, stack, False))
        elif char in "{[":
            stack, depth = (char, stack), depth + 1
            if depth > _MAX_JSON_DEPTH:
                return None
            cuts.append((index + 1, stack, False))
        elif char in "}]" and stack is not None:
            stack, depth = stack[1], depth - 1
    cuts.append((len(fragment), stack, in_string))
    for cut, open_brackets, cut_in_string in reversed(cuts):
        prefix = fragment[:cut].rstrip()
        if cut_in_string:
            if open_brackets is not None and open_brackets[0] == "[":
                continue
            if escaped:
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


_MAX_JSON_STARTS = 24
_JSON_START = re.compile(r"[{\[]")


def _json_values(text: str) -> tuple[list[object], bool]:
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
                end, _, _ = _scan_json(candidate, start)
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


def _as_text(value: object, depth: int = 0) -> str | None:
    """A JSON value as plain text: lists become lines, objects become 'Key: value' lines."""
    if value is None or isinstance(value, bool) or depth > _MAX_JSON_DEPTH:
        return None
    if isinstance(value, str):
        text = _clean_block(value)
        return text or None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        items = [_as_text(item, depth + 1) for item in value]
        text = "\n".join(item for item in items if item)
        return text or None
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            item_text = _as_text(item, depth + 1)
            if item_text:
                heading = _normalise_label(str(key)).capitalize()
                separator = "\n" if "\n" in item_text else " "
                lines.append(f"{heading}:{separator}{item_text}" if heading else item_text)
        return "\n".join(lines) or None
    return None


def _dicts_breadth_first(values: Iterable[object], max_depth: int = 3) -> Iterator[dict]:
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


def _find_json_field(values: list[object], names: tuple[str, ...]) -> tuple[str, object] | None:
    """The (key, value) whose key means one of `names`; shallower objects and better names win.

    A key whose value is an object ({"memory_update": {...}}) is a wrapper: a match inside it
    is preferred, and the wrapper is the answer only when nothing inside matches.
    """
    wrapper = None
    for mapping in _dicts_breadth_first(values):
        keys = {_normalise_label(str(key)): key for key in mapping}
        for name in names:
            if name in keys:
                value = mapping[keys[name]]
                if not isinstance(value, dict):
                    return name, value
                wrapper = wrapper or (name, value)
    return wrapper


# ---- labelled text ------------------------------------------------------------------

# A label line: decoration, a known label, maybe a number, a separator, then maybe content.
_LABEL_PREFIX = re.compile(
    r"""[ \t>]*
    (?P<heading>\#{1,6}[ \t]*)?
    (?:[-*+•][ \t]+)?
    (?:\(?\d{1,2}[.)][ \t]+)?
    (?P<open>\*\*|__|\*|_)?[ \t]*""",
    re.VERBOSE,
)
_LABEL_WORDS = re.compile(r"[A-Za-z][A-Za-z'’_-]*(?:[ \t][A-Za-z][A-Za-z'’_-]*){0,5}")
_WORD_END = re.compile(r"[A-Za-z'’]+")
_LABEL_SUFFIX = re.compile(
    r"""[ \t]*(?:\#?[ \t]*(?P<number>\d{1,2}|[A-Ca-c](?![A-Za-z0-9])))?
    [ \t]*(?P<close>\*\*|__|\*|_)?[ \t]*
    (?P<separator>[:：]|[.)](?=\s|$)|[-–—](?=[ \t]))?
    [ \t]*(?P<close_after>\*\*|__|\*|_)?[ \t]*
    (?P<rest>.*)""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Section:
    label: str  # normalised
    number: str | None
    content: str


def _match_label(line: str, vocabulary: frozenset[str]) -> _Section | None:
    """The section a line opens, if it is a label line such as "**Instruction 2:** Go north."

    A line counts as a label when a known label is followed by a colon, stands in a markdown
    heading or alone in bold, or is numbered and followed by ".", ")" or a dash.
    """
    prefix = _LABEL_PREFIX.match(line)
    words = _LABEL_WORDS.match(line, prefix.end())
    if words is None:
        return None
    ends = [match.end() for match in _WORD_END.finditer(line, words.start(), words.end())]
    for end in reversed(ends):  # the longest known label wins: "Short-term memory", not "Short"
        label = _normalise_label(line[words.start() : end])
        if label not in vocabulary:
            continue
        suffix = _LABEL_SUFFIX.match(line, end)
        number, separator = suffix.group("number"), (suffix.group("separator") or "")
        rest = suffix.group("rest").strip()
        if suffix.group("close_after") and not prefix.group("open"):
            rest = suffix.group("close_after") + rest  # "Memory: **Mara** ...": emphasis of the text
        opened = prefix.group("open")
        if opened and not suffix.group("close") and not suffix.group("close_after"):
            if rest.endswith(opened) and opened not in rest[: -len(opened)]:
                # "**Option 1: The Storm**": the bold covers a title; what follows describes it.
                rest = rest[: -len(opened)].rstrip()
                if rest and not re.search(r"[.!?…。！？:：]$", rest):
                    rest += ":"
        if label in _NUMBERED_ONLY_LABELS and not number:
            continue
        colon = separator in (":", "：")
        heading = bool(prefix.group("heading")) and not separator
        bold_line = bool(prefix.group("open")) and bool(suffix.group("close")) and not rest
        if colon or heading or bold_line or (number and separator):
            return _Section(label, number, rest)
    return None


def _is_label_fragment(line: str, vocabulary: frozenset[str]) -> bool:
    """Whether a (last) line is only the start of a label: a reply cut off inside it."""
    bare = _normalise_label(line)
    if not bare or len(bare) > 30 or re.search(r"[.!?,;]\s*$", line.strip()):
        return False
    return any(label.startswith(bare) for label in vocabulary)


@functools.lru_cache(maxsize=8)
def _inline_label_pattern(vocabulary: frozenset[str]) -> re.Pattern:
    def alternation(names: Iterable[str]) -> str:
        ordered = sorted((name for name in names if len(name) > 3), key=len, reverse=True)
        return "|".join(r"[\s_-]+".join(map(re.escape, name.split())) for name in ordered)

    plain = alternation(vocabulary - _NUMBERED_ONLY_LABELS)
    numbered = alternation(vocabulary & _NUMBERED_ONLY_LABELS)
    labels = rf"(?:{plain})(?:[ \t]*\d{{1,2}})?"
    if numbered:
        labels = rf"(?:{labels}|(?:{numbered})[ \t]*(?:\d{{1,2}}|[A-Ca-c]))"
    return re.compile(
        rf"(?<=[^\d\s][.!?;\"”)])[ \t]+(?=(?:\*\*)?{labels}(?:\*\*)?[ \t]*:)", re.IGNORECASE
    )


def _split_inline_labels(text: str, vocabulary: frozenset[str]) -> str:
    """Start a new line before a capitalised label that a model ran into the previous line."""

    def split(match: re.Match) -> str:
        following = text[match.end()]
        return "\n" if following.isupper() or following == "*" else match.group(0)

    return _inline_label_pattern(vocabulary).sub(split, text)


def _sections(text: str, vocabulary: frozenset[str] = _ALL_LABELS) -> tuple[str, list[_Section]]:
    """(text before the first label, labelled sections in order)."""
    text = _FENCE_LINE.sub("", _split_inline_labels(text, vocabulary))
    lines = text.split("\n")
    if len(lines) > 1 and _is_label_fragment(lines[-1], vocabulary):
        lines.pop()
    leading: list[str] = []
    sections: list[tuple[_Section, list[str]]] = []
    for line in lines:
        section = _match_label(line, vocabulary)
        if section is not None:
            sections.append((section, [section.content]))
        elif sections:
            sections[-1][1].append(line)
        else:
            leading.append(line)
    finished = [
        _Section(section.label, section.number, _clean_block("\n".join(body)))
        for section, body in sections
    ]
    return _clean_block("\n".join(leading)), finished


def _best_section(sections: list[_Section], names: tuple[str, ...]) -> _Section | None:
    """The first non-empty section with the best-ranked label among `names`."""
    ranked = [
        (names.index(section.label), index, section)
        for index, section in enumerate(sections)
        if section.label in names and _has_words(section.content)
    ]
    return min(ranked)[2] if ranked else None


# ---- the bible ------------------------------------------------------------------------


def parse_bible(text: str | None, *, cut_off: bool = False) -> BibleParse:
    """The title and outline of a story bible reply; either may be None.

    `cut_off`: the reply hit the length limit; an outline that stops mid-sentence is cut back
    to its last full sentence and the parse is marked `truncated`.
    """
    text = _without_trailing_commentary(_prepare(text))
    if not text:
        return BibleParse(None, None)
    values, truncated = _json_values(text)
    title = outline = None
    title_field = _find_json_field(values, TITLE_NAMES)
    if title_field:
        title = _clean_title(_as_text(title_field[1]) or "")
    outline_field = _find_json_field(values, OUTLINE_NAMES)
    if outline_field:
        outline = _as_text(outline_field[1])
    elif title_field:
        # No outline key: the other keys (setting, characters, arc ...) are the outline.
        for mapping in _dicts_breadth_first(values):
            if title_field[0] in {_normalise_label(str(k)) for k in mapping}:
                rest = {k: v for k, v in mapping.items() if _normalise_label(str(k)) not in TITLE_NAMES}
                outline = _as_text(rest)
                break
    if title is None or outline is None:
        label_title, label_outline = _bible_from_labels(text, from_json=bool(values))
        title = title or label_title
        outline = outline or label_outline
    if cut_off and not truncated and outline and ends_mid_sentence(outline):
        outline, truncated = trim_to_last_sentence(outline), True
    return BibleParse(title or None, outline or None, truncated)


def _clean_title(text: str) -> str | None:
    first_line = next((line for line in text.split("\n") if _has_words(line)), "")
    title = _clean_value(first_line.lstrip("# "))
    return title if _has_words(title) else None


def _bible_from_labels(text: str, *, from_json: bool) -> tuple[str | None, str | None]:
    _, sections = _sections(text, _BIBLE_LABELS)
    title_section = _best_section(sections, TITLE_NAMES)
    title = _clean_title(title_section.content) if title_section else None
    if title is None and not from_json:
        heading = re.match(r"\s*#{1,3}[ \t]+(.+)", text)  # "# The Glass Orchard"
        if heading and _normalise_label(heading.group(1)) not in _BIBLE_LABELS:
            title = _clean_title(heading.group(1))
    outline_section = _best_section(sections, OUTLINE_NAMES)
    if outline_section:
        return title, outline_section.content
    if from_json:
        return title, None
    # No outline label: separate "Setting:", "Characters:", "Arc:" parts make the outline.
    _, part_sections = _sections(text, _BIBLE_LABELS | frozenset(BIBLE_PART_NAMES))
    parts = [s for s in part_sections if s.label in BIBLE_PART_NAMES and _has_words(s.content)]
    if parts:
        outline = "\n".join(f"{s.label.capitalize()}: {s.content}" for s in parts)
        return title, outline
    if title is not None:
        # Whatever follows the title, unlabelled, is the outline.
        body = [s.content for s in sections if s.label not in TITLE_NAMES and _has_words(s.content)]
        rest = "\n".join(body) if body else ""
        if not rest and title_section is not None:
            rest = "\n".join(title_section.content.split("\n")[1:]).strip()
        if not rest and title_section is None:
            rest = "\n".join(text.split("\n")[1:]).strip()
        return title, _clean_block(rest) or None
    return title, None


# ---- the memory update ---------------------------------------------------------------


def parse_memory_update(text: str | None, *, cut_off: bool = False) -> MemoryParse:
    """The updated short-term memory and the model's reason; None where missing.

    `cut_off`: the reply hit the length limit, so its last part is incomplete. A memory that
    was that last part is marked `truncated` and cut back to its last full sentence.
    """
    text = _without_trailing_commentary(_prepare(text))
    if not text:
        return MemoryParse(None, None)
    values, truncated = _json_values(text)
    memory_field = _find_json_field(values, MEMORY_NAMES)
    reason_field = _find_json_field(values, REASON_NAMES)
    memory = _as_text(memory_field[1]) if memory_field else None
    reason = _as_text(reason_field[1]) if reason_field else None
    memory_last = False  # whether the memory is the reply's last part (the one a cut hits)
    if memory is None or reason is None:
        leading, sections = _sections(text)
        if sections:
            memory_last = sections[-1].label in MEMORY_NAMES
        memory_section = _best_section(sections, MEMORY_NAMES)
        reason_section = _best_section(sections, REASON_NAMES)
        if memory is None and memory_section:
            memory = memory_section.content
        if reason is None and reason_section:
            reason = reason_section.content
        # A summary written first and the reason labelled after it (or a completion prompt
        # that ended with "Short-term memory:"): the unlabelled start is the memory.
        if memory is None and reason_section and not values and _has_words(leading):
            memory = leading
    if cut_off and not truncated and not values and memory is not None:
        if memory_last:
            truncated = True
            memory = trim_to_last_sentence(memory)
        elif reason is not None:
            reason = trim_to_last_sentence(reason)
    memory = memory if memory and _has_words(memory) else None
    reason = reason if reason and _has_words(reason) else None
    return MemoryParse(memory, reason, truncated and memory is not None)


# ---- the instructions -----------------------------------------------------------------

_LIST_ITEM = re.compile(
    r"^[ \t]*(?P<heading>\#{1,6}[ \t]*)?(?:\*\*|__)?"
    r"(?:[-*+•▪]|\(?\d{1,2}[.):]|\(?[A-Ca-c][.)]|\#\d{1,2}[.:]?)(?:\*\*|__)?[ \t]+(?P<item>\S.*)$"
)
_LETTER_NUMBERS = {"a": "1", "b": "2", "c": "3"}


def parse_instructions(text: str | None, *, cut_off: bool = False) -> list[str]:
    """The candidate instructions in a planner reply: cleaned, de-duplicated, in order.

    May return fewer or more than three; `resolve_step_outputs` makes it exactly three.
    `cut_off`: the reply hit the length limit, so a last item that stops mid-sentence is
    half an instruction and is dropped.
    """
    text = _without_trailing_commentary(_prepare(text))
    if not text:
        return []
    values, _ = _json_values(text)
    items = _instructions_from_json(values) if values else []
    from_json = bool(items)  # a repaired JSON list has already lost its half-written item
    if not items:
        items = _instructions_from_labels(text)
    if not items:
        items = _list_items(text)
    if not items and not values:
        # Plain lines, one per instruction; a preface ("Here are three options:") ends in ':'.
        items = [
            line for line in text.split("\n")
            if len(line.split()) >= 3
            and not line.rstrip().endswith(":")
            and not line.lstrip().startswith(("{", "[", "```"))
            and _match_label(line, _ALL_LABELS) is None
        ]
    if cut_off and not from_json and items and ends_mid_sentence(items[-1]):
        items = items[:-1]
    return _unique_instructions(items)


def _unique_instructions(items: Iterable[str]) -> list[str]:
    unique: dict[str, str] = {}
    for item in items:
        cleaned = _clean_value(re.sub(r"^\s*(?:\d{1,2}[.)]|[-*+•])\s+", "", item))
        key = _dedupe_key(cleaned)
        if key and _has_words(cleaned) and key not in unique:
            unique[key] = cleaned
    return list(unique.values())


def _instructions_from_json(values: list[object]) -> list[str]:
    for value in values:
        if isinstance(value, list):
            items = _json_list_items(value)
            if items:
                return items
    field = _find_json_field(values, INSTRUCTION_LIST_NAMES)
    if field is not None:
        if isinstance(field[1], list):
            return _json_list_items(field[1])
        if isinstance(field[1], str):
            return _instructions_from_labels(field[1]) or _list_items(field[1]) or [field[1]]
    # {"instruction_1": ..., "instruction_2": ...} or {"option A": ...}
    for mapping in _dicts_breadth_first(values):
        numbered = []
        for key, item in mapping.items():
            match = re.fullmatch(r"([a-z ]+?) ?(\d{1,2}|[abc])", _normalise_label(str(key)))
            if match and match.group(1) in INSTRUCTION_ITEM_NAMES and _as_text(item):
                numbered.append(_as_text(item).replace("\n", " "))
        if numbered:
            return numbered
    return []


_INSTRUCTION_ITEM_KEYS = ("instruction", "direction", "text", "description", "content", "plan")


def _json_list_items(items: list[object]) -> list[str]:
    texts = []
    for item in items:
        if isinstance(item, dict):
            field = _find_json_field([item], _INSTRUCTION_ITEM_KEYS)
            text = _as_text(field[1]) if field else _as_text(item)
        else:
            text = _as_text(item)
        if text:
            texts.append(text.replace("\n", " "))
    return texts


def _instructions_from_labels(text: str) -> list[str]:
    leading, sections = _sections(text)
    item_sections = [s for s in sections if s.label in INSTRUCTION_ITEM_NAMES]
    items = [_join_item_lines(s.content) for s in item_sections if _has_words(s.content)]
    if item_sections and _has_words(leading):
        first_number = item_sections[0].number or ""
        if _LETTER_NUMBERS.get(first_number.lower(), first_number) == "2":
            # The reply continued a prompt that ended with "Instruction 1:".
            items.insert(0, leading.replace("\n", " "))
    if items:
        return items
    for section in sections:
        if section.label in INSTRUCTION_LIST_NAMES and _has_words(section.content):
            listed = _list_items(section.content)
            if listed:
                return listed
            return [line for line in section.content.split("\n") if _has_words(line)]
    return []


def _list_items(text: str) -> list[str]:
    """Numbered or bulleted list items; an item's wrapped lines join it.

    An item that is only a title ("### 1. The Storm", "1. **The Storm**") takes the lines
    below it, indented or not, as its description: "The Storm: Mara ...".
    """
    items: list[list[str]] = []
    continuing = titled = False
    for line in _FENCE_LINE.sub("", text).split("\n"):
        match = _LIST_ITEM.match(line)
        if match:
            item = match.group("item")
            titled = bool(match.group("heading")) or _is_bold_title(item)
            items.append([item])
            continuing = True
        elif not line.strip():
            # A blank line between a title and its description does not end the item.
            continuing = continuing and titled and len(items[-1]) == 1
        elif continuing and (line[:1] in " \t" or titled):
            items[-1].append(line.strip())
        else:
            continuing = False
    return [_join_item_lines("\n".join(lines)) for lines in items]


_TITLE_WORD = re.compile(r"[^\W\d_][\w'’-]{2,}")


def _is_bold_title(text: str) -> bool:
    text = text.strip().rstrip(":")
    return len(text) > 4 and text[:2] in ("**", "__") and text.endswith(text[:2]) and text[:2] not in text[2:-2]


def _looks_like_title(line: str) -> bool:
    """A short heading such as "The Confrontation", not the start of a wrapped sentence."""
    line = line.strip()
    if _is_bold_title(line):
        return True
    words = _TITLE_WORD.findall(line)
    return (
        0 < len(line.split()) <= 8
        and not re.search(r"[.!?…。！？,;]$", line)
        and bool(words)
        and all(word[0].isupper() for word in words)
    )


def _join_item_lines(text: str) -> str:
    """One instruction from its lines: "Title: description" when the first line is a title."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) > 1 and _looks_like_title(lines[0]):
        title = _clean_value(lines[0]).rstrip(":：").strip()
        return f"{title}: {' '.join(lines[1:])}"
    return " ".join(lines)


# ---- the chooser ------------------------------------------------------------------------

_CHOICE_KEYS = ("choice", "chosen", "selection", "answer", "option", "instruction")
_LABELLED_CHOICE = re.compile(
    r"\b(?:choice|option|instruction|direction|number)\s*#?\s*([1-9]|[abc]\b)", re.IGNORECASE
)
_ORDINALS = {"first": 1, "second": 2, "third": 3, "one": 1, "two": 2, "three": 3}


def parse_choice(text: str | None) -> int | None:
    """Which instruction (1-based) a chooser reply picked, or None if it names none."""
    text = _prepare(text)
    if not text:
        return None
    values, _ = _json_values(text)
    field = _find_json_field(values, _CHOICE_KEYS)
    if field is not None:
        found = re.search(r"\d+", str(field[1]))
        if found:
            return int(found.group())
    labelled = _LABELLED_CHOICE.search(text)
    if labelled:
        token = labelled.group(1).lower()
        return int(_LETTER_NUMBERS.get(token, token))
    digit = re.search(r"(?<![\d.])([1-9])(?![\d.]\d)", text)
    if digit:
        return int(digit.group(1))
    word = re.search(r"\b(first|second|third|one|two|three)\b", text, re.I)
    return _ORDINALS[word.group(1).lower()] if word else None


# ---- the paragraph --------------------------------------------------------------------

_PREFACE = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|here is|here's|here are|below is)\b.*:\s*$", re.IGNORECASE
)
# A preface that ends with "." or "!" instead of ":" ("Sure, here's the next paragraph."), or
# a bare "Sure!": only when it names what follows, since prose may open with "Here is".
_PREFACE_SENTENCE = re.compile(
    r"^(?:(?:sure|certainly|of course|absolutely|okay|ok)\b[\s,!.]*)?"
    r"(?:(?:here is|here's|here are|below is)\b.{0,60}?\b(?:paragraph|continuation|next part)\b[^.!?]{0,40}"
    r"|(?:sure|certainly|of course|absolutely)\s*)[.!:]?\s*$",
    re.IGNORECASE,
)
_SEPARATOR_LINE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,}|={3,})\s*$")
_PARAGRAPH_KEYS = ("paragraph", "next paragraph", "text", "content", "story", "prose")
# A heading the prompt did not ask for: "# Chapter 3", "**The Door**", "Chapter Two: Ash".
_TITLE_LINE = re.compile(
    r"^\s*(?:\#{1,6}\s+\S.*|(?:\*\*|__)[^*_]{1,80}(?:\*\*|__)|(?:chapter|part)\s+[\w-]+(?:\s*[:.—–-].{0,60})?)\s*$",
    re.IGNORECASE,
)
# The instruction echoed as a label before the prose: "Direction: ...", "**Instruction:** ...".
_ECHO_LABEL = re.compile(
    r"^[\s>*_#]*(?:instruction|direction|task|prompt|plan)\s*(?:\*\*|__)?\s*[:：]", re.IGNORECASE
)


def clean_paragraph(text: str | None, instruction: str | None = None) -> str:
    """The writer's reply as story prose.

    Drops a reasoning block, code fences, a preface ("Here is the next paragraph:"), a leading
    label ("Paragraph:", "**Paragraph 2:**") or title ("# Chapter 3"), the instruction echoed
    before the prose (labelled, or as `instruction` word for word), trailing talk to the user
    ("Let me know if ..."), and anything from an appended "Short-term memory:" or
    "Instruction 1:" section on. Quotes are removed only when they enclose the whole reply.
    A reply of several paragraphs is kept whole, its paragraphs joined by single newlines
    (blank lines are dropped), since splitting it would lose prose the reader already saw.
    """
    text = _prepare(text)
    if not text:
        return ""
    unfenced = _FENCE_LINE.sub("", text).strip()
    if unfenced.startswith("{") or _json_after_preface(unfenced):
        values, _ = _json_values(text)
        field = _find_json_field(values, _PARAGRAPH_KEYS)
        if field and isinstance(field[1], str):
            text = field[1]
    text = _without_trailing_commentary(text, prose=True)
    echo = _dedupe_key(instruction or "")
    lines = [line for line in _FENCE_LINE.sub("", text).split("\n")]
    kept: list[str] = []
    for index, line in enumerate(lines):
        if not kept and not line.strip():
            continue
        if not kept and (_PREFACE.match(line.strip()) or _PREFACE_SENTENCE.match(line.strip())):
            continue
        if not kept and echo and _echoes(line, echo):
            continue
        if not kept and _is_title_line(line) and any(rest.strip() for rest in lines[index + 1 :]):
            continue
        if kept and _DECORATED_NOTE.match(line):
            break
        section = _match_label(line, _ALL_LABELS)
        if section is not None:
            if not kept and section.label in PARAGRAPH_NAMES:
                if section.content:
                    kept.append(section.content)
                continue
            if section.label in _AFTER_PARAGRAPH_LABELS and kept:
                break
        kept.append(line)
    while kept and (_SEPARATOR_LINE.match(kept[-1]) or not kept[-1].strip()):
        kept.pop()
    prose = "\n".join(line.strip() for line in kept if line.strip())
    prose = _strip_enclosing_quotes(prose).strip()
    if echo and len(echo.split()) >= 4:
        # The instruction restated as the paragraph's first sentence.
        first, _, rest = prose.partition("\n")
        sentences = _SENTENCE_END.split(first, maxsplit=1)
        if len(sentences) == 2 and _dedupe_key(sentences[0]) == echo:
            prose = "\n".join(part for part in (sentences[1].strip(), rest) if part)
    return prose


def _echoes(line: str, echo: str) -> bool:
    """Whether `line` restates the instruction (its dedupe key `echo`), labelled or bare."""
    label = _ECHO_LABEL.match(line)
    key = _dedupe_key(line[label.end() :] if label else line)
    if key == echo:
        return True
    # "Direction: Have Mara open the door" for "Have Mara open the lighthouse door."
    return bool(label) and len(key.split()) >= 3 and (key in echo or echo in key)


def _is_title_line(line: str) -> bool:
    """A heading such as "# Chapter 3: The Door", "**The Door**", or a book's "CHAPTER XXV."
    and "THE SEA-COOK" (models trained on books write these); "# the bells rang" is prose."""
    if _BOOK_HEADING.match(line) and len(line.split()) <= 20:
        return True
    return bool(_TITLE_LINE.match(line)) and _looks_like_title(_clean_value(line.lstrip("# \t")))


# A book's chapter line: "CHAPTER XXV. The Sea-Cook", "Chapter 12" alone, "Part II: Home" (not
# "Chapter 12 had always been her favourite"); or a heading in capitals ("THE SEA-COOK") of two
# words or more, with no "!" or "?" and no opening quote or dash, which a shout would have.
_BOOK_HEADING = re.compile(
    r"^\s*(?:(?:CHAPTER|Chapter|BOOK|Book|PART|Part)\s+(?:[IVXLC]+|\d+)\s*(?:[.:—–-]|$)"
    r"|(?=[^a-z]*[A-Z]{2})(?=\S+\s+\S)[^a-z!?\"“«„'‘—–\s-][^a-z!?]*$)",
)


def _json_after_preface(text: str) -> bool:
    first, _, rest = text.partition("\n")
    return bool(_PREFACE.match(first.strip()) or _PREFACE_SENTENCE.match(first.strip())) and rest.strip().startswith("{")


# A sentence's end: terminal punctuation and any closing quotes or brackets, then space or
# the end; Chinese and Japanese stops need no space after them. "Mr." does not end one.
_CLOSERS = "\"”“’'»›‹」』）)\\]*_"
_SENTENCE_STOP = re.compile(
    rf"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)"
    rf"(?:[.!?…][{_CLOSERS}]*(?=\s|$)|[。！？][{_CLOSERS}]*)"
)


def ends_mid_sentence(text: str) -> bool:
    """Whether prose stops without a sentence's closing punctuation (a cut-off reply)."""
    text = text.rstrip()
    return bool(text) and not any(match.end() == len(text) for match in _SENTENCE_STOP.finditer(text))


def trim_to_last_sentence(text: str) -> str:
    """`text` up to the end of its last complete sentence; unchanged if it has none."""
    text = text.rstrip()
    ends = [match.end() for match in _SENTENCE_STOP.finditer(text)]
    return text[: ends[-1]].rstrip() if ends else text


# ---- deterministic instructions ---------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"”’')\]]*\s+")
_WORD = re.compile(r"(?P<before>[\"“‘'(\[]?)(?P<word>[A-Za-z][A-Za-z'’-]*)")
_NOT_NAMES = frozenset(
    """I I'm I'll I'd I've Mr Mrs Ms Dr Sir Madam Lady Lord God Oh Ah No Yes OK Okay The A An
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May
    June July August September October November December""".split()
)


def _sentences(paragraph: str) -> list[str]:
    """The sentences of `paragraph`, each with its closing quotes ("Mr." ends none)."""
    text = _WHITESPACE.sub(" ", paragraph).strip()
    sentences, start = [], 0
    for match in _SENTENCE_STOP.finditer(text):
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _names(paragraph: str) -> list[str]:
    """Capitalised words that do not start a sentence or a quotation, most frequent first."""
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for sentence in _sentences(paragraph):
        for index, match in enumerate(_WORD.finditer(sentence)):
            word = re.sub(r"['’]s$", "", match.group("word"))
            if index == 0 or match.group("before") or not word[0].isupper() or word in _NOT_NAMES:
                continue
            if len(word) > 1 and word.isupper():  # a heading or a shout ("THE HISPANIOLA")
                continue
            counts[word] += 1
            first_seen.setdefault(word, len(first_seen))
    return sorted(counts, key=lambda name: (-counts[name], first_seen[name]))


def _excerpt(sentence: str, max_words: int = 20) -> str:
    words = re.sub(r"[\"“”«»]", "", sentence).split()
    text = " ".join(words[:max_words])
    return text + ("…" if len(words) > max_words else "")


def _derived_instructions(paragraph: str, outline: str = "") -> list[str]:
    """Distinct candidate instructions from a paragraph, best first (at least six)."""
    paragraph = _prepare(paragraph)
    sentences = _sentences(paragraph)
    names = _names(paragraph)
    hero = names[0] if names else "the main character"
    candidates = []
    if sentences:
        candidates.append(
            f"Continue straight on from the last moment ({_excerpt(sentences[-1])}) "
            "and show what happens next."
        )
    else:
        candidates.append("Continue the story from where it left off and show what happens next.")
    candidates.append(f"Show how {hero} reacts to what just happened, through action and dialogue.")
    if outline.strip():
        candidates.append(
            "Introduce a complication that moves the story toward the next turn of its outline."
        )
    else:
        candidates.append("Introduce an unexpected complication that raises the stakes.")
    candidates.append(f"Reveal something {hero} has been keeping quiet, and let it change the scene.")
    if len(names) > 1:
        candidates.append(
            f"Bring {names[1]} to the fore and let them push the scene in a new direction."
        )
    else:
        candidates.append("Bring in a new character whose arrival changes the situation.")
    candidates.append(
        "Slow down for a quiet moment in which the characters take stock of what has happened."
    )
    candidates.append(
        "Move to a new place or time, carrying the open question of the last scene with it."
    )
    return candidates


def instructions_from_paragraph(paragraph: str, outline: str = "") -> tuple[str, str, str]:
    """Three distinct, sensible next instructions derived from a paragraph, without a model.

    The fallback when the planner's reply is unreadable: one continues from the paragraph's
    last sentence, one turns to its most-named character, one adds a complication. Never
    empty, even for an empty paragraph.
    """
    first, second, third = _derived_instructions(paragraph, outline)[:3]
    return first, second, third


# ---- a complete step ----------------------------------------------------------------


def _memory_from_paragraph(paragraph: str) -> str:
    return _first_words(_prepare(paragraph), MEMORY_WORD_LIMIT)


def outputs_from_paragraph(*, old_memory: str, paragraph: str, outline: str = "") -> StepOutputs:
    """The step's memory and instructions for a prose-only model, made from the paragraph.

    The memory keeps a window of the story's latest events: the new paragraph's first and
    last sentences after the old memory, whose oldest sentences go once it passes
    MEMORY_WORD_LIMIT words (the first paragraph starts it whole).
    """
    if (old_memory or "").strip():
        memory = _memory_carried_forward(old_memory, paragraph)
    else:
        memory = _memory_from_paragraph(paragraph)
    first, second, third = _derived_instructions(paragraph, outline)[:3]
    return StepOutputs(memory, PROSE_ONLY_REASON, (first, second, third), (PROSE_ONLY_OUTPUTS,))


def _memory_carried_forward(old_memory: str, paragraph: str) -> str:
    sentences = _sentences(_prepare(paragraph))
    gist = " ".join(
        _first_words(sentence, GIST_SENTENCE_WORDS)
        for sentence in (sentences[:1] + sentences[-1:] if len(sentences) > 1 else sentences)
    )
    room = MEMORY_WORD_LIMIT - len(gist.split())
    kept: list[str] = []
    for sentence in reversed(_sentences(old_memory)):
        words = sentence.split()
        if len(words) > room:
            # Notes without full stops are one long "sentence": keep its newest words.
            if room >= 5:
                kept.append("…" + " ".join(words[len(words) - room :]))
            break
        room -= len(words)
        kept.append(sentence)
    return " ".join([*reversed(kept), gist]).strip()


def _first_words(text: str, limit: int) -> str:
    words = text.split()
    return " ".join(words[:limit]) + ("…" if len(words) > limit else "")


def resolve_step_outputs(
    *,
    memory_reply: str | None,
    planner_reply: str | None,
    old_memory: str,
    paragraph: str,
    outline: str = "",
    memory_cut_off: bool = False,
    planner_cut_off: bool = False,
) -> StepOutputs:
    """The step's memory, reason and three instructions, whatever the model replied.

    A reply of None means the call failed or gave up. Every gap is filled and named in
    `fallbacks`: an unreadable memory keeps the old one (or, at a story's start, begins from
    the paragraph); a missing reason gets a stated default; missing instructions are derived
    from the paragraph; more than three are cut to the first three.
    """
    fallbacks: list[str] = []
    parsed = parse_memory_update(memory_reply, cut_off=memory_cut_off)
    if parsed.short_term_memory is not None:
        short_term_memory = parsed.short_term_memory
        if parsed.truncated:
            fallbacks.append(MEMORY_CUT)
        if parsed.reason is not None:
            memory_reason = parsed.reason
        else:
            memory_reason = DEFAULT_REASON
            fallbacks.append(REASON_MISSING)
    elif (old_memory or "").strip():
        short_term_memory, memory_reason = old_memory, KEPT_REASON
        fallbacks.append(MEMORY_KEPT)
    else:
        short_term_memory, memory_reason = _memory_from_paragraph(paragraph), STARTED_REASON
        fallbacks.append(MEMORY_STARTED)

    instructions = parse_instructions(planner_reply, cut_off=planner_cut_off)[:3]
    if len(instructions) < 3:
        taken = {_dedupe_key(item) for item in instructions}
        missing = 3 - len(instructions)
        for candidate in _derived_instructions(paragraph, outline):
            if len(instructions) == 3:
                break
            if _dedupe_key(candidate) not in taken:
                instructions.append(candidate)
                taken.add(_dedupe_key(candidate))
        if missing == 3:
            fallbacks.append(INSTRUCTIONS_DERIVED)
        else:
            fallbacks.append(
                f"The model proposed only {3 - missing} of the three next instructions, so "
                f"{'the last was' if missing == 1 else 'the last two were'} derived from the "
                "new paragraph."
            )
    first, second, third = instructions
    return StepOutputs(short_term_memory, memory_reason, (first, second, third), tuple(fallbacks))


CUT_OFF_PROBLEM = "The reply was cut off by the length limit before it ended; answer more briefly."


def describe_problem(role: str, text: str | None, *, cut_off: bool = False) -> str | None:
    """What is wrong with a reply, as a sentence for a repair prompt; None if it reads fully.

    `role` is "bible", "memory", "planner", "chooser" or "writer"; `cut_off`: the reply hit
    the length limit (the server's finish_reason was "length").
    """
    if not _prepare(text):
        return "The reply was empty."
    if role == "writer":
        return None if clean_paragraph(text) else "The reply held no paragraph of prose."
    if role == "memory":
        memory = parse_memory_update(text, cut_off=cut_off)
        if memory.short_term_memory is None:
            return "The reply had no readable short-term memory."
        if memory.truncated:
            return CUT_OFF_PROBLEM
        if memory.reason is None:
            return "The reply gave no reason for the memory update."
        return None
    if role == "planner":
        count = len(parse_instructions(text, cut_off=cut_off))
        if count == 0 and cut_off:
            return CUT_OFF_PROBLEM
        if count == 0:
            return "The reply had no readable instructions."
        if count < 3:
            plural = "s" if count > 1 else ""
            return f"The reply had only {count} distinct instruction{plural}; three are needed."
        return None
    if role == "bible":
        bible = parse_bible(text, cut_off=cut_off)
        if bible.title is None and bible.outline is None:
            return "The reply had neither a readable title nor an outline."
        if bible.title is None:
            return "The reply had no readable title."
        if bible.outline is None:
            return "The reply had no readable outline."
        if bible.truncated:
            return CUT_OFF_PROBLEM
        return None
    if role == "chooser":
        choice = parse_choice(text)
        return None if choice in (1, 2, 3) else "The reply did not name a choice of 1, 2 or 3."
    raise ValueError(f"no reply format is known for the role {role!r}")


# ---- what the reader sees while the paragraph streams ----------------------------------

_HELD_TAGS = ("<think>", "<thinking>", "</think>", "</thinking>", "<|", "</s>", "[INST]", "[/INST]",
              "<end_of_turn>", "<start_of_turn>")
_OPEN_THINK = re.compile(r"<(?:think|thinking)>", re.IGNORECASE)


def streamed_prose(raw: str) -> str:
    """The part of a writer reply streamed so far that may be shown as the paragraph.

    Reasoning (`<think>` blocks, or everything before a lone `</think>`) and leaked template
    tokens are never shown; a tail that may be the start of such a tag is held back until the
    next piece shows what it is. The result can stop being a prefix of the previous one (a lone
    `</think>` arrives): the caller then starts the shown text over.
    """
    text = _THINK_BLOCK.sub("", raw.replace("\r\n", "\n"))
    opened = _OPEN_THINK.search(text)
    if opened:  # an unclosed block: hold everything from it on
        text = text[: opened.start()]
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    text = _without_turn_markers(text)
    tail_start = max(text.rfind("<"), text.rfind("["))
    if tail_start >= 0 and len(text) - tail_start < 16:
        tail = text[tail_start:].lower()
        unclosed_token = tail.startswith("<|") and "|>" not in tail
        if unclosed_token or any(tag.lower().startswith(tail) for tag in _HELD_TAGS):
            text = text[:tail_start]
    return text.lstrip()

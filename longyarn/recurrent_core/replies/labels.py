"""Labelled sections in replies: "Short-term memory: ...", "**Reason:**", "### Instruction 2".

A line that starts with a known label, however decorated, opens a section that runs to the
next known label. A final line that is only the start of a label (a reply cut off inside
"Reas...") is dropped. The vocabularies below say what each label means.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable

from .clean import clean_block, has_words, normalise_label, without_fence_lines

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
_OPENING_ONLY_LABELS = frozenset({"name"})
_NUMBERED_ONLY_LABELS = frozenset(
    {"option", "choice", "direction", "plan", "next step", "step", "candidate", "possibility",
     "idea", "suggestion", "path"}
)
# "story bible": what opening templates of a writer's own, from before the role's rename, ask for.
OUTLINE_NAMES = (
    "outline", "story outline", "plot outline", "story bible", "bible", "synopsis", "overview",
    "summary",
)
# Parts of an outline that a model may give as separate labels instead of one outline.
OUTLINE_PART_NAMES = (
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
ALL_LABELS = frozenset(
    MEMORY_NAMES + REASON_NAMES + TITLE_NAMES + OUTLINE_NAMES + INSTRUCTION_ITEM_NAMES
    + INSTRUCTION_LIST_NAMES + PARAGRAPH_NAMES + NOTE_NAMES
) - _OPENING_ONLY_LABELS
OPENING_LABELS = ALL_LABELS | _OPENING_ONLY_LABELS
# "Option B" is option 2.
LETTER_NUMBERS = {"a": "1", "b": "2", "c": "3"}

# ---- label lines --------------------------------------------------------------------------

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
class Section:
    """A labelled part of a reply: its label (normalised), its number if any, its text."""

    label: str
    number: str | None
    content: str


def match_label(line: str, vocabulary: frozenset[str]) -> Section | None:
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
        label = normalise_label(line[words.start() : end])
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
            return Section(label, number, rest)
    return None


def _is_label_fragment(line: str, vocabulary: frozenset[str]) -> bool:
    """Whether a (last) line is only the start of a label: a reply cut off inside it."""
    bare = normalise_label(line)
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


def sections(text: str, vocabulary: frozenset[str] = ALL_LABELS) -> tuple[str, list[Section]]:
    """(text before the first label, labelled sections in order)."""
    text = without_fence_lines(_split_inline_labels(text, vocabulary))
    lines = text.split("\n")
    if len(lines) > 1 and _is_label_fragment(lines[-1], vocabulary):
        lines.pop()
    leading: list[str] = []
    opened: list[tuple[Section, list[str]]] = []
    for line in lines:
        section = match_label(line, vocabulary)
        if section is not None:
            opened.append((section, [section.content]))
        elif opened:
            opened[-1][1].append(line)
        else:
            leading.append(line)
    finished = [
        Section(section.label, section.number, clean_block("\n".join(body)))
        for section, body in opened
    ]
    return clean_block("\n".join(leading)), finished


def best_section(found: list[Section], names: tuple[str, ...]) -> Section | None:
    """The first non-empty section with the best-ranked label among `names`."""
    ranked = [
        (names.index(section.label), index, section)
        for index, section in enumerate(found)
        if section.label in names and has_words(section.content)
    ]
    return min(ranked)[2] if ranked else None

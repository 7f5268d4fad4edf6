"""Cleaning replies: what a model wraps around its answer, dropped; values tidied.

Dropped: `<think>` blocks (and everything before a lone `</think>`), the rest of a reply after a
leaked chat-template token, code fences, trailing talk to the user ("Let me know if ..."), and
for prose a preface ("Here is the next paragraph:"), an unasked-for heading and the
instruction echoed back. Values lose markdown emphasis, enclosing quotes and runs of space.
"""

from __future__ import annotations

import re

# ---- reasoning and chat-template tokens ------------------------------------------------

# A closed block anywhere; an unclosed one only where reasoning starts, at the reply's start
# (a literal "<thinking>" later in prose must not swallow the rest).
_THINK_BLOCK = re.compile(
    r"<(think|thinking)>.*?</\1>|\A\s*<(?:think|thinking)>.*\Z", re.DOTALL | re.IGNORECASE
)
# A closing tag with no opening one: the server's chat template opened the block in the prompt
# (DeepSeek-R1 distills, QwQ), so everything before it is reasoning.
_THINK_CLOSE = re.compile(r"</(?:think|thinking)>", re.IGNORECASE)
_OPEN_THINK = re.compile(r"<(?:think|thinking)>", re.IGNORECASE)
# Chat-template tokens that a misconfigured server lets through as text: the reply ends there.
_TURN_MARKER = re.compile(
    r"<\|(?:eot_id|eom_id|im_end|im_start|end|endoftext|end_of_text|start_header_id|"
    r"end_header_id|assistant|user|system)\|>|</s>|\[/?INST\]|<(?:end|start)_of_turn>",
    re.IGNORECASE,
)
_MARKER_ROLE = re.compile(r"\A\s*(?:assistant|model)?[ \t]*\n", re.IGNORECASE)
# Tags a streamed reply may be in the middle of: held back until the next piece shows which.
_HELD_TAGS = ("<think>", "<thinking>", "</think>", "</thinking>", "<|", "</s>", "[INST]", "[/INST]",
              "<end_of_turn>", "<start_of_turn>")


def prepare(text: object) -> str:
    """The reply as text, without reasoning blocks or leaked template tokens, with plain newlines."""
    if not isinstance(text, str):
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    return _without_turn_markers(text).strip()


def has_reasoning_tag(text: str) -> bool:
    """Whether a reply holds a `<think>` or `</think>` tag: the model reasoned in it."""
    return bool(_OPEN_THINK.search(text) or _THINK_CLOSE.search(text))


def _without_turn_markers(text: str) -> str:
    """The text up to the first leaked chat-template token (leading ones are skipped)."""
    while (match := _TURN_MARKER.match(text.lstrip())) is not None:
        text = text.lstrip()[match.end() :]
        role = _MARKER_ROLE.match(text)
        if role:
            text = text[role.end() :]
    match = _TURN_MARKER.search(text)
    return text[: match.start()] if match else text


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


# ---- trailing talk to the user ---------------------------------------------------------

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


def without_trailing_commentary(text: str, *, prose: bool = False) -> str:
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


# ---- values ------------------------------------------------------------------------------

_FENCE_LINE = re.compile(r"^[ \t]*(?:```|~~~)[\w+-]*[ \t]*$", re.MULTILINE)
_WHITESPACE = re.compile(r"\s+")
_QUOTE_PAIRS = {'"': '"', "“": "”", "«": "»", "'": "'", "‘": "’"}


def without_fence_lines(text: str) -> str:
    """`text` without its code-fence lines (```json, ~~~)."""
    return _FENCE_LINE.sub("", text)


def collapse_whitespace(text: str) -> str:
    """`text` on one line: every run of whitespace one space, none at the ends."""
    return _WHITESPACE.sub(" ", text).strip()


def normalise_label(label: str) -> str:
    """A label or key as lowercase words: "**Short-term memory**" -> "short term memory"."""
    return " ".join(re.findall(r"[a-z0-9]+", label.lower()))


def strip_enclosing_quotes(text: str) -> str:
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


def clean_value(text: str) -> str:
    """A one-piece value (an instruction, a title): no markdown edges, quotes or runs of space."""
    text = collapse_whitespace(text)
    for _ in range(3):
        previous = text
        text = _strip_emphasis(text)
        text = strip_enclosing_quotes(text)
        text = text.strip(" \t-–—:").strip()
        if text == previous:
            break
    return text


def clean_block(text: str) -> str:
    """A multi-line value (a memory, an outline): trimmed lines, no blank-line runs or fences."""
    text = without_fence_lines(text)
    lines = [line.rstrip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return strip_enclosing_quotes(_strip_emphasis(text))


def dedupe_key(text: str) -> str:
    """What two texts that differ only in case, punctuation and spacing have in common."""
    return " ".join(re.findall(r"\w+", text.lower()))


def has_words(text: str) -> bool:
    """Whether `text` has a letter in it (not only numbers, punctuation or markup)."""
    return any(ch.isalpha() for ch in text)


# ---- what precedes prose: a preface, the instruction echoed, a heading --------------------

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
# The instruction echoed as a label before the prose: "Direction: ...", "**Instruction:** ...".
_ECHO_LABEL = re.compile(
    r"^[\s>*_#]*(?:instruction|direction|task|prompt|plan)\s*(?:\*\*|__)?\s*[:：]", re.IGNORECASE
)
# A heading the prompt did not ask for: "# Chapter 3", "**The Door**", "Chapter Two: Ash".
_TITLE_LINE = re.compile(
    r"^\s*(?:\#{1,6}\s+\S.*|(?:\*\*|__)[^*_]{1,80}(?:\*\*|__)|(?:chapter|part)\s+[\w-]+(?:\s*[:.—–-].{0,60})?)\s*$",
    re.IGNORECASE,
)
# A book's chapter line: "CHAPTER XXV. The Sea-Cook", "Chapter 12" alone, "Part II: Home" (not
# "Chapter 12 had always been her favourite"); or a heading in capitals ("THE SEA-COOK") of two
# words or more, with no "!" or "?" and no opening quote or dash, which a shout would have.
_BOOK_HEADING = re.compile(
    r"^\s*(?:(?:CHAPTER|Chapter|BOOK|Book|PART|Part)\s+(?:[IVXLC]+|\d+)\s*(?:[.:—–-]|$)"
    r"|(?=[^a-z]*[A-Z]{2})(?=\S+\s+\S)[^a-z!?\"“«„'‘—–\s-][^a-z!?]*$)",
)
_TITLE_WORD = re.compile(r"[^\W\d_][\w'’-]{2,}")


def is_preface(line: str) -> bool:
    """Whether a line only announces the answer: "Here is the next paragraph:", "Sure!"."""
    line = line.strip()
    return bool(_PREFACE.match(line) or _PREFACE_SENTENCE.match(line))


def echoes_instruction(line: str, echo: str) -> bool:
    """Whether `line` restates the instruction (its dedupe key `echo`), labelled or bare."""
    label = _ECHO_LABEL.match(line)
    key = dedupe_key(line[label.end() :] if label else line)
    if key == echo:
        return True
    # "Direction: Have Mara open the door" for "Have Mara open the lighthouse door."
    return bool(label) and len(key.split()) >= 3 and (key in echo or echo in key)


def is_title_line(line: str) -> bool:
    """A heading such as "# Chapter 3: The Door", "**The Door**", or a book's "CHAPTER XXV."
    and "THE SEA-COOK" (models trained on books write these); "# the bells rang" is prose."""
    if _BOOK_HEADING.match(line) and len(line.split()) <= 20:
        return True
    return bool(_TITLE_LINE.match(line)) and looks_like_title(clean_value(line.lstrip("# \t")))


def is_bold_title(text: str) -> bool:
    """Whether `text` is wholly in bold ("**The Storm**", maybe with a colon after it)."""
    text = text.strip().rstrip(":")
    return len(text) > 4 and text[:2] in ("**", "__") and text.endswith(text[:2]) and text[:2] not in text[2:-2]


def looks_like_title(line: str) -> bool:
    """A short heading such as "The Confrontation", not the start of a wrapped sentence."""
    line = line.strip()
    if is_bold_title(line):
        return True
    words = _TITLE_WORD.findall(line)
    return (
        0 < len(line.split()) <= 8
        and not re.search(r"[.!?…。！？,;]$", line)
        and bool(words)
        and all(word[0].isupper() for word in words)
    )

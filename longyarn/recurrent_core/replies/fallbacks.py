"""Every sentence the user is told about a model's reply: the fallback taken for each gap in
it, and why a reply could not be used at all."""

from __future__ import annotations

from typing import Iterable, Sequence

# ---- the opening: the title and the outline -------------------------------------------------

TITLE_FROM_PREMISE = "The model's title could not be read, so the title was taken from the premise."
OUTLINE_FROM_PREMISE = "The model's outline could not be read, so the premise serves as the outline."
OUTLINE_CUT = (
    "The model's outline was cut off by its length limit, so the part that arrived is the outline."
)
PREMISE_TRIMMED = (
    "The premise is longer than the context budget allows, so the outline was planned from its "
    "beginning; summarise the premise (the story's outline dialog offers it) to plan from all of it."
)

# ---- the paragraph --------------------------------------------------------------------------

PARAGRAPH_CUT = (
    "The model reached its length limit mid-sentence, so the paragraph was cut back to its "
    "last full sentence."
)
PARAGRAPH_CUT_KEPT = "The model reached its length limit, so the paragraph ends mid-sentence."
# Errors, not fallbacks: the step stores nothing.
ONLY_REASONING = (
    "The model spent its whole length limit reasoning (<think>) and wrote no paragraph; nothing "
    "was stored, so turn its thinking off (e.g. /no_think for Qwen3) or raise the writer's "
    "max_tokens."
)

# ---- a paragraph that degenerated (replies/degeneration.py says how; recurrent_core/guard.py) --

def _in_turn(problems: Sequence[str]) -> str:
    """The attempts' problems in order: "copied its context, then repeated itself"."""
    return ", then ".join(problems)


def paragraph_written_again(problems: Sequence[str]) -> str:
    """The fallback when rejected attempts were followed by a sound paragraph."""
    return f"The model's paragraph {_in_turn(problems)}, so it was written again with gentler sampling."


def degenerate_paragraph_kept(problems: Sequence[str], kept: int) -> str:
    """The fallback when every attempt degenerated and the best (`kept`, from 1) was kept."""
    which = ("first", "second", "third", "fourth", "fifth")[kept - 1] if kept <= 5 else f"number {kept}"
    return (
        f"The model's paragraph {_in_turn(problems)}, even with gentler sampling, so the best of "
        f"the {len(problems)} attempts, the {which}, was kept; edit it or write it again."
    )


def degenerate_paragraph_stopped(problems: Sequence[str]) -> str:
    """The error when every attempt degenerated and the settings say to stop."""
    return (
        f"The model's paragraph {_in_turn(problems)}, even with gentler sampling; nothing was "
        "stored; write it again, choose another model, or set degeneration = \"keep\" to keep "
        "the best attempt."
    )


def empty_paragraph(attempts: int) -> str:
    """The error when every attempt came back empty."""
    return (
        f"The model's paragraph came back empty {attempts} times, the later ones with gentler "
        "sampling; nothing was stored; try again, or choose another model."
    )

# ---- the short-term memory ----------------------------------------------------------------

MEMORY_KEPT = (
    "The model's memory update could not be read, so the previous short-term memory was kept."
)
MEMORY_STARTED = (
    "The model's memory update could not be read, so the short-term memory was started from "
    "the new paragraph."
)
MEMORY_CUT = "The model's memory update was cut off, so the part that arrived was kept."
REASON_MISSING = "The model gave no reason for its memory update."
# Stored as the memory's reason, where the model gave none.
DEFAULT_REASON = "(The model gave no reason for this update.)"
KEPT_REASON = "(The previous short-term memory was kept: the model's update could not be read.)"
STARTED_REASON = "(Started from the new paragraph: the model's update could not be read.)"

# ---- the next instructions ----------------------------------------------------------------

INSTRUCTIONS_DERIVED = (
    "The model's next instructions could not be read, so three were derived from the new "
    "paragraph."
)
CHOICE_UNREADABLE = "The model's choice could not be read, so the first instruction was taken."


def instructions_partly_derived(proposed: int) -> str:
    """The fallback when the model proposed only `proposed` (1 or 2) readable instructions."""
    derived = "the last was" if proposed == 2 else "the last two were"
    return (
        f"The model proposed only {proposed} of the three next instructions, so {derived} "
        "derived from the new paragraph."
    )


# ---- a chapter's summary (recurrent_core/chapter_summaries.py) ------------------------------

CHAPTER_SUMMARY_FROM_OPENING = (
    "The model's chapter summary could not be read, so the chapter's opening sentences serve as "
    "its summary; write your own, or ask again."
)
CHAPTER_SUMMARY_CUT = "The model's chapter summary was cut off by its length limit, so the part that arrived is the summary."

# ---- a model that writes story prose only -------------------------------------------------

PROSE_ONLY_OUTPUTS = (
    "This model writes story prose only, so the short-term memory carries the new paragraph's "
    "first and last sentences forward and the next instructions were derived from the paragraph."
)
PROSE_ONLY_REASON = "(Carried forward from the paragraph: this model writes story prose only.)"
PROSE_ONLY_OPENING = (
    "This model writes story prose only, so the title was taken from the premise and the "
    "premise serves as the outline."
)
PROSE_ONLY_CHOICE = "This model writes story prose only, so the first instruction was taken."
PROSE_ONLY_CHAPTER_SUMMARY = (
    "This model writes story prose only, so a closed chapter's summary is its opening sentences; "
    "write your own, or use a model that can summarise."
)
CONTINUITY_UNREADABLE = (
    "The continuity check's reply could not be read, so this paragraph was not checked against the story bible."
)
PROSE_ONLY_BIBLE = (
    "This model writes story prose only, so no story bible updates were proposed and no "
    "contradiction checks were made; add entries and facts yourself, or use a model that answers in JSON."
)
# Fallbacks that describe the model rather than one step: front ends say each once, since
# the same sentence after every paragraph would bury the story it is about.
MODEL_FALLBACKS = frozenset(
    {PROSE_ONLY_OUTPUTS, PROSE_ONLY_OPENING, PROSE_ONLY_CHOICE, PROSE_ONLY_CHAPTER_SUMMARY, PROSE_ONLY_BIBLE}
)


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


# ---- what each sentence is about (`longyarn report` counts them by part) --------------------


def parts_of(sentence: str) -> tuple[str, ...]:
    """Which parts of a story a fallback sentence is about: "title", "outline", "paragraph" (cut
    by its length limit), "degeneration" (written again, or kept flagged), "memory",
    "instructions", "bible" (an update dropped, or none asked for), or "notice" (a setting the server refused, and anything else)."""
    if sentence.startswith("The model's paragraph "):
        return ("degeneration",)
    known = {
        TITLE_FROM_PREMISE: ("title",), PROSE_ONLY_OPENING: ("title", "outline"),
        OUTLINE_FROM_PREMISE: ("outline",), OUTLINE_CUT: ("outline",), PREMISE_TRIMMED: ("outline",),
        PARAGRAPH_CUT: ("paragraph",), PARAGRAPH_CUT_KEPT: ("paragraph",),
        MEMORY_KEPT: ("memory",), MEMORY_STARTED: ("memory",), MEMORY_CUT: ("memory",),
        REASON_MISSING: ("memory",), PROSE_ONLY_OUTPUTS: ("memory", "instructions"),
        INSTRUCTIONS_DERIVED: ("instructions",), CHOICE_UNREADABLE: ("instructions",),
        PROSE_ONLY_CHOICE: ("instructions",),
    }
    if sentence in known:
        return known[sentence]
    if sentence.startswith("The model proposed only"):
        return ("instructions",)
    if sentence in (PROSE_ONLY_BIBLE, CONTINUITY_UNREADABLE) or sentence.startswith(("The proposed ", "A proposed ")):
        return ("bible",)
    return ("notice",)

"""Every sentence the user is told about a model's reply: the fallback taken for each gap in
it, and why a reply could not be used at all."""

from __future__ import annotations

from typing import Iterable

# ---- the story bible ----------------------------------------------------------------------

TITLE_FROM_PREMISE = "The model's title could not be read, so the title was taken from the premise."
OUTLINE_FROM_PREMISE = "The model's outline could not be read, so the premise serves as the outline."
OUTLINE_CUT = (
    "The model's outline was cut off by its length limit, so the part that arrived is the outline."
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
EMPTY_PARAGRAPH_TWICE = (
    "The model returned an empty paragraph twice; nothing was stored; try again, or choose "
    "another model."
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


# ---- a model that writes story prose only -------------------------------------------------

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

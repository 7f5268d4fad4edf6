"""What each phase of a step is called, in the words of whoever watches it: a writer, a writer
keeping on writing, a reader. The terminal UIs and the web reader say the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Audience = Literal["writer", "run", "reader"]


@dataclass(frozen=True)
class PhaseWords:
    writer: str  # on the writing screen
    run: str  # after "Keep writing: paragraph 2 of 5 · " (the status line is one line)
    reader: str  # readers see the story go on, not the machinery


# The one table of what each phase of a step is called.
PHASES: dict[str, PhaseWords] = {
    "started": PhaseWords(
        "Writing the paragraph… (Escape cancels; nothing is saved until the step ends)",
        "writing…",
        "The story goes on…",
    ),
    "writing": PhaseWords("Writing the paragraph…", "writing…", "The story goes on…"),
    "remembering": PhaseWords(
        "Updating the short-term memory and planning what comes next…",
        "remembering and planning…",
        "The story goes on… (almost there)",
    ),
    "planning": PhaseWords("Planning what comes next…", "planning…", "The story goes on… (almost there)"),
    "committing": PhaseWords("Saving…", "saving…", "The story goes on… (almost there)"),
}
# What Escape does, said after the phase.
ESCAPE = {"writer": "Escape cancels", "run": "Escape stops", "reader": "Escape stops it"}


def phase_words(phase: str, audience: Audience) -> str:
    """What `phase` is called for `audience` (an unknown phase: an ellipsis for readers)."""
    words = PHASES.get(phase)
    if words is None:
        return "…" if audience == "reader" else phase
    return getattr(words, audience)

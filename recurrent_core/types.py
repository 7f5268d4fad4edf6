"""Plain data that flows between the engine, storage and the front ends.

Everything here is a frozen dataclass of plain Python values so that it can cross threads,
processes and the storage layer without dragging heavy imports along.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Union

Role = Literal["bible", "writer", "memory", "planner", "chooser", "repair"]


@dataclass(frozen=True)
class Story:
    id: str
    title: str
    premise: str
    genre: str
    outline: str
    head_step_id: str | None
    created_at: datetime
    updated_at: datetime
    readable: bool = False
    reader_may_extend: bool = False
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One node of a story's tree: the instruction it followed and what it produced."""

    id: str
    story_id: str
    parent_id: str | None
    instruction: str
    paragraph: str
    short_term_memory: str
    memory_reason: str
    next_instructions: tuple[str, str, str]
    backend: str
    model: str
    created_at: datetime
    fallbacks: tuple[str, ...] = ()
    branch_owner: str | None = None  # a reader's id for reader branches; None for the author


@dataclass(frozen=True)
class NewStep:
    """What the engine hands storage to commit; storage assigns id and time."""

    story_id: str
    parent_id: str | None
    instruction: str
    paragraph: str
    short_term_memory: str
    memory_reason: str
    next_instructions: tuple[str, str, str]
    backend: str
    model: str
    fallbacks: tuple[str, ...] = ()
    branch_owner: str | None = None


@dataclass(frozen=True)
class MemoryEntry:
    id: str
    story_id: str
    step_id: str
    text: str
    pinned: bool = False
    excluded: bool = False


@dataclass(frozen=True)
class RecalledMemory:
    """A long-term memory chosen for a prompt, with why: its cosine score or a pin."""

    memory_id: str
    step_id: str
    text: str
    score: float
    pinned: bool = False


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True)
class ContextSection:
    """One named part of a prompt as it was sent: what the context viewer shows."""

    name: str
    text: str
    tokens: int
    trimmed_chars: int = 0


# ---- events streamed by a step -------------------------------------------------------


@dataclass(frozen=True)
class StepStarted:
    story_id: str
    instruction: str
    context: tuple[ContextSection, ...]
    recalled: tuple[RecalledMemory, ...]


@dataclass(frozen=True)
class ParagraphDelta:
    """A piece of the paragraph being written; `snapshot` is the whole text so far."""

    delta: str
    snapshot: str


@dataclass(frozen=True)
class PhaseChanged:
    phase: Literal["writing", "remembering", "planning", "committing"]


@dataclass(frozen=True)
class StepCompleted:
    step: Step
    usage: Usage
    fallbacks: tuple[str, ...]


StepEvent = Union[StepStarted, ParagraphDelta, PhaseChanged, StepCompleted]

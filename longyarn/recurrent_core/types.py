"""Plain data that flows between the engine, storage, the model backends and the front ends.

Everything here is a frozen value of plain Python fields (dataclasses, and pydantic for the
validated sampling options) so that it can cross threads, processes and the storage layer
without dragging heavy imports along.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    context: "StepContext | None" = None  # what the writer was given; stored with the step


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


@dataclass(frozen=True)
class Prompt:
    """A role's prompt as parts, so that each backend can lay it out its own way.

    `task` is what the model must do (it carries the instruction); `context` is what it must
    know. With `jrt_repeats=2` a backend lays it out as task, context, context, task.
    """

    role: Role
    system: str
    task: str
    context: tuple[ContextSection, ...]
    output_format: str = ""  # how to answer, e.g. the labels or JSON keys expected
    template: str = ""  # where its template came from: "" for the shipped one, else the file


class Sampling(BaseModel):
    """Sampling options for one role; unknown options are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(1.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)  # 0 means off
    max_tokens: int = Field(600, ge=1, le=32768)
    min_p: float = Field(0.0, ge=0.0, lt=1.0)  # keep tokens at least min_p x the likeliest's probability; 0 is off
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, ge=1.0, le=3.0)  # divides repeated tokens' logits (llama.cpp, HF); 1 is off
    penalty_decay: float = Field(0.996, ge=0.0, le=1.0)  # RWKV-style decay of penalties
    stop: tuple[str, ...] = Field((), max_length=4)  # the reply ends before any of these (OpenAI takes 4)
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings_have_text(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not text for text in value):
            raise ValueError("a stop sequence cannot be empty")
        return value


@dataclass(frozen=True)
class SectionRecord:
    """A section of a writer prompt as stored with its step: its size and a fingerprint, not
    its text, which `longyarn.recurrent_core.context` rebuilds from the story, the previous step and the
    recalled memories (all stored anyway), so a long story's context costs little space."""

    name: str
    tokens: int
    chars: int  # length of the text as sent
    trimmed_chars: int
    fingerprint: str  # of the text as sent: tells whether a later edit changed its source


@dataclass(frozen=True)
class StepContext:
    """What a step's writer prompt held: its sections and the memories recalled for it.

    Written with the step; read back, each recalled memory carries its text as stored now.
    """

    sections: tuple[SectionRecord, ...]
    recalled: tuple[RecalledMemory, ...]
    template: str = ""  # the writer template's file when it was the writer's own; "" if shipped
    budget_tokens: int = 0  # the context budget the prompt was fitted to (0: not recorded)
    prompt_tokens: int = 0  # the whole prompt, as the backend counted it
    # (request, section, characters) trimmed from the step's other requests (memory, planner).
    trimmed_elsewhere: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class SentContext:
    """What the writer was given for one paragraph, section by section: the context viewer's view."""

    instruction: str
    sections: tuple[ContextSection, ...]
    recalled: tuple[RecalledMemory, ...]
    # Sections whose source was edited after the paragraph was written: shown as they read now.
    edited_since: frozenset[str] = frozenset()
    template: str = ""
    budget_tokens: int = 0
    prompt_tokens: int = 0
    trimmed_elsewhere: tuple[tuple[str, str, int], ...] = ()


# ---- events streamed by a step -------------------------------------------------------


@dataclass(frozen=True)
class StepStarted:
    story_id: str
    instruction: str
    context: tuple[ContextSection, ...]
    recalled: tuple[RecalledMemory, ...]
    template: str = ""  # the writer template's file when it is the writer's own
    budget_tokens: int = 0
    prompt_tokens: int = 0


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

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

Role = Literal["opening", "writer", "memory", "planner", "chooser", "repair", "continuity", "chapter_summary"]


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


BibleReason = Literal["always", "named", "meaning", "mentioned"]


@dataclass(frozen=True)
class ActivatedEntry:
    """A story bible entry that a writer prompt's activation chose: why, and whether it went in
    (see `longyarn.recurrent_core.bible_activation`)."""

    entry_id: str
    name: str  # as the entry was called then
    kind: str
    reason: BibleReason
    word: str = ""  # named or mentioned: the name or alias found
    # named: "the instruction", "the short-term memory" or "paragraph N"; mentioned: the entry naming it
    where: str = ""
    secondary_key: str = ""  # for an entry with secondary keys: the one found beside its name
    score: float = 0.0  # by meaning: the cosine similarity to the instruction
    fact_ids: tuple[str, ...] = ()  # its facts in force at the paragraph, in the order sent
    tokens: int = 0
    trimmed: str = ""  # why it was left out ("bible budget", "context budget"); "" when sent
    cut_to_chars: int = 0  # an always entry alone longer than the bible budget: sent cut to this


@dataclass(frozen=True)
class BibleActivation:
    """The story bible section of a writer prompt: every entry activated, in priority order (sent
    and trimmed alike), and the section's own token budget."""

    entries: tuple[ActivatedEntry, ...]
    budget_tokens: int = 0

    @property
    def sent(self) -> tuple[ActivatedEntry, ...]:
        return tuple(entry for entry in self.entries if not entry.trimmed)


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
    bible: BibleActivation | None = None  # which bible entries went in and why; None: no bible
    # What the continuity check found against the facts sent; None: not checked (see continuity).
    contradictions: "tuple[Contradiction, ...] | None" = None


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
    bible: BibleActivation | None = None


# ---- story bible updates a step proposes (see recurrent_core.bible_proposals) --------------


@dataclass(frozen=True)
class DroppedUpdate:
    """A proposed bible update that was not kept: what it was, and one sentence saying why."""

    what: str
    reason: str


@dataclass(frozen=True)
class ProposedUpdate:
    """One checked bible update: a new entry (with `facts`), a new fact of `entry_name`, or the
    end of its fact `text` (id `fact_id`) at the paragraph before the one it came from."""

    kind: Literal["new_entry", "new_fact", "end_fact"]
    entry_name: str
    entry_kind: str = ""
    aliases: tuple[str, ...] = ()
    description: str = ""
    facts: tuple[str, ...] = ()  # a new entry's facts
    text: str = ""  # a new or ended fact's text
    fact_id: str = ""  # an ended fact's id

    def describe(self) -> str:
        if self.kind == "new_entry":
            return f"a new {self.entry_kind}, {self.entry_name!r}"
        if self.kind == "new_fact":
            return f"a fact of {self.entry_name!r}: {self.text}"
        return f"the end of {self.entry_name!r}'s fact {self.text!r}"


@dataclass(frozen=True)
class Contradiction:
    """A sentence of a paragraph that the continuity check found against a fact in force."""

    fact_id: str
    entry_name: str
    fact: str  # the fact's text as it was checked
    sentence: str
    explanation: str = ""


@dataclass(frozen=True)
class BibleProposals:
    """What a step proposes for the bible, learned from paragraph `paragraph` (1-based)."""

    paragraph: int
    updates: tuple[ProposedUpdate, ...] = ()
    dropped: tuple[DroppedUpdate, ...] = ()

    @property
    def dropped_reasons(self) -> tuple[str, ...]:
        return tuple(item.reason for item in self.dropped)


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
    bible: BibleActivation | None = None  # the story bible entries activated, and why


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
    chapter_ends: bool = False  # the model marked the paragraph as its chapter's last
    # What the step's memory reply proposed for the story bible, checked (see bible_proposals);
    # None when nothing was asked (a prose-only model). Front ends apply it, or queue it.
    bible_updates: BibleProposals | None = None
    # The continuity check's findings against the facts in force; None: not checked (off, no
    # facts sent, or a prose-only model).
    contradictions: tuple[Contradiction, ...] | None = None


StepEvent = Union[StepStarted, ParagraphDelta, PhaseChanged, StepCompleted]

"""Between ORM rows and the engine's records: rows out as frozen dataclasses, values in checked.

Rows never leave storage: every store method hands back the dataclasses of
`longyarn.recurrent_core.types`, so no session or lazy load crosses a thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.types import (
    ActivatedEntry,
    BibleActivation,
    Contradiction,
    MemoryEntry,
    RecalledMemory,
    SectionRecord,
    Step,
    StepContext,
    Story,
)

from .models import MemoryRow, StepContextRow, StoryRow

EMBEDDING_DTYPE = np.dtype("<f4")  # stored little-endian whatever the machine


def new_row_id() -> str:
    """A fresh primary key for a step, memory or reader place."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """Now, timezone-aware, as every stored time is."""
    return datetime.now(timezone.utc)


# ---- rows to engine types --------------------------------------------------------------


def story_record(row: StoryRow) -> Story:
    """The engine's `Story` of a story row."""
    return Story(
        id=row.id,
        title=row.title,
        premise=row.premise,
        genre=row.genre,
        outline=row.outline,
        head_step_id=row.head_step_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        readable=row.readable,
        reader_may_extend=row.reader_may_extend,
        settings=dict(row.settings),
    )


def step_record(row: Any) -> Step:
    """From a StepRow, or a Core row of the steps table (same names)."""
    first, second, third = row.next_instructions
    return Step(
        id=row.id,
        story_id=row.story_id,
        parent_id=row.parent_id,
        instruction=row.instruction,
        paragraph=row.paragraph,
        short_term_memory=row.short_term_memory,
        memory_reason=row.memory_reason,
        next_instructions=(first, second, third),
        backend=row.backend,
        model=row.model,
        created_at=row.created_at,
        fallbacks=tuple(row.fallbacks),
        branch_owner=row.branch_owner,
    )


def memory_record(row: MemoryRow) -> MemoryEntry:
    """The engine's `MemoryEntry` of a memory row (without its embedding)."""
    return MemoryEntry(
        id=row.id,
        story_id=row.story_id,
        step_id=row.step_id,
        text=row.text,
        pinned=row.pinned,
        excluded=row.excluded,
    )


def step_context_record(row: StepContextRow, memories: dict[str, MemoryRow]) -> StepContext:
    """A stored context, each recalled memory with its text as `memories` holds it now."""
    recalled = []
    for item in row.recalled:
        memory = memories.get(item["memory_id"])
        recalled.append(
            RecalledMemory(
                memory_id=item["memory_id"],
                step_id=memory.step_id if memory is not None else "",
                text=memory.text if memory is not None else "",
                score=float(item["score"]),
                pinned=bool(item["pinned"]),
            )
        )
    # `sections` is the list of sections, or (since the prompt's details were recorded) an
    # object holding that list and the details: the column's type did not have to change.
    stored = row.sections if isinstance(row.sections, dict) else {"sections": row.sections}
    return StepContext(
        sections=tuple(
            SectionRecord(
                name=item["name"],
                tokens=int(item["tokens"]),
                chars=int(item["chars"]),
                trimmed_chars=int(item["trimmed_chars"]),
                fingerprint=str(item["fingerprint"]),
            )
            for item in stored["sections"]
        ),
        recalled=tuple(recalled),
        template=str(stored.get("template") or ""),
        budget_tokens=int(stored.get("budget_tokens") or 0),
        prompt_tokens=int(stored.get("prompt_tokens") or 0),
        trimmed_elsewhere=tuple(
            (str(role), str(name), int(chars)) for role, name, chars in stored.get("trimmed_elsewhere") or ()
        ),
        bible=bible_activation_record(stored["bible"]) if stored.get("bible") else None,
        contradictions=contradictions_record(stored["contradictions"]) if "contradictions" in stored else None,
    )


# Each contradiction the continuity check found, as stored with the step's context.
_CONTRADICTION_KEYS = {"fact_id": "fact_id", "entry_name": "entry", "fact": "fact", "sentence": "sentence", "explanation": "why"}


def contradictions_json(found: tuple[Contradiction, ...]) -> list[dict]:
    return [{key: getattr(item, field) for field, key in _CONTRADICTION_KEYS.items()} for item in found]


def contradictions_record(stored: list) -> tuple[Contradiction, ...]:
    return tuple(
        Contradiction(**{field: str(item.get(key) or "") for field, key in _CONTRADICTION_KEYS.items()})
        for item in stored or ()
    )


# Each activated bible entry as stored: its fields under these keys, those left at their
# default left out (a step's record stays a few hundred bytes).
_ACTIVATED_KEYS = {
    "entry_id": "id", "name": "name", "kind": "kind", "reason": "reason", "word": "word",
    "where": "where", "secondary_key": "also", "score": "score", "fact_ids": "facts",
    "tokens": "tokens", "trimmed": "trimmed", "cut_to_chars": "cut",
}


def bible_activation_json(activation: BibleActivation) -> dict:
    entries = []
    for entry in activation.entries:
        stored = {}
        for field, key in _ACTIVATED_KEYS.items():
            value = getattr(entry, field)
            if value or field in ("entry_id", "name", "kind", "reason"):
                stored[key] = list(value) if isinstance(value, tuple) else value
        entries.append(stored)
    return {"budget": int(activation.budget_tokens), "entries": entries}


def bible_activation_record(stored: dict) -> BibleActivation:
    entries = []
    for item in stored.get("entries") or ():
        values = {field: item[key] for field, key in _ACTIVATED_KEYS.items() if key in item}
        values["fact_ids"] = tuple(values.get("fact_ids") or ())
        entries.append(ActivatedEntry(**values))
    return BibleActivation(tuple(entries), int(stored.get("budget") or 0))


# ---- engine types to rows, checked -----------------------------------------------------


def step_context_row(context: StepContext, story_id: str, step_id: str) -> StepContextRow:
    """The row that keeps a step's context: sizes and fingerprints, recalled ids and scores."""
    sections = [
        {
            "name": section.name,
            "tokens": int(section.tokens),
            "chars": int(section.chars),
            "trimmed_chars": int(section.trimmed_chars),
            "fingerprint": section.fingerprint,
        }
        for section in context.sections
    ]
    details = {
        "template": context.template,
        "budget_tokens": int(context.budget_tokens),
        "prompt_tokens": int(context.prompt_tokens),
        "trimmed_elsewhere": [[role, name, int(chars)] for role, name, chars in context.trimmed_elsewhere],
        "bible": bible_activation_json(context.bible) if context.bible is not None else None,
    }
    details = {key: value for key, value in details.items() if value}  # a few hundred bytes a step
    if context.contradictions is not None:  # checked: kept even when it found none
        details["contradictions"] = contradictions_json(context.contradictions)
    return StepContextRow(
        step_id=step_id,
        story_id=story_id,
        sections={"sections": sections, **details} if details else sections,
        # Ids and scores only: the texts are the memories' own, stored once.
        recalled=[
            {"memory_id": memory.memory_id, "score": round(float(memory.score), 4), "pinned": memory.pinned}
            for memory in context.recalled
        ],
    )


def encode_embedding(embedding: object) -> tuple[bytes, int]:
    """Validate an embedding and return its little-endian float32 bytes and length."""
    if not (
        isinstance(embedding, np.ndarray)
        and embedding.dtype == np.float32
        and embedding.ndim == 1
        and embedding.size > 0
    ):
        described = (
            f"a {embedding.dtype} array of shape {embedding.shape}"
            if isinstance(embedding, np.ndarray)
            else f"a {type(embedding).__name__}"
        )
        raise InvalidInput(
            f"An embedding must be a non-empty one-dimensional float32 array, not {described}, "
            "so nothing was saved; pass the embedder's vector for this one text."
        )
    if not np.isfinite(embedding).all():
        raise InvalidInput(
            "The embedding holds NaN or infinite values, so nothing was saved; "
            "check the embedding model's output."
        )
    return embedding.astype(EMBEDDING_DTYPE, copy=False).tobytes(), int(embedding.shape[0])


def three_instructions(next_instructions: Sequence[str]) -> list[str]:
    """The planner's three next instructions as stored; anything else is refused."""
    if len(next_instructions) != 3 or not all(isinstance(i, str) for i in next_instructions):
        raise InvalidInput(
            f"A step needs exactly three next instructions as text, not {len(next_instructions)}, "
            "so nothing was saved; parse the planner's output into three options."
        )
    return list(next_instructions)

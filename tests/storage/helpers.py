"""Builders shared by the storage tests: embeddings, new steps, chains of steps."""

from __future__ import annotations

import zlib

import numpy as np
from sqlalchemy import func, insert, select

from longyarn.recurrent_core.types import NewStep, Step
from longyarn.storage import SqlStore
from longyarn.storage.models import MemoryRow, StepRow

EMBEDDING_MODEL = "test-embedder"
DIM = 8


def vector(seed: int, dim: int = DIM) -> np.ndarray:
    """A distinct, reproducible float32 embedding per seed."""
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def new_step(story_id: str, parent_id: str | None, paragraph: str, **overrides) -> NewStep:
    fields = dict(
        story_id=story_id,
        parent_id=parent_id,
        instruction=f"Write: {paragraph}",
        paragraph=paragraph,
        short_term_memory=f"After: {paragraph}",
        memory_reason="kept the thread",
        next_instructions=("go on", "turn back", "wait"),
        backend="openai",
        model="gpt-test",
    )
    fields.update(overrides)
    return NewStep(**fields)


def write_chain(
    store: SqlStore, story_id: str, paragraphs: list[str], parent_id: str | None = None
) -> list[Step]:
    """Commit paragraphs one after another (each the child of the last); returns the steps."""
    steps = []
    for index, paragraph in enumerate(paragraphs):
        step = store.commit_step(
            new_step(story_id, parent_id, paragraph),
            embedding=vector(zlib.crc32(paragraph.encode()) + index),
            embedding_model=EMBEDDING_MODEL,
        )
        steps.append(step)
        parent_id = step.id
    return steps


def row_counts(store: SqlStore, story_id: str) -> tuple[int, int]:
    """(steps, memories) stored for a story, deleted or not, on the branch or not."""
    with store.engine.connect() as connection:
        steps = connection.scalar(
            select(func.count()).select_from(StepRow).where(StepRow.story_id == story_id)
        )
        memories = connection.scalar(
            select(func.count()).select_from(MemoryRow).where(MemoryRow.story_id == story_id)
        )
    return steps, memories


def insert_steps(store: SqlStore, rows: list[dict]) -> None:
    """Store many steps' rows at once (one executemany), bypassing commit_step for speed."""
    with store.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # The parent key's check is planned once, while the table is still empty, as a
            # scan, then run for each row: 10,000 rows take seconds. Plan each check afresh.
            # (A real server's autovacuum re-plans it as a story grows a paragraph at a time.)
            connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        connection.execute(insert(StepRow), rows)

"""Storage reads that grow with a story: walking a branch and loading memory vectors.

Builds one SQLite story of --steps paragraphs in a chain, plus --memories memory rows of
--dim float32 values, then times:
- `SqlStore.branch` (one recursive CTE) against the naive baseline, one `get_step` per parent;
- `SqlStore.memory_vectors` (one query, one joined buffer) against loading the same rows as ORM
  objects and stacking one `np.frombuffer` per row.
Each is the best of --repeats runs; the ratio is baseline / ours.

    python benchmarks/storage_branch.py [--steps 10000] [--memories 100000] [--dim 384]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from longyarn.storage import SqlStore, open_store  # noqa: E402
from longyarn.storage.models import MemoryRow, StepRow  # noqa: E402

EMBEDDING_MODEL = "bench-embedder"


def best_seconds(function, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return min(timings)


def build_story(store: SqlStore, steps: int, memories: int, dim: int) -> str:
    story = store.create_story(title="Bench", premise="p", genre="g", outline="")
    now = datetime.now(timezone.utc)
    step_ids = [f"{index:032x}" for index in range(max(steps, memories))]
    vectors = np.random.default_rng(0).standard_normal((memories, dim)).astype("<f4")
    step_rows = [
        dict(
            id=step_id, story_id=story.id, parent_id=step_ids[index - 1] if index else None,
            instruction="Go on.", paragraph=f"Paragraph {index}.", short_term_memory="",
            memory_reason="", next_instructions=["a", "b", "c"], backend="openai",
            model="bench", fallbacks=[], created_at=now, deleted=False, branch_owner=None,
        )
        for index, step_id in enumerate(step_ids)
    ]
    memory_rows = [
        dict(
            id=f"m{index:031x}", story_id=story.id, step_id=step_ids[index],
            text=f"Paragraph {index}.", embedding=vectors[index].tobytes(), dim=dim,
            embedding_model=EMBEDDING_MODEL, pinned=False, excluded=False, created_at=now,
        )
        for index in range(memories)
    ]
    with store.engine.begin() as connection:
        connection.execute(insert(StepRow), step_rows)
        connection.execute(insert(MemoryRow), memory_rows)
    store.set_head(story.id, step_ids[steps - 1])
    return story.id


def branch_one_query_per_step(store: SqlStore, story_id: str) -> list:
    """The baseline: follow parent ids with one lookup each."""
    steps = []
    step_id = store.get_story(story_id).head_step_id
    while step_id is not None:
        step = store.get_step(step_id)
        steps.append(step)
        step_id = step.parent_id
    return steps[::-1]


def vectors_one_array_per_row(store: SqlStore, story_id: str) -> np.ndarray:
    """The baseline: ORM rows, one np.frombuffer each, then np.stack."""
    with Session(store.engine) as session:
        rows = session.scalars(
            select(MemoryRow).where(
                MemoryRow.story_id == story_id, MemoryRow.embedding_model == EMBEDDING_MODEL
            )
        ).all()
        return np.stack([np.frombuffer(row.embedding, dtype="<f4") for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder, open_store(Path(folder) / "bench.db") as store:
        started = time.perf_counter()
        story_id = build_story(store, args.steps, args.memories, args.dim)
        print(f"built {args.steps:,} steps and {args.memories:,} x {args.dim} memories "
              f"in {time.perf_counter() - started:.1f} s")

        assert store.branch(story_id) == branch_one_query_per_step(store, story_id)
        ours = best_seconds(lambda: store.branch(story_id), args.repeats)
        baseline = best_seconds(lambda: branch_one_query_per_step(store, story_id), args.repeats)
        print(f"branch() of {args.steps:,} steps: {ours * 1e3:8.1f} ms (recursive CTE); "
              f"baseline one query per step {baseline * 1e3:8.1f} ms; "
              f"{baseline / ours:.1f}x faster")

        ours = best_seconds(lambda: store.count_steps(story_id), args.repeats)
        print(f"count_steps() of {args.steps:,} steps: {ours * 1e3:8.1f} ms")

        _, _, matrix = store.memory_vectors(story_id, EMBEDDING_MODEL)
        np.testing.assert_array_equal(matrix, vectors_one_array_per_row(store, story_id))
        ours = best_seconds(lambda: store.memory_vectors(story_id, EMBEDDING_MODEL), args.repeats)
        baseline = best_seconds(lambda: vectors_one_array_per_row(store, story_id), args.repeats)
        print(f"memory_vectors() of {args.memories:,} x {args.dim}: {ours * 1e3:8.1f} ms "
              f"(one query, joined buffer); baseline ORM rows + frombuffer per row "
              f"{baseline * 1e3:8.1f} ms; {baseline / ours:.1f}x faster")


if __name__ == "__main__":
    main()

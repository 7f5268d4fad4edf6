"""Engine overhead per step: everything except waiting for the model.

With an instant in-process backend, one step is embedding (instruction and paragraph), recall,
prompt building, parsing and the SQLite commit. Prints p50/p95 at 100, 1,000 and 10,000 stored
memories against the target (p50 < 50 ms at 10,000 on a 2-core machine), then the recall
itself over 100,000 vectors against the target (< 5 ms), with the numpy matrix-vector product
alone as the baseline.

    python benchmarks/engine_overhead.py [--sizes 100 1000 10000] [--steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longyarn.recurrent_core.backends.base import BackendInfo, Chunk, ModelBackend  # noqa: E402
from longyarn.recurrent_core.embeddings import default_embedder  # noqa: E402
from longyarn.recurrent_core.engine import Engine, EngineConfig  # noqa: E402
from longyarn.recurrent_core.memory import RecallIndex  # noqa: E402
from longyarn.recurrent_core.types import MemoryEntry, NewStep  # noqa: E402
from longyarn.storage.db import open_store  # noqa: E402

WORDS = (
    "river lantern orchard castle winter letter storm harbour violin garden mirror forest "
    "bridge candle signal tower market ribbon compass feather"
).split()


class InstantBackend(ModelBackend):
    """Answers every role at once, so only the engine's own work is timed."""

    def __init__(self) -> None:
        self.info = BackendInfo(name="instant", model="instant", supports_json_schema=True)
        self.rng = random.Random(0)

    async def stream(self, request):
        role = request.prompt.role
        if role == "writer":
            text = " ".join(self.rng.choice(WORDS) for _ in range(120)) + "."
        elif role == "memory":
            text = json.dumps({"short_term_memory": "The hero walks on. " * 8, "reason": "Kept the journey."})
        else:
            places = self.rng.sample(WORDS, 3)
            text = json.dumps({"instructions": [f"The hero follows the {place}." for place in places]})
        for start in range(0, len(text), 40):
            yield Chunk(text[start : start + 40])


def fill(store, story_id: str, count: int, dim: int, rng: np.random.Generator) -> None:
    """Commit `count` steps with random unit vectors (embedding them for real would take minutes)."""
    parent = store.get_story(story_id).head_step_id
    for i in range(count):
        vector = rng.standard_normal(dim).astype(np.float32)
        vector /= np.linalg.norm(vector)
        step = store.commit_step(
            NewStep(story_id, parent, "Go on.", f"Paragraph {i}: " + " ".join(rng.choice(WORDS, 60)),
                    "memory", "reason", ("a", "b", "c"), "instant", "instant"),
            embedding=vector, embedding_model=default_embedder().name,
        )
        parent = step.id


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


async def step_times(sizes: list[int], steps: int) -> None:
    embedder = default_embedder()
    embedder.embed(["warm up"])
    rng = np.random.default_rng(0)
    print(f"{'memories':>9} {'p50 ms':>8} {'p95 ms':>8}   target: p50 < 50 ms at 10,000")
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(str(Path(tmp) / "bench.db"))
        engine = Engine(store, InstantBackend(), embedder, EngineConfig())
        story, _ = await engine.start_story("A journey.", "", title="Bench", outline="A long walk.")
        have = 0
        for size in sizes:
            fill(store, story.id, size - have, 384, rng)
            have = size
            await engine.run_step(story.id, "Warm the caches.")
            have += 1
            times = []
            for i in range(steps):
                # As batch mode and most writers do: follow one of the three candidates.
                head = store.get_step(store.get_story(story.id).head_step_id)
                start = time.perf_counter()
                await engine.run_step(story.id, head.next_instructions[i % 3])
                times.append((time.perf_counter() - start) * 1000)
                have += 1
            print(f"{size:>9,} {statistics.median(times):8.1f} {percentile(times, 95):8.1f}")
        store.close()


class _Vectors:
    """A store holding only vectors, for timing recall over 100,000 memories without a database."""

    def __init__(self, n: int, dim: int) -> None:
        rng = np.random.default_rng(1)
        matrix = rng.standard_normal((n, dim)).astype(np.float32)
        self.matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        self.entries = [MemoryEntry(f"m{i}", "s", f"step{i}", f"text {i}") for i in range(n)]

    def memory_version(self, story_id: str) -> int:
        return 1

    def memory_vectors(self, story_id: str, embedding_model: str):
        return 1, self.entries, self.matrix


def recall_time(n: int = 100_000, dim: int = 384, repeats: int = 50) -> None:
    vectors = _Vectors(n, dim)
    index = RecallIndex(vectors, "bench")
    branch = [entry.step_id for entry in vectors.entries]
    query = vectors.matrix[123] + 0.01
    index.recall("s", query, k=3, branch_step_ids=branch)  # loads the cache
    ours, baseline, read_floor = [], [], []
    for i in range(repeats):
        start = time.perf_counter()
        vectors.matrix.sum()  # reading the matrix once: no exact recall can beat this
        read_floor.append((time.perf_counter() - start) * 1000)
        branch.append(f"step-new-{i}")  # each step extends the branch by one, as in a real story
        start = time.perf_counter()
        result = index.recall("s", query, k=3, branch_step_ids=branch, exclude_step_ids={branch[-2]})
        ours.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        scores = vectors.matrix @ query
        np.argpartition(-scores, 3)[:3]
        baseline.append((time.perf_counter() - start) * 1000)
    assert result[0].memory_id == "m123"
    p50, base = statistics.median(ours), statistics.median(baseline)
    floor = statistics.median(read_floor)
    print(f"recall over {n:,} vectors: p50 {p50:.2f} ms, p95 {percentile(ours, 95):.2f} ms "
          f"(target < 5 ms); bare numpy matvec+argpartition p50 {base:.2f} ms; ratio {p50 / base:.2f}x")
    print(f"  memory-read floor (summing the {vectors.matrix.nbytes / 1e6:.0f} MB matrix once): "
          f"p50 {floor:.2f} ms; recall / floor {p50 / floor:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    asyncio.run(step_times(sorted(args.sizes), args.steps))
    recall_time()


if __name__ == "__main__":
    main()

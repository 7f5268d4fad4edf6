"""Long-term memory recall: exact cosine similarity over a story's paragraph embeddings.

Each story's vectors live in one float32 matrix cached in memory. The cache is checked against
the store's memory version (a counter bumped in the same transaction as any memory change), so a
change from another process is seen, and a commit made here is appended without a reload.
Below about a million vectors an exact matrix-vector product beats an approximate index.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from threadpoolctl import ThreadpoolController

from .store import StoryStore
from .types import MemoryEntry, RecalledMemory


_blas_controller: ThreadpoolController | None = None
_blas_lock = threading.Lock()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's OpenBLAS on one thread for a block.

    A matrix-vector product is bound by memory, so a second BLAS thread barely speeds it up,
    and after a call OpenBLAS's threads spin for a while: on 2 cores that stole ~35 ms from
    the embedding that follows a recall over 10,000 memories. (torch's own BLAS is untouched.)
    """
    global _blas_controller
    # One block at a time: the limit is process-wide, and overlapping blocks would restore it
    # out of order.
    with _blas_lock:
        if _blas_controller is None:
            _blas_controller = ThreadpoolController().select(internal_api="openblas")
        with _blas_controller.limit(limits=1):
            yield


@dataclass
class _StoryVectors:
    version: int
    entries: list[MemoryEntry]
    matrix: np.ndarray  # (capacity, dim); rows [0, len(entries)) are live
    row_of_step: dict[str, int] = field(default_factory=dict)
    pinned: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # The rows on the branch recalled last time, keyed by its last step: the next step's branch
    # is that branch plus one step, so it is extended instead of rebuilt from 10,000s of ids.
    branch_key: tuple[str, int] | None = None
    branch_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def size(self) -> int:
        return len(self.entries)

    def live(self) -> np.ndarray:
        return self.matrix[: self.size]


class RecallIndex:
    """Per-story cached vectors and top-k recall; safe to share between threads."""

    def __init__(self, store: StoryStore, embedding_model: str) -> None:
        self._store = store
        self._embedding_model = embedding_model
        self._stories: dict[str, _StoryVectors] = {}
        self._lock = threading.Lock()

    def _load(self, story_id: str) -> _StoryVectors:
        version, entries, matrix = self._store.memory_vectors(story_id, self._embedding_model)
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        vectors = _StoryVectors(version, list(entries), matrix)
        vectors.row_of_step = {entry.step_id: row for row, entry in enumerate(vectors.entries)}
        vectors.pinned = np.array([entry.pinned for entry in vectors.entries], dtype=bool)
        vectors.excluded = np.array([entry.excluded for entry in vectors.entries], dtype=bool)
        return vectors

    def vectors(self, story_id: str) -> _StoryVectors:
        """The story's vectors, reloaded if anything changed them since they were cached."""
        version = self._store.memory_version(story_id)
        with self._lock:
            cached = self._stories.get(story_id)
            if cached is not None and cached.version == version:
                return cached
        loaded = self._load(story_id)
        with self._lock:
            self._stories[story_id] = loaded
        return loaded

    def note_commit(
        self, story_id: str, entry: MemoryEntry, vector: np.ndarray, new_version: int
    ) -> None:
        """Append a memory this process just committed, if the cache was current before it."""
        with self._lock:
            cached = self._stories.get(story_id)
            if cached is None or cached.version != new_version - 1:
                self._stories.pop(story_id, None)  # reload lazily on next use
                return
            vector = np.asarray(vector, dtype=np.float32).reshape(-1)
            if cached.size and vector.shape[0] != cached.matrix.shape[1]:
                self._stories.pop(story_id, None)
                return
            if cached.size == cached.matrix.shape[0]:
                # Grow geometrically so appends cost O(1) amortised.
                capacity = max(16, cached.matrix.shape[0] * 2)
                grown = np.empty((capacity, vector.shape[0]), dtype=np.float32)
                if cached.size:  # an empty cache may have no width yet: (0, 0)
                    grown[: cached.size] = cached.live()
                cached.matrix = grown
            cached.matrix[cached.size] = vector
            cached.row_of_step[entry.step_id] = cached.size
            cached.pinned = np.append(cached.pinned, entry.pinned)
            cached.excluded = np.append(cached.excluded, entry.excluded)
            cached.entries.append(entry)
            cached.version = new_version

    def forget(self, story_id: str) -> None:
        with self._lock:
            self._stories.pop(story_id, None)

    def recall(
        self,
        story_id: str,
        query: np.ndarray,
        *,
        k: int,
        branch_step_ids: list[str],
        exclude_step_ids: set[str] = frozenset(),
    ) -> list[RecalledMemory]:
        """Pinned memories first, then the k most similar others, all from the given branch.

        Only memories of steps on `branch_step_ids` (the current branch) are candidates, so a
        sibling branch's paragraphs never leak into this one. Memories of `exclude_step_ids`
        (paragraphs already in the prompt) and memories a person excluded are skipped.
        """
        vectors = self.vectors(story_id)
        # One consistent view: a commit appending meanwhile writes past `size` only.
        with self._lock:
            size = vectors.size
            entries = vectors.entries[:size]
            matrix = vectors.matrix[:size]
            pinned_rows, excluded_rows = vectors.pinned[:size], vectors.excluded[:size]
        if size == 0:
            return []
        allowed = self._branch_rows(vectors, size, branch_step_ids) & ~excluded_rows
        for step_id in exclude_step_ids:
            row = vectors.row_of_step.get(step_id)
            if row is not None and row < size:
                allowed[row] = False
        pinned = pinned_rows & allowed
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        with one_blas_thread():
            scores = matrix @ query
        results = [self._recalled(entries[row], scores[row], True) for row in np.flatnonzero(pinned)]
        candidates = np.flatnonzero(allowed & ~pinned)
        if k > 0 and candidates.size:
            take = min(k, candidates.size)
            candidate_scores = scores[candidates]
            top = np.argpartition(-candidate_scores, take - 1)[:take]
            top = top[np.argsort(-candidate_scores[top], kind="stable")]
            results.extend(self._recalled(entries[candidates[i]], candidate_scores[i], False) for i in top)
        return results

    def _branch_rows(self, vectors: _StoryVectors, size: int, branch_step_ids: list[str]) -> np.ndarray:
        """A fresh boolean mask over the first `size` rows: those whose step lies on the branch."""
        key = (branch_step_ids[-1], len(branch_step_ids)) if branch_step_ids else None
        with self._lock:
            previous_key, previous_rows = vectors.branch_key, vectors.branch_rows
        mask = np.zeros(size, dtype=bool)
        kept = min(size, previous_rows.size)
        if key is not None and key == previous_key:
            mask[:kept] = previous_rows[:kept]
        elif (
            previous_key is not None
            and len(branch_step_ids) == previous_key[1] + 1
            and branch_step_ids[-2] == previous_key[0]
        ):
            mask[:kept] = previous_rows[:kept]
            row = vectors.row_of_step.get(branch_step_ids[-1])
            if row is not None and row < size:
                mask[row] = True
        else:
            rows = np.fromiter(
                (vectors.row_of_step.get(step_id, -1) for step_id in branch_step_ids),
                dtype=np.int64,
                count=len(branch_step_ids),
            )
            mask[rows[(rows >= 0) & (rows < size)]] = True
        with self._lock:
            vectors.branch_key, vectors.branch_rows = key, mask.copy()
        return mask

    @staticmethod
    def _recalled(entry: MemoryEntry, score: float, pinned: bool) -> RecalledMemory:
        return RecalledMemory(
            memory_id=entry.id, step_id=entry.step_id, text=entry.text, score=float(score), pinned=pinned
        )

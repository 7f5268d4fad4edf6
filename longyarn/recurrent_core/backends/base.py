"""The model backend interface: a prompt in, a stream of text chunks out."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import AsyncIterator

from ..types import Prompt, Sampling, Usage


@dataclass(frozen=True)
class GenerationRequest:
    prompt: Prompt
    sampling: Sampling
    json_schema: dict | None = None  # ask for structured output where the server can
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A piece of generated text; the last chunk of a stream may carry usage and no text.

    `finish_reason` comes with the last chunk where the backend knows it: "length" means the
    reply was cut off by max_tokens.
    """

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


@dataclass
class BackendInfo:
    name: str  # "openai" or "local"
    model: str
    supports_json_schema: bool = False
    jrt_repeats: int = 1
    # A model trained on fiction alone (the bundled demo): it cannot summarise or plan, so the
    # engine does not ask it to and fills the memory and instructions from the paragraph.
    prose_only: bool = False
    extra: dict = field(default_factory=dict)


class ModelBackend(abc.ABC):
    """A model that streams text. Implementations raise `ModelError` with one clear sentence."""

    info: BackendInfo

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield chunks of the reply. Cancelling the consuming task stops generation."""

    def take_notices(self) -> tuple[str, ...]:
        """Sentences for the user about settings the backend had to leave out since the last
        call (each said once); the engine adds them to the step's fallbacks."""
        return ()

    def count_tokens(self, text: str) -> int:
        """A token count for the context viewer; backends with a tokenizer override this."""
        return max(1, len(text) // 4) if text else 0

    async def aclose(self) -> None:
        return None

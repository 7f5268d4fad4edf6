"""The model backend interface: a prompt in, a stream of text chunks out."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import AsyncIterator

from pydantic import BaseModel, ConfigDict, Field

from ..types import ContextSection, Role, Usage


class Sampling(BaseModel):
    """Sampling options for one role; unknown options are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(1.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)  # 0 means off
    max_tokens: int = Field(600, ge=1, le=32768)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    penalty_decay: float = Field(0.996, ge=0.0, le=1.0)  # RWKV-style decay of penalties
    seed: int | None = None


@dataclass(frozen=True)
class Prompt:
    """A role's prompt as parts, so that each backend can lay it out its own way.

    `task` is what the model must do (it carries the instruction); `context` is what it must
    know. With `jrt_repeats=2` a backend lays it out as task, context, context, task.
    """

    role: Role
    system: str
    task: str
    context: tuple[ContextSection, ...]
    output_format: str = ""  # how to answer, e.g. the labels or JSON keys expected


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

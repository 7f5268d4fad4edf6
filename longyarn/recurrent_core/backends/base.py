"""The model backend interface: a prompt in, a stream of text chunks out."""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field, replace
from typing import AsyncIterator

from ..prompts import layout_messages
from ..types import Prompt, Sampling, Usage

# A chat template's tokens around each message (role markers, separators), and the reply's
# opening: generous for the common templates (ChatML 4-5, Llama-3 5, Mistral 3-4).
MESSAGE_OVERHEAD_TOKENS = 8
REPLY_PRIMING_TOKENS = 4


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

    async def stream_many(self, request: GenerationRequest, copies: int) -> AsyncIterator[tuple[int, Chunk]]:
        """`copies` replies to one request at once, as (which reply, chunk); each reply ends with
        its own chunk that carries its finish_reason. By default the requests run concurrently
        (a server's concurrency limit applies); each gets its own seed when one is set."""
        queue: asyncio.Queue[tuple[int, Chunk] | BaseException | None] = asyncio.Queue()

        async def one(index: int) -> None:
            sampling = request.sampling
            if sampling.seed is not None:
                sampling = sampling.model_copy(update={"seed": sampling.seed + index})
            try:
                async for chunk in self.stream(replace(request, sampling=sampling)):
                    await queue.put((index, chunk))
                await queue.put(None)
            except BaseException as error:  # handed to the consumer, which raises it
                await queue.put(error)

        tasks = [asyncio.ensure_future(one(index)) for index in range(copies)]
        try:
            for _finished in range(copies):
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def take_notices(self) -> tuple[str, ...]:
        """Sentences for the user about settings the backend had to leave out since the last
        call (each said once); the engine adds them to the step's fallbacks."""
        return ()

    def count_tokens(self, text: str) -> int:
        """A token count for the context viewer; backends with a tokenizer override this."""
        return max(1, len(text) // 4) if text else 0

    def prompt_tokens(self, prompt: Prompt) -> int:
        """The whole request's size in tokens as this backend sends it (JRT's repeated context
        included): what the engine fits to its context budget. Chat messages by default."""
        messages = layout_messages(prompt, self.info.jrt_repeats)
        return sum(self.count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages) + REPLY_PRIMING_TOKENS

    async def aclose(self) -> None:
        return None

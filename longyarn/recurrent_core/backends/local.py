"""The local recurrent model (RWKV-7) as a model backend: the engine's prompts in, text out.

    backend = LocalBackend.load("rwkv7-g1-0.1b.pth")          # or LocalBackend.from_settings(s)
    async for chunk in backend.stream(request):                # the engine's interface
        ...

The model itself runs on a `LocalRuntime` (`longyarn.recurrent_core.local_lm.runtime`: the
compute thread, streaming, the prefix-state cache, tokenisation); this adapter lays the
engine's prompts out for it and says where each role's reply ends.

How a prompt is laid out:
- Chat-tuned checkpoints (RWKV-7 G1: "g1" in the file name, or `"chat": true` in a longyarn
  model's config.json) get RWKV's `User: ...\\n\\nAssistant:` turn; base models get a
  completion that ends with the role's cue ("Next paragraph:", "Short-term memory:"). Either
  way `prompts.layout_completion` does it, with JRT (task, context, context, task) when
  `jrt_repeats` is 2, the default here: a recurrent model recalls far better when it has
  read the question before the material.
- The stream is exactly the model's continuation. For a base model the cue is not repeated
  in it; the engine's parsers read a reply without its leading label (a memory reply that
  starts with the memory itself, a planner reply that starts with the first instruction).
- A reply ends at its role's end marker (`local_lm.chat_format`: a paragraph for a base
  model's writer, the next "User:" turn for a chat model ...). The request's stop strings
  apply too.
- `longyarn serve` serves the same runtime over HTTP, and `ServedLocalBackend`
  (`longyarn.recurrent_core.backends.served_local`, `--checkpoint URL`) reads it with the same
  layout and ends.
- A longyarn model whose config.json says `"prose_only": true` (what `longyarn.training.train`
  writes: it learns from books alone, like the bundled demo) is never asked for memory, plans
  or an outline; the engine fills those from the paragraph and says so (`BackendInfo.prose_only`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Sequence

from .. import prompts
from ..local_lm.chat_format import reply_ends, reply_min_chars
from ..local_lm.model import LocalLM
from ..local_lm.runtime import LocalGeneration, LocalRuntime, LocalRuntimeStats
from ..local_lm.sampling import STORY_WRITING_SAMPLING, SamplerConfig
from ..local_lm.tokenizer import Tokenizer
from ..types import Prompt, Sampling
from .base import BackendInfo, Chunk, GenerationRequest, ModelBackend

# The writer's sampling for a local model: the RWKV community's story-writing settings
# (see local_lm.sampling), with the engine's paragraph length. Other roles keep the
# engine's defaults: penalties on repeated tokens would fight JSON and labelled output.
LOCAL_WRITER_SAMPLING = STORY_WRITING_SAMPLING.model_copy(update={"max_tokens": 500})
# The engine's ceilings allow for tokenizers that spend 3-4 tokens a word outside English.
# The RWKV World tokenizer does not, and a local model pays for every token it rambles past
# a cut (the base demo model rarely writes these formats at all), so its ceilings stay lower.
LOCAL_MAX_TOKENS = {"opening": 700, "memory": 400, "planner": 400}


class LocalBackend(ModelBackend):
    """An RWKV-7 model run in this process, streaming through the `ModelBackend` interface.

    `LocalBackend(lm, tokenizer, **options)` runs on a new `LocalRuntime` of them (the options
    are the runtime's: `chat`, `jrt_repeats`, `prefix_cache_mb`, `max_prompt_tokens`,
    `model_name`); `LocalBackend.on(runtime)` on one that is loaded already.
    """

    def __init__(self, lm: LocalLM, tokenizer: Tokenizer, **options: Any) -> None:
        self._adopt(LocalRuntime(lm, tokenizer, **options))

    def _adopt(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime
        self.info = BackendInfo(
            name="local",
            model=runtime.model_name,
            supports_json_schema=False,
            jrt_repeats=runtime.jrt_repeats,
            prose_only=runtime.prose_only,
            extra={
                "chat": runtime.chat,
                "device": str(runtime.lm.device),
                "prefix_cache_mb": runtime.prefix_cache_mb,
            },
        )

    # ---- building one -----------------------------------------------------------------

    @classmethod
    def on(cls, runtime: LocalRuntime) -> LocalBackend:
        """The backend for a runtime that is loaded already (it shares its model and counters)."""
        backend = cls.__new__(cls)
        backend._adopt(runtime)
        return backend

    @classmethod
    def load(cls, checkpoint: str | Path, **options: Any) -> LocalBackend:
        """Load a BlinkDL .pth or a longyarn model directory (see `LocalRuntime.load`)."""
        return cls.on(LocalRuntime.load(checkpoint, **options))

    @classmethod
    def from_settings(cls, settings: Any, checkpoint: str | Path | None = None) -> LocalBackend:
        """The backend that settings ask for (see `LocalRuntime.from_settings`)."""
        return cls.on(LocalRuntime.from_settings(settings, checkpoint))

    @staticmethod
    def recommended_sampling(defaults: Mapping[str, Sampling]) -> dict[str, Sampling]:
        """Per-role sampling that suits a local RWKV model; merge it over the engine's `defaults`."""
        recommended = {
            role: defaults[role].model_copy(update={"max_tokens": max_tokens})
            for role, max_tokens in LOCAL_MAX_TOKENS.items()
            if role in defaults
        }
        recommended["writer"] = LOCAL_WRITER_SAMPLING
        return recommended

    # ---- the backend interface ------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield the model's continuation of the laid-out prompt, then a usage-only chunk.

        Raises `InvalidInput` for a prompt over `max_prompt_tokens` or bad sampling settings,
        and `ModelError` if the model fails. `request.json_schema` is not enforced (the
        engine asks in words and parses tolerantly).
        """
        prompt = request.prompt
        config = SamplerConfig.from_sampling(request.sampling, stop=request.stop)
        text = self.layout(prompt)
        generation = self.runtime.generate(
            text,
            config,
            reply_end_markers=reply_ends(prompt.role, self.chat),
            stable_head=self._stable_head(prompt, text),
            reply_min_chars=reply_min_chars(prompt.role, self.chat),
        )
        try:
            async for piece in generation:
                yield Chunk(text=piece)
        finally:
            await generation.aclose()
        # "length" tells the engine the reply was cut off by max_tokens.
        yield Chunk(usage=generation.usage, finish_reason=generation.finish_reason)

    async def stream_many(self, request: GenerationRequest, copies: int) -> AsyncIterator[tuple[int, Chunk]]:
        """`copies` replies read from one prefill and sampled as one batch (see
        `LocalRuntime.generate_many`); each reply's last chunk carries its finish_reason."""
        prompt = request.prompt
        text = self.layout(prompt)
        generations = self.runtime.generate_many(
            text,
            SamplerConfig.from_sampling(request.sampling, stop=request.stop),
            copies,
            reply_end_markers=reply_ends(prompt.role, self.chat),
            stable_head=self._stable_head(prompt, text),
            reply_min_chars=reply_min_chars(prompt.role, self.chat),
        )
        try:
            async for index, piece in generations:
                yield index, Chunk(text=piece)
        finally:
            await generations.aclose()
        for index, reason in enumerate(generations.finish_reasons):
            yield index, Chunk(finish_reason=reason)
        if generations.usage is not None:
            yield 0, Chunk(usage=generations.usage)

    def layout(self, prompt: Prompt) -> str:
        """The prompt text this model reads for `prompt` (chat turn or completion, JRT or not)."""
        return prompts.layout_completion(prompt, self.info.jrt_repeats, chat=self.chat)

    def generate(self, prompt: str | Sequence[int], config: SamplerConfig, **options: Any) -> LocalGeneration:
        """Raw text or token ids in, no layout (see `LocalRuntime.generate`)."""
        return self.runtime.generate(prompt, config, **options)

    def count_tokens(self, text: str) -> int:
        """The exact number of tokens the model would read for `text`."""
        return self.runtime.count_tokens(text)

    def prompt_tokens(self, prompt: Prompt) -> int:
        """The exact number of tokens the model reads for `prompt`, as laid out for it."""
        return self.runtime.count_tokens(self.layout(prompt))

    @property
    def lm(self) -> LocalLM:
        """The model the runtime runs."""
        return self.runtime.lm

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer."""
        return self.runtime.tokenizer

    @property
    def chat(self) -> bool:
        """Whether the checkpoint is chat-tuned (it then reads prompts as a chat turn)."""
        return self.runtime.chat

    @property
    def stats(self) -> LocalRuntimeStats:
        """A snapshot of the runtime's counters."""
        return self.runtime.stats

    def close(self) -> None:
        """Stop every generation within a token, drop queued ones, and wait until none runs."""
        self.runtime.close()

    async def aclose(self) -> None:
        """`close`, without blocking the event loop."""
        await self.runtime.aclose()

    def _stable_head(self, prompt: Prompt, full_text: str) -> str | None:
        """The start of `full_text` that every prompt with this system text shares."""
        if not prompt.system.strip():
            return None
        bare = Prompt(role=prompt.role, system=prompt.system, task="", context=())
        bare_text = self.layout(bare)
        length = 0
        for bare_char, full_char in zip(bare_text, full_text):
            if bare_char != full_char:
                break
            length += 1
        return full_text[:length] or None


__all__ = ["LOCAL_WRITER_SAMPLING", "LocalBackend"]

"""The local recurrent model (RWKV-7) as a model backend: prompts in, streamed text out.

    backend = LocalBackend.load("rwkv7-g1-0.1b.pth")          # or LocalBackend.from_settings(s)
    async for chunk in backend.stream(request):                # the engine's interface
        ...
    generation = backend.generate("Once upon a time", config)  # raw text, for `longyarn serve`
    async for text in generation: ...
    generation.usage, generation.finish_reason

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
- A reply ends at its role's end marker (`rwkv_replies`: a paragraph for a base model's
  writer, the next "User:" turn for a chat model ...). The request's stop strings apply too.
- `longyarn serve` serves this backend over HTTP, and `ServedLocalBackend`
  (`longyarn.recurrent_core.backends.served_local`, `--checkpoint URL`) reads it with the same layout
  and ends.
- A longyarn model whose config.json says `"prose_only": true` (what `local_lm.train` writes:
  it learns from books alone, like the bundled demo) is never asked for memory, plans or an
  outline; the engine fills those from the paragraph and says so (`BackendInfo.prose_only`).

How it runs: the model runs on longyarn's one compute thread (`longyarn.recurrent_core.compute`, shared
with the embedder), and requests take turns (CPU inference is compute-bound; a second
concurrent forward would only slow both). Text reaches the event loop through an asyncio
queue. Cancelling the consuming task sets a flag that generation checks before every token,
so it stops within one token, and the cancelled task ends only once the compute thread has
let go of the model.

Prompts are read from the longest prefix whose state the prefix-state cache holds (see
`longyarn.recurrent_core.local_lm.prefix_cache`), and new states are kept at the end of the stable
head (the system rules), where the prompt parts from the previous ones, at regular
intervals, and just before the last token, so a retry re-reads one token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import torch

from .. import prompts
from ..compute import run_on_compute_thread, run_urgent_work, submit_to_compute_thread
from ..errors import CheckpointError, InvalidInput, LongyarnError, ModelError
from ..local_lm.model import LocalLM
from ..local_lm.prefix_cache import PrefixStateCache, common_prefix_length
from ..local_lm.sampling import STORY_WRITING_SAMPLING, FinishReason, SamplerConfig, generate
from ..local_lm.state import RecurrentState
from ..local_lm.tokenizer import Tokenizer, check_matches, load_tokenizer_for
from ..types import Usage
from .base import BackendInfo, Chunk, GenerationRequest, ModelBackend, Prompt, Sampling
from .rwkv_replies import (  # noqa: F401  (ReplyBoundary, CHAT_TURN_END: re-exported)
    CHAT_TURN_END,
    ReplyBoundary,
    is_chat_checkpoint,
    reply_ends,
    reply_min_chars,
)

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "demo_model"
DEFAULT_JRT_REPEATS = 2
DEFAULT_PREFIX_CACHE_MB = 256
DEFAULT_MAX_PROMPT_TOKENS = 8192

# The writer's sampling for a local model: the RWKV community's story-writing settings
# (see local_lm.sampling), with the engine's paragraph length. Other roles keep the
# engine's defaults: penalties on repeated tokens would fight JSON and labelled output.
LOCAL_WRITER_SAMPLING = STORY_WRITING_SAMPLING.model_copy(update={"max_tokens": 500})
# The engine's ceilings allow for tokenizers that spend 3-4 tokens a word outside English.
# The RWKV World tokenizer does not, and a local model pays for every token it rambles past
# a cut (the base demo model rarely writes these formats at all), so its ceilings stay lower.
LOCAL_MAX_TOKENS = {"bible": 700, "memory": 400, "planner": 400}

# Prefix-state checkpoints: every CHECKPOINT_SPACING tokens, spaced wider on long prompts so
# that one prompt keeps at most about MAX_SPACED_CHECKPOINTS states (each is 2.4 MB at 0.1B).
CHECKPOINT_SPACING = 64
MAX_SPACED_CHECKPOINTS = 16

# Text reaches the event loop at most this often after the first piece (see _work).
STREAM_INTERVAL_S = 1 / 60

@dataclass
class LocalBackendStats:
    """What the backend has done since it was made (updated on the compute thread)."""

    requests: int = 0
    cancelled: int = 0
    forward_calls: int = 0  # model calls, prefill segments and decode steps alike
    prompt_tokens: int = 0  # tokens of the prompts received
    prompt_tokens_read: int = 0  # of those, read by the model; the rest came from the cache
    completion_tokens: int = 0
    # forward_calls when the last generation was cancelled: the worker may finish the model
    # call under way and start at most one more (it checks before every token), so
    # forward_calls - forward_calls_at_last_cancel <= 1 once the cancelled task has ended.
    forward_calls_at_last_cancel: int | None = None


_FINISHED = object()


class LocalGeneration:
    """One generation on the local model: `async for text in generation`, then its outcome.

    After the iteration ends, `usage` holds the prompt and completion token counts and
    `finish_reason` is "stop" (a stop string or end marker), "eos" (the model's end of text)
    or "length" (max_tokens). Closing it early (or cancelling the task that iterates it)
    stops the model within one token; `finish_reason` is then "cancelled".
    """

    def __init__(
        self,
        backend: LocalBackend,
        prompt: str | Sequence[int],
        config: SamplerConfig,
        reply_end_markers: Sequence[str],
        stable_head: str | None,
        reply_min_chars: int = 0,
    ) -> None:
        self.config = config
        self._reply_min_chars = reply_min_chars
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None
        self.seed: int | None = config.seed
        self._backend = backend
        self._prompt = prompt
        self._reply_end_markers = tuple(reply_end_markers)
        self._stable_head = stable_head
        self._pieces = self._relay()

    def __aiter__(self) -> LocalGeneration:
        return self

    async def __anext__(self) -> str:
        return await self._pieces.__anext__()

    async def aclose(self) -> None:
        """Stop the generation (if still running) and wait until the model is free."""
        await self._pieces.aclose()

    async def text(self) -> str:
        """The whole reply, once generation has ended."""
        return "".join([piece async for piece in self])

    async def _relay(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def deliver(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                cancelled.set()

        future = self._backend._submit(lambda: self._work(cancelled, deliver), cancelled)
        finished = failed = False
        try:
            while True:
                item = await queue.get()
                if item is _FINISHED:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    failed = True
                    raise item
                yield item  # type: ignore[misc]
        finally:
            if finished or failed:
                cancelled.set()
            else:  # the consumer stopped early
                self._backend._note_cancel(cancelled)
            if not future.cancel():
                try:
                    # Shielded: a second cancel must not leave the model running unwatched.
                    await asyncio.shield(asyncio.wrap_future(future))
                except Exception:  # the worker reports its errors through the queue
                    pass
            if self.finish_reason is None and not failed:
                self.finish_reason = "cancelled"

    def _work(self, cancelled: threading.Event, deliver: Callable[[object], None]) -> None:
        """Runs on the compute thread: prefill, then sample token by token until done."""
        backend = self._backend
        backend._count(requests=1)
        try:
            if cancelled.is_set():
                self.finish_reason = "cancelled"
                backend._count(cancelled=1)
                return
            prompt_ids = (
                backend.encode_prompt(self._prompt) if isinstance(self._prompt, str)
                else backend.check_prompt_ids(self._prompt)
            )
            prefilled = backend._prefill(prompt_ids, self._stable_head, cancelled.is_set)
            if prefilled is None:
                self.finish_reason = "cancelled"
                backend._count(cancelled=1)
                return
            logits, current = prefilled

            def step(token_id: int) -> torch.Tensor:
                nonlocal current
                run_urgent_work()  # e.g. a search's embedding: it need not wait for the reply
                next_logits, current = backend._forward([token_id], current)
                return next_logits

            generation = generate(step, logits, backend.tokenizer, self.config, should_stop=cancelled.is_set)
            self.seed = generation.seed
            boundary = ReplyBoundary(self._reply_end_markers, self._reply_min_chars)
            ended_at_marker = False
            unsent: list[str] = []
            last_sent = -math.inf
            for piece in generation:
                text, ended_at_marker = boundary.feed(piece)
                if text:
                    unsent.append(text)
                # The first text goes at once; later text at most every STREAM_INTERVAL_S,
                # which a reader cannot see but which spares the event loop (and an HTTP
                # client) a wake-up per token, time the compute thread would wait for.
                if unsent and time.monotonic() - last_sent >= STREAM_INTERVAL_S:
                    deliver("".join(unsent))
                    unsent.clear()
                    last_sent = time.monotonic()
                if ended_at_marker:
                    generation.close()
                    break
            if not ended_at_marker:
                unsent.append(boundary.flush())
            if any(unsent):
                deliver("".join(unsent))
            self.finish_reason = "stop" if ended_at_marker else generation.finish_reason
            completion_tokens = len(generation.token_ids)
            backend._count(
                completion_tokens=completion_tokens,
                cancelled=int(self.finish_reason == "cancelled"),
            )
            self.usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens)
            deliver(_FINISHED)
        except LongyarnError as error:
            deliver(error)
        except Exception as error:  # a bug or a broken model: one sentence, with the cause chained
            failure = ModelError(
                f"The local model failed while writing ({type(error).__name__}: "
                f"{str(error)[:160]}); nothing was kept, so retry, or try another checkpoint."
            )
            failure.__cause__ = error
            deliver(failure)


class LocalBackend(ModelBackend):
    """An RWKV-7 model run in this process, streaming through the `ModelBackend` interface.

    lm: a loaded `LocalLM`; tokenizer: its tokenizer (`load_tokenizer_for(path)`).
    chat: the checkpoint is chat-tuned (None: guess from `model_name` and the model's config).
    jrt_repeats: 2 lays prompts out as task, context, context, task; 1 reads the context once.
    prefix_cache_mb: memory for saved prefix states (0 turns the cache off).
    max_prompt_tokens: longer prompts raise `InvalidInput`.
    model_name: how the model is named in `info` and to `longyarn serve` clients.
    """

    def __init__(
        self,
        lm: LocalLM,
        tokenizer: Tokenizer,
        *,
        chat: bool | None = None,
        jrt_repeats: int = DEFAULT_JRT_REPEATS,
        prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB,
        max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
        model_name: str = "local-rwkv7",
    ) -> None:
        if jrt_repeats not in (1, 2):
            raise InvalidInput(
                f"jrt_repeats must be 1 (off) or 2, not {jrt_repeats!r}; no model was set up, "
                "so pick one of those."
            )
        if max_prompt_tokens < 1 or prefix_cache_mb < 0:
            raise InvalidInput(
                "max_prompt_tokens must be at least 1 and prefix_cache_mb at least 0; no model "
                "was set up, so correct them."
            )
        check_matches(tokenizer, lm.vocab_size)
        self.lm = lm
        self.tokenizer = tokenizer
        self.chat = is_chat_checkpoint(model_name, lm.extra_config) if chat is None else chat
        prose_only = lm.extra_config.get("prose_only") is True and not self.chat
        self.max_prompt_tokens = max_prompt_tokens
        self.prefix_cache = PrefixStateCache(prefix_cache_mb * 2**20)
        self.info = BackendInfo(
            name="local",
            model=model_name,
            supports_json_schema=False,
            jrt_repeats=jrt_repeats,
            prose_only=prose_only,
            extra={"chat": self.chat, "device": str(lm.device), "prefix_cache_mb": prefix_cache_mb},
        )
        self._stats = LocalBackendStats()
        self._books_lock = threading.Lock()  # guards the stats, the running set and `_closed`
        self._head_ids: dict[str, list[int]] = {}
        # The cancel flags and futures of unfinished generations (on the shared compute thread).
        self._running: dict[threading.Event, concurrent.futures.Future] = {}
        self._closed = False

    # ---- building one -----------------------------------------------------------------

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        *,
        device: str = "cpu",
        chat: bool | None = None,
        jrt_repeats: int = DEFAULT_JRT_REPEATS,
        prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB,
        max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    ) -> LocalBackend:
        """Load a BlinkDL .pth or a longyarn model directory, with its tokenizer."""
        path = Path(checkpoint).expanduser()
        lm = run_on_compute_thread(lambda: LocalLM.load(path, device=device))
        tokenizer = load_tokenizer_for(path)
        name = path.stem if path.is_file() else path.name
        return cls(
            lm, tokenizer, chat=chat, jrt_repeats=jrt_repeats, prefix_cache_mb=prefix_cache_mb,
            max_prompt_tokens=max_prompt_tokens, model_name=name,
        )

    @classmethod
    def from_settings(cls, settings: Any, checkpoint: str | Path | None = None) -> LocalBackend:
        """The backend that settings ask for (reads `checkpoint`, `device`, `jrt_repeats`).

        `checkpoint` overrides `settings.checkpoint`; with neither, the bundled demo model.
        """
        chosen = checkpoint or getattr(settings, "checkpoint", None)
        if chosen is None:
            if not DEMO_MODEL_DIR.is_dir():
                raise CheckpointError(
                    "The bundled demo model is not installed with this copy of longyarn, so no "
                    "model was loaded; pass --checkpoint PATH to an RWKV-7 model, or set "
                    "OPENAI_API_KEY (or --base-url URL) to use a model server."
                )
            chosen = DEMO_MODEL_DIR
        return cls.load(
            chosen,
            device=getattr(settings, "device", None) or "cpu",
            jrt_repeats=getattr(settings, "jrt_repeats", None) or DEFAULT_JRT_REPEATS,
        )

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
        generation = self.generate(
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

    def generate(
        self,
        prompt: str | Sequence[int],
        config: SamplerConfig,
        *,
        reply_end_markers: Sequence[str] = (),
        stable_head: str | None = None,
        reply_min_chars: int = 0,
    ) -> LocalGeneration:
        """Start generating after `prompt` (text, or token ids); iterate the result for text.

        `reply_end_markers` end the reply once it has begun (module docstring); `stable_head`
        is text the prompt starts with that later prompts will share (its state is kept);
        an end marker within the first `reply_min_chars` characters does not end the reply.
        """
        return LocalGeneration(self, prompt, config, reply_end_markers, stable_head, reply_min_chars)

    def layout(self, prompt: Prompt) -> str:
        """The prompt text this model reads for `prompt` (chat turn or completion, JRT or not)."""
        return prompts.layout_completion(prompt, self.info.jrt_repeats, chat=self.chat)

    def count_tokens(self, text: str) -> int:
        """The exact number of tokens the model would read for `text`."""
        return len(self.tokenizer.encode(text)) if text else 0

    def encode_prompt(self, text: str) -> list[int]:
        """`text` as the model's token ids; `InvalidInput` past `max_prompt_tokens`."""
        return self.check_prompt_ids(self.tokenizer.encode(text))

    def check_prompt_ids(self, token_ids: Sequence[int]) -> list[int]:
        """The ids as a list, checked for length; an empty prompt starts at end of text."""
        ids = [int(token_id) for token_id in token_ids]
        if not ids:
            if self.tokenizer.eos_id is None:
                raise InvalidInput(
                    "The prompt is empty and this model's tokenizer has no end-of-text token to "
                    "start from; nothing was generated, so give the model some text."
                )
            ids = [self.tokenizer.eos_id]  # RWKV models begin every document after it
        if len(ids) > self.max_prompt_tokens:
            raise InvalidInput(
                f"The prompt is {len(ids):,} tokens long, more than this local model's limit of "
                f"{self.max_prompt_tokens:,}; nothing was generated, so shorten the context "
                "(a lower context budget) or raise max_prompt_tokens."
            )
        return ids

    @property
    def stats(self) -> LocalBackendStats:
        """A snapshot of the counters."""
        with self._books_lock:
            return replace(self._stats)

    def close(self) -> None:
        """Stop every generation within a token, drop queued ones, and wait until none runs."""
        with self._books_lock:
            self._closed = True
            running = dict(self._running)
        for cancelled, future in running.items():
            cancelled.set()
            future.cancel()  # only succeeds for work not started yet
        concurrent.futures.wait(running.values())

    async def aclose(self) -> None:
        """`close`, without blocking the event loop."""
        await asyncio.to_thread(self.close)

    # ---- on the compute thread --------------------------------------------------------------

    def _submit(self, work: Callable[[], None], cancelled: threading.Event) -> concurrent.futures.Future:
        if self._closed:
            raise ModelError(
                "The local model was already closed; nothing was generated, so start longyarn "
                "again."
            )
        future = submit_to_compute_thread(work)
        with self._books_lock:
            if self._closed:  # closed meanwhile: the work stops before its first token
                cancelled.set()
            self._running[cancelled] = future
        future.add_done_callback(lambda _: self._forget(cancelled))
        return future

    def _forward(
        self, token_ids: Sequence[int], state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """`lm.forward`, counted; every model call of this backend goes through here."""
        self._count(forward_calls=1)  # counted as it starts, for _note_cancel (see the stats)
        return self.lm.forward(token_ids, state)  # only ever on the compute thread: no lock

    def _forget(self, cancelled: threading.Event) -> None:
        with self._books_lock:
            self._running.pop(cancelled, None)

    def _count(self, **increments: int) -> None:
        with self._books_lock:
            for name, amount in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + amount)

    def _note_cancel(self, cancelled: threading.Event) -> None:
        """Tell a generation's worker to stop, noting how far the model had got."""
        if cancelled.is_set():
            return
        with self._books_lock:
            cancelled.set()
            self._stats.forward_calls_at_last_cancel = self._stats.forward_calls

    def _prefill(
        self, prompt_ids: list[int], stable_head: str | None, should_stop: Callable[[], bool]
    ) -> tuple[torch.Tensor, RecurrentState] | None:
        """Read the prompt from the longest cached prefix on, keeping new states on the way.

        Returns (last logits, state), or None if `should_stop()` turned true between segments.
        """
        n = len(prompt_ids)
        # The last token is always read, because its logits are needed (a state has none).
        matched, state = self.prefix_cache.lookup(prompt_ids[:-1])
        checkpoints = self._checkpoints(prompt_ids, matched, stable_head)
        self.prefix_cache.note_prompt(prompt_ids)
        start = matched
        logits: torch.Tensor | None = None
        for end in [*checkpoints, n]:
            if should_stop():
                return None
            run_urgent_work()
            logits, state = self._forward(prompt_ids[start:end], state)
            if end < n:
                self.prefix_cache.store(prompt_ids[:end], state)
            start = end
        self._count(prompt_tokens=n, prompt_tokens_read=n - matched)
        assert logits is not None and state is not None
        return logits, state

    def _checkpoints(self, prompt_ids: list[int], matched: int, stable_head: str | None) -> list[int]:
        """Where to keep states while reading `prompt_ids` after the first `matched` tokens."""
        if self.prefix_cache.max_bytes == 0:
            return []
        n = len(prompt_ids)
        last = n - 1  # so that a retry of this very prompt re-reads only its last token
        spacing = CHECKPOINT_SPACING * max(1, math.ceil(n / (CHECKPOINT_SPACING * MAX_SPACED_CHECKPOINTS)))
        points = set(range(spacing, last, spacing))
        points.add(last)
        points.add(self.prefix_cache.shared_prefix_length(prompt_ids))
        if stable_head:
            points.add(common_prefix_length(self._stable_head_ids(stable_head), prompt_ids))
        return sorted(point for point in points if matched < point <= last)

    def _stable_head(self, prompt: Prompt, full_text: str) -> str | None:
        """The start of `full_text` that every prompt with this system text shares."""
        if not prompt.system.strip():
            return None
        bare = Prompt(role=prompt.role, system=prompt.system, task="", context=())
        bare_text = prompts.layout_completion(bare, self.info.jrt_repeats, chat=self.chat)
        length = 0
        for bare_char, full_char in zip(bare_text, full_text):
            if bare_char != full_char:
                break
            length += 1
        return full_text[:length] or None

    def _stable_head_ids(self, head: str) -> list[int]:
        ids = self._head_ids.get(head)
        if ids is None:
            if len(self._head_ids) > 64:  # a handful of roles in practice
                self._head_ids.clear()
            ids = self._head_ids[head] = self.tokenizer.encode(head)
        return ids


__all__ = [
    "DEMO_MODEL_DIR",
    "LOCAL_WRITER_SAMPLING",
    "LocalBackend",
    "LocalBackendStats",
    "LocalGeneration",
    "ReplyBoundary",
    "is_chat_checkpoint",
    "reply_ends",
]

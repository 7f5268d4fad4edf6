"""The local RWKV-7 model at work: text in, a stream of text out, on longyarn's compute thread.

    runtime = LocalRuntime.load("rwkv7-g1-0.1b.pth")          # or LocalRuntime.from_settings(s)
    generation = runtime.generate("Once upon a time", config)  # text, or token ids
    async for text in generation: ...
    generation.usage, generation.finish_reason

Two adapters run on a runtime: `LocalBackend` (`longyarn.recurrent_core.backends.local`, the
engine's model backend, which lays the engine's prompts out) and `longyarn serve` (an
OpenAI-compatible server). What a client must know to prompt the model as longyarn does in
process (`chat`, `prose_only`, `jrt_repeats`, `max_prompt_tokens`) is kept here, so that both
say the same.

How it runs: the model runs on longyarn's one compute thread (`longyarn.recurrent_core.compute`,
shared with the embedder), and requests take turns (CPU inference is compute-bound; a second
concurrent forward would only slow both). Text reaches the event loop through an asyncio
queue. Cancelling the consuming task sets a flag that generation checks before every token,
so it stops within one token, and the cancelled task ends only once the compute thread has
let go of the model.

A reply ends at a stop string, at an end marker once the reply has begun (`reply_end_markers`,
see `chat_format`), at the model's end of text, or at max_tokens.

Prompts are read from the longest prefix whose state the prefix-state cache holds (see
`prefix_cache`), and new states are kept at the end of the stable head (the system rules),
where the prompt parts from the previous ones, at regular intervals, and just before the last
token, so a retry re-reads one token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

import torch

from ..compute import run_on_compute_thread, run_urgent_work, submit_to_compute_thread
from ..errors import CheckpointError, InvalidInput, LongyarnError, ModelError
from ..types import Usage
from .chat_format import ReplyBoundary, is_chat_checkpoint
from .model import LocalLM
from .prefix_cache import PrefixStateCache, common_prefix_length
from .sampling import FinishReason, SamplerConfig, SequenceSampling, generate
from .state import RecurrentState
from .tokenizer import Tokenizer, check_matches, load_tokenizer_for

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "demo_model"
DEFAULT_JRT_REPEATS = 2
DEFAULT_PREFIX_CACHE_MB = 256
DEFAULT_MAX_PROMPT_TOKENS = 8192

# Prefix-state checkpoints: every CHECKPOINT_SPACING tokens, spaced wider on long prompts so
# that one prompt keeps at most about MAX_SPACED_CHECKPOINTS states (each is 2.4 MB at 0.1B).
CHECKPOINT_SPACING = 64
MAX_SPACED_CHECKPOINTS = 16

# Text reaches the event loop at most this often after the first piece (see _work).
STREAM_INTERVAL_S = 1 / 60
# Versions of one paragraph written at once (generate_many): a batch this wide stays cheap.
MAX_COPIES = 8


@dataclass
class LocalRuntimeStats:
    """What the runtime has done since it was made (updated on the compute thread)."""

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


class _Pieces(tuple):
    """A batched step's pieces, delivered at once: one wake-up of the event loop a step."""


class LocalGeneration:
    """One generation on the local model: `async for text in generation`, then its outcome.

    After the iteration ends, `usage` holds the prompt and completion token counts and
    `finish_reason` is "stop" (a stop string or end marker), "eos" (the model's end of text)
    or "length" (max_tokens). Closing it early (or cancelling the task that iterates it)
    stops the model within one token; `finish_reason` is then "cancelled".
    """

    def __init__(
        self,
        runtime: LocalRuntime,
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
        self._runtime = runtime
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

        future = self._runtime._submit(lambda: self._work(cancelled, deliver), cancelled)
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
                for piece in item if isinstance(item, _Pieces) else (item,):
                    yield piece  # type: ignore[misc]
        finally:
            if finished or failed:
                cancelled.set()
            else:  # the consumer stopped early
                self._runtime._note_cancel(cancelled)
            if not future.cancel():
                try:
                    # Shielded: a second cancel must not leave the model running unwatched.
                    await asyncio.shield(asyncio.wrap_future(future))
                except Exception:  # the worker reports its errors through the queue
                    pass
            if self.finish_reason is None and not failed:
                self.finish_reason = "cancelled"

    def _read_prompt(self, cancelled: threading.Event) -> tuple[list[int], torch.Tensor, RecurrentState] | None:
        """On the compute thread: the prompt's ids, read (from the longest cached prefix on):
        (ids, last logits, state); None, counted as cancelled, if cancelled before or meanwhile."""
        runtime = self._runtime
        prefilled = None
        if not cancelled.is_set():
            prompt_ids = (
                runtime.encode_prompt(self._prompt) if isinstance(self._prompt, str)
                else runtime.check_prompt_ids(self._prompt)
            )
            prefilled = runtime._prefill(prompt_ids, self._stable_head, cancelled.is_set)
        if prefilled is None:
            self.finish_reason = "cancelled"
            runtime._count(cancelled=1)
            return None
        return prompt_ids, *prefilled

    def _work(self, cancelled: threading.Event, deliver: Callable[[object], None]) -> None:
        """Runs on the compute thread: prefill, then sample token by token until done."""
        runtime = self._runtime
        runtime._count(requests=1)
        try:
            read = self._read_prompt(cancelled)
            if read is None:
                return
            prompt_ids, logits, current = read

            def step(token_id: int) -> torch.Tensor:
                nonlocal current
                run_urgent_work()  # e.g. a search's embedding: it need not wait for the reply
                next_logits, current = runtime._forward([token_id], current, in_place=True)  # owned
                return next_logits

            generation = generate(step, logits, runtime.tokenizer, self.config, should_stop=cancelled.is_set)
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
            runtime._count(
                completion_tokens=completion_tokens,
                cancelled=int(self.finish_reason == "cancelled"),
            )
            self.usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens)
            deliver(_FINISHED)
        except LongyarnError as error:
            deliver(error)
        except Exception as error:  # a bug or a broken model: one sentence, with the cause chained
            deliver(_model_failure(error))


def _model_failure(error: Exception) -> ModelError:
    failure = ModelError(
        f"The local model failed while writing ({type(error).__name__}: "
        f"{str(error)[:160]}); nothing was kept, so retry, or try another checkpoint."
    )
    failure.__cause__ = error
    return failure


class LocalGenerations(LocalGeneration):
    """Several continuations of one prompt at once: `async for index, text in generations`.

    The prompt is read once; its state is cloned into a batch of `copies`, and each step feeds
    every sequence still going its own token in one batched model call, each sampled on its
    own (seeds `seed`, `seed + 1`, ... when a seed is given). A sequence that ends leaves the
    batch. Afterwards `finish_reasons[i]` says how each ended; `usage` counts the prompt once
    and every sequence's tokens.
    """

    def __init__(self, runtime: LocalRuntime, prompt: str | Sequence[int], config: SamplerConfig,
                 copies: int, reply_end_markers: Sequence[str], stable_head: str | None,
                 reply_min_chars: int = 0) -> None:
        if not 1 <= copies <= MAX_COPIES:
            raise InvalidInput(f"Ask for 1 to {MAX_COPIES} versions at once, not {copies}; nothing was generated.")
        self.copies = copies
        self.finish_reasons: list[FinishReason | None] = [None] * copies
        super().__init__(runtime, prompt, config, reply_end_markers, stable_head, reply_min_chars)

    def __aiter__(self) -> LocalGenerations:  # type: ignore[override]
        return self

    async def __anext__(self) -> tuple[int, str]:  # type: ignore[override]
        return await self._pieces.__anext__()  # type: ignore[return-value]

    def _work(self, cancelled: threading.Event, deliver: Callable[[object], None]) -> None:
        """Runs on the compute thread: one prefill, then every sequence a token per batched step."""
        runtime = self._runtime
        runtime._count(requests=1)
        try:
            read = self._read_prompt(cancelled)
            if read is None:
                return
            prompt_ids, logits, state = read
            seed = self.config.seed
            sequences = [
                SequenceSampling(replace(self.config, seed=None if seed is None else seed + i), runtime.tokenizer)
                for i in range(self.copies)
            ]
            boundaries = [ReplyBoundary(self._reply_end_markers, self._reply_min_chars) for _ in sequences]
            active = list(range(self.copies))
            batch_logits = logits.unsqueeze(0).expand(self.copies, -1)
            state = state.repeated(self.copies)
            while active and not cancelled.is_set():
                feed: list[tuple[int, int]] = []  # (row in the batch, token) of sequences going on
                pieces: list[tuple[int, str]] = []
                for row, index in enumerate(active):
                    token, text = sequences[index].take(batch_logits[row])
                    text, ended = boundaries[index].feed(text)
                    if token is None and not ended:
                        text += boundaries[index].flush()
                    if text:
                        pieces.append((index, text))
                    if ended:
                        sequences[index].finish_reason = "stop"
                    elif token is not None:
                        feed.append((row, token))
                if pieces:
                    deliver(_Pieces(pieces))
                if not feed:
                    break
                if len(feed) < len(active):  # some ended: they leave the batch
                    state = state.rows([row for row, _ in feed])
                active = [active[row] for row, _ in feed]
                run_urgent_work()
                tokens = torch.tensor([[token] for _, token in feed], device=runtime.lm.device)
                batch_logits, state = runtime._forward(tokens, state, in_place=True)  # a copy: owned
            for sequence in sequences:
                if cancelled.is_set():
                    sequence.cancel()
            self.finish_reasons = [sequence.finish_reason for sequence in sequences]
            self.finish_reason = "cancelled" if cancelled.is_set() else "stop"
            completion_tokens = sum(len(sequence.token_ids) for sequence in sequences)
            runtime._count(completion_tokens=completion_tokens, cancelled=int(cancelled.is_set()))
            self.usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens)
            deliver(_FINISHED)
        except LongyarnError as error:
            deliver(error)
        except Exception as error:  # a bug or a broken model: one sentence, with the cause chained
            deliver(_model_failure(error))


class LocalRuntime:
    """An RWKV-7 model loaded in this process, writing one generation at a time.

    lm: a loaded `LocalLM`; tokenizer: its tokenizer (`load_tokenizer_for(path)`).
    chat: the checkpoint is chat-tuned (None: guess from `model_name` and the model's config).
    jrt_repeats: how prompts for this model repeat their context (`prompts.layout_completion`):
        2 lays them out as task, context, context, task; 1 reads the context once.
    prefix_cache_mb: memory for saved prefix states (0 turns the cache off).
    max_prompt_tokens: longer prompts raise `InvalidInput`.
    model_name: how the model is named to the engine and to `longyarn serve` clients.
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
        self.model_name = model_name
        self.chat = is_chat_checkpoint(model_name, lm.extra_config) if chat is None else chat
        # A model trained on books alone (`"prose_only": true` in its config, as the bundled
        # demo): it continues prose but cannot summarise or plan.
        self.prose_only = lm.extra_config.get("prose_only") is True and not self.chat
        self.jrt_repeats = jrt_repeats
        self.max_prompt_tokens = max_prompt_tokens
        self.prefix_cache_mb = prefix_cache_mb
        self.prefix_cache = PrefixStateCache(prefix_cache_mb * 2**20)
        self._stats = LocalRuntimeStats()
        self._books_lock = threading.Lock()  # guards the stats, the running set and `_closed`
        self._head_ids: dict[str, list[int]] = {}
        # The cancel flags and futures of unfinished generations (on the shared compute thread).
        self._running: dict[threading.Event, concurrent.futures.Future] = {}
        self._closed = False

    # ---- building one -----------------------------------------------------------------

    @classmethod
    def load(
        cls, checkpoint: str | Path, *, device: str = "cpu", weights: str | None = None, **options: Any
    ) -> LocalRuntime:
        """Load a BlinkDL .pth or a longyarn model directory, with its tokenizer, its weights
        kept at `weights` on a CPU (see `LocalLM.load`); `options` are the constructor's
        (`chat`, `jrt_repeats`, `prefix_cache_mb`, `max_prompt_tokens`)."""
        path = Path(checkpoint).expanduser()
        lm = run_on_compute_thread(lambda: LocalLM.load(path, device=device, weights=weights))
        name = path.stem if path.is_file() else path.name
        return cls(lm, load_tokenizer_for(path), model_name=name, **options)

    @classmethod
    def from_settings(cls, settings: Any, checkpoint: str | Path | None = None) -> LocalRuntime:
        """The model that settings ask for (reads `checkpoint`, `device`, `weights`, `jrt_repeats_for`).

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
        jrt_repeats_for = getattr(settings, "jrt_repeats_for", None)
        return cls.load(
            chosen,
            device=getattr(settings, "device", None) or "cpu",
            weights=getattr(settings, "weights", None),
            jrt_repeats=jrt_repeats_for("local") if jrt_repeats_for else DEFAULT_JRT_REPEATS,
        )

    # ---- generating ---------------------------------------------------------------------

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

        `reply_end_markers` end the reply once it has begun (`chat_format.reply_ends`);
        `stable_head` is text the prompt starts with that later prompts will share (its state
        is kept); an end marker within the first `reply_min_chars` characters does not end
        the reply.
        """
        return LocalGeneration(self, prompt, config, reply_end_markers, stable_head, reply_min_chars)

    def generate_many(
        self,
        prompt: str | Sequence[int],
        config: SamplerConfig,
        copies: int,
        *,
        reply_end_markers: Sequence[str] = (),
        stable_head: str | None = None,
        reply_min_chars: int = 0,
    ) -> LocalGenerations:
        """`copies` continuations of `prompt`, read once and sampled as one batch; iterate the
        result for (index, text) pieces (see `LocalGenerations`)."""
        return LocalGenerations(self, prompt, config, copies, reply_end_markers, stable_head, reply_min_chars)

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
    def stats(self) -> LocalRuntimeStats:
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
        self, token_ids: Sequence[int], state: RecurrentState | None, in_place: bool = False
    ) -> tuple[torch.Tensor, RecurrentState]:
        """`lm.forward`, counted; every model call of this runtime goes through here. Decoding
        steps pass `in_place` for a state no one else holds (never one the prefix cache keeps)."""
        self._count(forward_calls=1)  # counted as it starts, for _note_cancel (see the stats)
        return self.lm.forward(token_ids, state, in_place=in_place)  # only on the compute thread: no lock

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

    def _stable_head_ids(self, head: str) -> list[int]:
        ids = self._head_ids.get(head)
        if ids is None:
            if len(self._head_ids) > 64:  # a handful of roles in practice
                self._head_ids.clear()
            ids = self._head_ids[head] = self.tokenizer.encode(head)
        return ids


__all__ = [
    "DEMO_MODEL_DIR",
    "LocalGeneration",
    "LocalGenerations",
    "LocalRuntime",
    "LocalRuntimeStats",
]

"""The local RWKV-7 backend on a tiny random model: streaming, layouts, stops, seeds, cancelling.

Random weights write gibberish, so these tests check mechanics, never quality.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import pytest
import torch

from longyarn.recurrent_core import prompts
from longyarn.recurrent_core.backends.base import GenerationRequest
from longyarn.recurrent_core.backends.local import LocalBackend
from longyarn.recurrent_core.engine import Engine, EngineConfig
from longyarn.recurrent_core.errors import InvalidInput, ModelError
from longyarn.recurrent_core.local_lm import load_checkpoint, save_own_format
from longyarn.recurrent_core.local_lm.chat_format import ReplyBoundary, is_chat_checkpoint
from longyarn.recurrent_core.local_lm.runtime import DEMO_MODEL_DIR
from longyarn.recurrent_core.local_lm.sampling import SamplerConfig
from longyarn.recurrent_core.replies import fallbacks
from longyarn.recurrent_core.types import ContextSection, Prompt, Sampling
from longyarn.training.synthetic import random_rwkv7_state_dict
from longyarn.training.tokenizer_training import train_tokenizer

STORY_TEXT = (
    "Once upon a time a small fox lived by the river. Every morning she swam to the island "
    "where the old heron kept his books, and every evening she came home with a new story. "
    "\"Tell me about the sea,\" said her brother. The fox laughed and said: \"Tomorrow.\"\n\n"
)


def write_tiny_local_model(
    directory: Path, *, chat: bool | None = None, seed: int = 0, prose_only: bool = False
) -> Path:
    """A longyarn model directory: 2 layers, 64 wide, a 400-token BPE, random weights."""
    template_texts = [
        path.read_text(encoding="utf-8")
        for path in sorted(Path(prompts.__file__).with_name("prompt_files").glob("*.md"))
    ]
    tokenizer = train_tokenizer([*template_texts, STORY_TEXT * 5], vocab_size=400)
    weights = random_rwkv7_state_dict(
        n_layer=2, n_embd=64, vocab_size=tokenizer.get_vocab_size(), head_size=32, seed=seed
    )
    config = {} if chat is None else {"chat": chat}
    if prose_only:
        config["prose_only"] = True
    return save_own_format(weights, config, tokenizer, directory)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # A 64-wide model gains nothing from more threads, and the machine is shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_local_model(tmp_path_factory.mktemp("models") / "tiny-base")


@pytest.fixture
async def backend(tiny_model_dir):
    backend = LocalBackend.load(tiny_model_dir)
    yield backend
    await backend.aclose()


def writer_prompt(instruction: str = "The fox swims to the island.", frame: str | None = None) -> Prompt:
    frame = frame or "Title: The Fox and the Heron\nPremise: A fox learns to read."
    return prompts.render_prompt(
        "writer",
        context_sections=(
            ContextSection("Story frame", frame, 0),
            ContextSection("Short-term memory", "The fox is at home with her brother.", 0),
        ),
        instruction=instruction,
    )


async def collect(backend, request):
    return [chunk async for chunk in backend.stream(request)]


async def generated_text(backend, prompt, config, **kwargs) -> str:
    return await backend.generate(prompt, config, **kwargs).text()


async def test_a_reply_streams_in_pieces_then_reports_its_usage(backend):
    prompt = writer_prompt()
    chunks = await collect(backend, GenerationRequest(prompt, Sampling(max_tokens=40, seed=3)))

    *pieces, last = chunks
    assert len(pieces) >= 2 and all(piece.text and piece.usage is None for piece in pieces)
    assert last.text == "" and last.usage is not None
    assert last.usage.prompt_tokens == backend.count_tokens(backend.layout(prompt))
    assert len(pieces) <= last.usage.completion_tokens <= 40
    assert backend.info.name == "local" and backend.info.model == "tiny-base"
    assert not backend.info.supports_json_schema


async def test_the_same_seed_writes_the_same_reply_and_another_seed_another(backend):
    prompt = writer_prompt()
    texts = []
    for seed in (7, 7, 8):
        chunks = await collect(backend, GenerationRequest(prompt, Sampling(max_tokens=40, seed=seed)))
        texts.append("".join(chunk.text for chunk in chunks))
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


async def test_base_models_get_a_completion_and_chat_models_a_user_turn(tmp_path, tiny_model_dir):
    prompt = writer_prompt()
    base = LocalBackend.load(tiny_model_dir)
    g1_named = LocalBackend.load(write_tiny_local_model(tmp_path / "rwkv7-g1a-tiny"))
    flagged = LocalBackend.load(write_tiny_local_model(tmp_path / "tuned", chat=True))
    try:
        assert not base.chat and g1_named.chat and flagged.chat
        completion = base.layout(prompt)
        assert "User:" not in completion
        assert completion.startswith(prompt.system[:40])
        assert completion.endswith(prompts.completion_cue("writer"))
        for chat in (g1_named, flagged):
            turn = chat.layout(prompt)
            assert turn.startswith("User: " + prompt.system[:40]) and turn.endswith("\n\nAssistant:")
            assert "\n\n" not in turn[: -len("\n\nAssistant:")]
        # The flag in the model's config overrides its name; an explicit choice overrides both.
        assert is_chat_checkpoint("rwkv7-g1b-1.5b-20251015-ctx8192.pth")
        assert not is_chat_checkpoint("rwkv7-g1b-1.5b.pth", {"chat": False})
        assert not is_chat_checkpoint("RWKV-x070-World-0.1B-v2.8-20241210-ctx4096.pth")
        assert not LocalBackend(g1_named.lm, g1_named.tokenizer, chat=False, model_name="rwkv7-g1").chat
    finally:
        for backend in (base, g1_named, flagged):
            await backend.aclose()


async def test_jrt_reads_the_context_twice(tiny_model_dir):
    frame = "Title: The Heron's Library\nPremise: An old heron keeps a library on an island."
    prompt = writer_prompt(frame=frame)
    usage, frame_tokens = {}, 0
    for repeats in (1, 2):
        backend = LocalBackend.load(tiny_model_dir, jrt_repeats=repeats)
        try:
            assert backend.info.jrt_repeats == repeats
            assert backend.layout(prompt).count(frame) == repeats
            chunks = await collect(backend, GenerationRequest(prompt, Sampling(max_tokens=2, seed=1)))
            usage[repeats] = chunks[-1].usage.prompt_tokens
            frame_tokens = backend.count_tokens(frame)
        finally:
            await backend.aclose()
    assert usage[2] - usage[1] >= frame_tokens


async def test_a_stop_string_ends_the_reply_before_it(backend):
    prompt = "The fox said:"
    greedy = SamplerConfig(temperature=0, max_tokens=30)
    free = await generated_text(backend, prompt, greedy)
    start = next(
        i for i in range(3, len(free) - 2)
        if "\ufffd" not in free[i : i + 2] and free.find(free[i : i + 2]) == i
    )
    stop = free[start : start + 2]

    generation = backend.generate(prompt, SamplerConfig(temperature=0, max_tokens=30, stop=(stop,)))
    stopped = await generation.text()

    assert stopped == free[:start]
    assert generation.finish_reason == "stop"


async def test_a_reply_end_marker_counts_only_once_the_reply_has_begun():
    boundary = ReplyBoundary(["\n\n"])
    emitted = []
    for piece in ["\n", "\n", "The fox", " swam.\n", "\nThe heron"]:
        text, ended = boundary.feed(piece)
        emitted.append(text)
        if ended:
            break
    assert ended
    assert "".join(emitted) == "\n\nThe fox swam."


async def test_cancelling_the_consumer_stops_the_model_within_one_token(backend):
    request = GenerationRequest(Prompt("chooser", "", "Count:", ()), Sampling(max_tokens=5000, seed=1))
    three_pieces = asyncio.Event()

    async def consume():
        received = 0
        async for chunk in backend.stream(request):
            received += bool(chunk.text)
            if received == 3:
                three_pieces.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three_pieces.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    stats = backend.stats
    assert stats.cancelled == 1
    assert stats.forward_calls - stats.forward_calls_at_last_cancel <= 1
    assert stats.completion_tokens < 5000
    # The model is free again at once.
    chunks = await collect(backend, GenerationRequest(writer_prompt(), Sampling(max_tokens=3, seed=1)))
    assert chunks[-1].usage.completion_tokens >= 1


async def start_a_long_reply(backend: LocalBackend) -> asyncio.Task:
    """A task streaming a reply of up to 30,000 tokens, returned once its first text is in."""
    request = GenerationRequest(Prompt("chooser", "", "Count:", ()), Sampling(max_tokens=30_000, seed=1))
    started = asyncio.Event()

    async def consume():
        async for chunk in backend.stream(request):
            if chunk.text:
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), timeout=30)
    return task


async def test_closing_a_backend_stops_its_writing_and_refuses_more_while_others_write_on(tiny_model_dir):
    # Every local model shares one compute thread: closing one must not stall or break another.
    closing = LocalBackend.load(tiny_model_dir)
    other = LocalBackend.load(tiny_model_dir)
    task = await start_a_long_reply(closing)
    try:
        await asyncio.wait_for(closing.aclose(), timeout=30)
        await asyncio.wait_for(task, timeout=30)  # the reply ends early instead of hanging
        assert closing.stats.completion_tokens < 30_000
        with pytest.raises(ModelError, match="already closed"):
            await collect(closing, GenerationRequest(writer_prompt(), Sampling(max_tokens=3)))
        chunks = await collect(other, GenerationRequest(writer_prompt(), Sampling(max_tokens=3, seed=1)))
        assert chunks[-1].usage.completion_tokens >= 1
    finally:
        task.cancel()
        await other.aclose()


async def test_a_search_embedding_is_answered_while_the_local_model_is_still_writing(backend, embedder):
    # The model and the embedder share one compute thread; a writer searching memories by
    # meaning during a long paragraph must not wait for the paragraph to end.
    embedder.embed(["warm up"])
    task = await start_a_long_reply(backend)
    try:
        vectors = await asyncio.wait_for(asyncio.to_thread(embedder.embed, ["the heron's library"]), timeout=60)
        assert vectors.shape == (1, 384)
        assert not task.done()  # answered between two of the model's tokens
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_prompt_over_the_limit_is_refused_before_the_model_runs(tiny_model_dir):
    backend = LocalBackend.load(tiny_model_dir, max_prompt_tokens=50)
    try:
        with pytest.raises(InvalidInput, match="limit of 50"):
            await collect(backend, GenerationRequest(writer_prompt(), Sampling(max_tokens=5)))
        assert backend.stats.forward_calls == 0
    finally:
        await backend.aclose()


async def test_a_prompt_sharing_a_cached_head_reads_only_its_new_tail_and_writes_the_same(tiny_model_dir):
    first, second = writer_prompt("The fox swims."), writer_prompt("The heron sings to the moon.")
    greedy = Sampling(temperature=0, max_tokens=20)
    cached = LocalBackend.load(tiny_model_dir)
    uncached = LocalBackend.load(tiny_model_dir, prefix_cache_mb=0)
    try:
        await collect(cached, GenerationRequest(first, greedy))
        before = cached.stats.prompt_tokens_read
        with_cache = await collect(cached, GenerationRequest(second, greedy))
        read = cached.stats.prompt_tokens_read - before
        without_cache = await collect(uncached, GenerationRequest(second, greedy))

        head = cached.count_tokens(second.system)
        assert with_cache[-1].usage.prompt_tokens - read >= head
        # The same text (how it is split into pieces depends on timing).
        assert "".join(c.text for c in with_cache) == "".join(c.text for c in without_cache)
        assert uncached.stats.prompt_tokens_read == uncached.stats.prompt_tokens
    finally:
        await cached.aclose()
        await uncached.aclose()


async def test_the_engine_writes_and_stores_two_steps_with_the_local_model(backend, store, embedder):
    sampling = {
        role: Sampling(max_tokens=tokens, seed=seed)
        for seed, (role, tokens) in enumerate(
            {"opening": 24, "writer": 24, "memory": 16, "planner": 24, "chooser": 4}.items()
        )
    }
    engine = Engine(store, backend, embedder, EngineConfig(sampling=sampling, parse_retries=1))
    story, _ = await engine.start_story("A fox learns to read in the heron's library.", "fable")

    completed = [await engine.run_step(story.id) for _ in range(2)]

    steps = store.branch(story.id)
    assert [step.id for step in steps] == [event.step.id for event in completed]
    for step, event in zip(steps, completed):
        assert step.backend == "local" and step.model == "tiny-base"
        assert step.paragraph and len(step.next_instructions) == 3
        assert step.fallbacks == event.fallbacks
    # Random weights write no readable memory update: the engine's fallbacks stood in.
    assert any(step.fallbacks for step in steps)
    assert backend.stats.prompt_tokens_read < backend.stats.prompt_tokens  # the cache helped


async def test_a_prose_only_model_is_asked_for_paragraphs_alone(tmp_path, store, embedder):
    # What the bundled demo model is: it cannot summarise or plan, so it is not asked to.
    directory = write_tiny_local_model(tmp_path / "books-only", prose_only=True)
    backend = LocalBackend.load(directory)
    try:
        sampling = {role: Sampling(max_tokens=24, seed=1) for role in ("opening", "writer", "memory", "planner")}
        engine = Engine(store, backend, embedder, EngineConfig(sampling=sampling))
        story, story_fallbacks = await engine.start_story("A fox learns to read.", "fable")
        completed = [await engine.run_step(story.id) for _ in range(3)]
        choice = await engine.choose_instruction(completed[-1].step, "model", random.Random(0))
    finally:
        await backend.aclose()

    assert backend.stats.requests == 3, "one writer request a paragraph, nothing else"
    assert story.outline == "A fox learns to read." and "prose only" in story_fallbacks[0]
    first, second, third = (event.step for event in completed)
    assert first.short_term_memory.split()[:5] == first.paragraph.split()[:5]
    assert third.short_term_memory != second.short_term_memory, "the memory moves with the story"
    assert len(set(third.next_instructions)) == 3
    assert all(fallbacks.PROSE_ONLY_OUTPUTS in event.fallbacks for event in completed)
    assert choice[0] == third.next_instructions[0] and "prose only" in choice[1]


def test_the_bundled_demo_model_is_prose_only_and_other_models_are_not(tiny_model_dir):
    assert load_checkpoint(DEMO_MODEL_DIR).extra_config.get("prose_only") is True
    assert load_checkpoint(tiny_model_dir).extra_config.get("prose_only") is None


def test_a_base_model_paragraph_is_not_cut_at_an_early_heading():
    from longyarn.recurrent_core.local_lm.chat_format import ReplyBoundary

    boundary = ReplyBoundary(["\n\n"], min_chars=30)
    pieces = ["CHAPTER ONE", "\n\n", "The keeper climbed the stairs and ", "lit the lamp.\n", "\nNext day"]
    emitted, ended = "", False
    for piece in pieces:
        text, ended = boundary.feed(piece)
        emitted += text
        if ended:
            break
    assert ended
    assert emitted == "CHAPTER ONE\n\nThe keeper climbed the stairs and lit the lamp."

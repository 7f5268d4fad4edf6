"""Is the writers' UI responsive while a paragraph streams in, and does a long story open fast?

1. Key latency. A key event is sent to the running app (the same event `pilot.press` sends) and
   timed until its effect shows: the character is in the instruction box. ~100 presses with no
   step running (the baseline), then ~100 while a step streams at about 200 chunks a second
   from the scripted OpenAI-compatible server. Prints p50/p95 of both and the ratio (the target
   is p95 < 100 ms while streaming).
2. Streaming renders. How many times the streamed paragraph was re-rendered against how many
   chunks arrived (updates are batched per frame, never one render per chunk).
3. Opening a 2,000-paragraph story: time until the writing screen has painted, against a
   20-paragraph story (the baseline), and against mounting every paragraph eagerly (what lazy
   loading avoids).

    python benchmarks/tui_responsiveness.py [--presses 100] [--paragraphs 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from textual import events  # noqa: E402

from longyarn.app.settings import Settings  # noqa: E402
from longyarn.app.tui import make_app  # noqa: E402
from longyarn.app.tui.screens.writing import WritingScreen  # noqa: E402
from longyarn.recurrent_core.backends.openai_backend import OpenAIBackend  # noqa: E402
from longyarn.recurrent_core.engine import Engine  # noqa: E402
from longyarn.recurrent_core.types import NewStep  # noqa: E402
from longyarn.storage.db import open_store  # noqa: E402
from tests.scripted_server import Reply, ScriptedServer, story_responder  # noqa: E402

CHUNKS_PER_SECOND = 200
# The scripted server's pause between chunks; HTTP and parsing add the rest of each interval.
SERVER_CHUNK_DELAY_S = 0.7 / CHUNKS_PER_SECOND
EMBEDDING_MODEL = "benchmark-random"  # the UI never looks inside vectors; recall just needs some


class RandomEmbedder:
    """Unit vectors from a seeded generator: this benchmark times the UI, not the embedding model."""

    name = EMBEDDING_MODEL

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self._rng = np.random.default_rng(0)

    def embed(self, texts):
        vectors = self._rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def seed_story(store, embedder, paragraphs: int, title: str) -> str:
    story = store.create_story(title=title, premise="A long voyage.", genre="saga", outline="They sail on.")
    vectors = embedder.embed(["x"] * paragraphs)
    parent = None
    for number in range(paragraphs):
        step = store.commit_step(
            NewStep(
                story_id=story.id, parent_id=parent, instruction="Go on.",
                paragraph=f"Day {number}. The ship held its course through grey water; the crew "
                "mended sails, counted stores, and argued quietly about the stars.",
                short_term_memory="They are at sea.", memory_reason="The voyage.",
                next_instructions=("A storm.", "Land ahoy.", "A mutiny."),
                backend="openai", model="benchmark",
            ),
            embedding=vectors[number], embedding_model=EMBEDDING_MODEL,
        )
        parent = step.id
    return story.id


def streaming_responder(paragraph_chars: int):
    """The writer streams a long paragraph at CHUNKS_PER_SECOND; other roles answer at once."""
    long_paragraph = ("The wind rose and fell and rose again over the dark water. " * 200)[:paragraph_chars]

    def respond(request: dict) -> Reply:
        if request.get("_role") == "writer":
            return Reply(long_paragraph, chunk_chars=3, chunk_delay_s=SERVER_CHUNK_DELAY_S)
        return story_responder(request)

    return respond


async def key_latencies(app, pilot, presses: int) -> list[float]:
    """Seconds from a key event to its character showing in the instruction box."""
    box = app.screen.query_one("#instruction")
    box.focus()
    await pilot.pause()
    latencies = []
    for _ in range(presses):
        expected = len(box.value) + 1
        started = time.perf_counter()
        app._driver.send_message(events.Key("a", "a"))
        while len(box.value) < expected:
            await asyncio.sleep(0)
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)  # a fast typist: 100 keys a second at most
    box.value = ""
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def measure_typing(presses: int) -> None:
    embedder = RandomEmbedder()
    with tempfile.TemporaryDirectory() as folder, ScriptedServer(streaming_responder(6000)) as server:
        store = open_store(Path(folder) / "bench.db")
        story_id = seed_story(store, embedder, 3, "Typing")
        backend = OpenAIBackend("scripted-model", base_url=server.base_url, api_key=None)
        engine = Engine(store, backend, embedder, Settings().engine_config())
        app = make_app(store=store, settings=Settings(), engine=engine, story_id=story_id,
                       first_run=False, keymap={})
        async with app.run_test(size=(120, 40)) as pilot:
            while not isinstance(app.screen, WritingScreen):
                await pilot.pause(0.01)
            screen: WritingScreen = app.screen
            idle = await key_latencies(app, pilot, presses)

            screen.action_write_next()
            streaming = screen.story_view.streaming
            while streaming.chunks_received < 20:
                await asyncio.sleep(0.01)
            chunks_before, started = streaming.chunks_received, time.perf_counter()
            busy = await key_latencies(app, pilot, presses)
            elapsed = time.perf_counter() - started
            chunks_during = streaming.chunks_received - chunks_before
            still_streaming = screen.generating and streaming.display
            chunks, renders = streaming.chunks_received, streaming.renders
            screen.action_cancel_step()
            while screen.generating:
                await pilot.pause(0.01)
        await backend.aclose()
        store.close()

    print(f"key -> effect latency over {presses} presses (ms)")
    print(f"  no step running (baseline):  p50 {percentile(idle, .5) * 1e3:6.1f}   p95 {percentile(idle, .95) * 1e3:6.1f}")
    print(f"  while a step streams:        p50 {percentile(busy, .5) * 1e3:6.1f}   p95 {percentile(busy, .95) * 1e3:6.1f}"
          f"   ({chunks_during / elapsed:.0f} chunks/s arrived meanwhile"
          f"{'' if still_streaming else '; the stream ended early'})")
    print(f"  p95 ratio streaming/baseline: {percentile(busy, .95) / percentile(idle, .95):.2f}x"
          f"   target p95 < 100 ms: {'met' if percentile(busy, .95) < 0.1 else 'MISSED'}")
    print(f"streamed paragraph: {chunks} chunks, {renders} renders "
          f"({chunks / max(1, renders):.1f} chunks per render; one render per frame at most)")


async def times_to_first_paint(store, story_ids: list[str], repeats: int = 3) -> list[float]:
    """For each story, the best of `repeats` opens (after one warm-up open) until first paint."""
    app = make_app(store=store, settings=Settings(), engine=None, first_run=False, keymap={})
    app.engine_problem = None  # no welcome notice: this times opening a story, nothing else
    best = [float("inf")] * len(story_ids)
    async with app.run_test(size=(120, 40)) as pilot:
        for round_number in range(repeats + 1):
            for index, story_id in enumerate(story_ids):
                await pilot.pause()
                started = time.perf_counter()
                app.call_later(app.open_story, story_id)
                while not (isinstance(app.screen, WritingScreen) and app.screen.query("#story ParagraphView")):
                    # Not sleep(0): a loop that never yields the GIL starves the screen's loader thread.
                    await asyncio.sleep(0.001)
                painted = asyncio.Event()
                app.screen.call_after_refresh(painted.set)
                await painted.wait()
                if round_number:  # round 0 warms up: the first screen of its kind parses styles
                    best[index] = min(best[index], time.perf_counter() - started)
                app.call_later(app.pop_screen)
                while isinstance(app.screen, WritingScreen):
                    await pilot.pause(0.01)
    return best


async def time_eager_mount(store, story_id: str) -> float:
    """Mounting every paragraph at once: what lazy loading avoids."""
    app = make_app(store=store, settings=Settings(), engine=None, first_run=False, keymap={})
    app.engine_problem = None
    async with app.run_test(size=(120, 40)) as pilot:
        app.call_later(app.open_story, story_id)
        while not (isinstance(app.screen, WritingScreen) and app.screen.query("#story ParagraphView")):
            await pilot.pause(0.01)
        await pilot.pause()
        view = app.screen.story_view
        steps = list(view.steps)
        started = time.perf_counter()
        await view.show_branch(steps, page_size=len(steps))
        painted = asyncio.Event()
        app.screen.call_after_refresh(painted.set)
        await painted.wait()
        return time.perf_counter() - started


async def measure_opening(paragraphs: int) -> None:
    embedder = RandomEmbedder()
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "long.db")
        seeding = time.perf_counter()
        long_id = seed_story(store, embedder, paragraphs, "Long")
        short_id = seed_story(store, embedder, 20, "Short")
        seeding = time.perf_counter() - seeding
        short, long = await times_to_first_paint(store, [short_id, long_id])
        eager = await time_eager_mount(store, long_id)
        store.close()
    print(f"opening a story (seeded {paragraphs + 20} steps in {seeding:.1f} s), time to first paint:")
    print(f"  20 paragraphs (baseline):      {short * 1e3:7.0f} ms")
    print(f"  {paragraphs:,} paragraphs, lazily:   {long * 1e3:7.0f} ms   ({long / short:.2f}x the baseline;"
          f" target < 1 s: {'met' if long < 1 else 'MISSED'})")
    print(f"  {paragraphs:,} paragraphs, all mounted: {eager * 1e3:7.0f} ms   ({eager / long:.1f}x the lazy open)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the UI itself uses none)")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    asyncio.run(measure_typing(args.presses))
    asyncio.run(measure_opening(args.paragraphs))


if __name__ == "__main__":
    main()

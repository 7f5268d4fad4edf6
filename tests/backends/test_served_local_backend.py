"""`--checkpoint URL`: the local model as a real `longyarn serve` serves it on
127.0.0.1, read by `ServedLocalBackend`. It must write what the model writes in process."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from longyarn.app.serve import create_app, running_server
from longyarn.app.models import make_backend
from longyarn.app.settings import Settings, load_settings
from longyarn.recurrent_core.backends.base import GenerationRequest
from longyarn.recurrent_core.backends.local import LocalBackend
from longyarn.recurrent_core.backends.served_local import ServedLocalBackend
from longyarn.recurrent_core.engine import Engine, EngineConfig
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.local_lm.runtime import DEMO_MODEL_DIR
from longyarn.recurrent_core.types import ContextSection, Prompt, Sampling
from tests.scripted_server import ScriptedServer


@pytest.fixture(scope="module")
def demo_served():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    backend = LocalBackend.load(DEMO_MODEL_DIR, jrt_repeats=1)
    try:
        with running_server(create_app(backend)) as url:
            yield backend, url
    finally:
        backend.close()
        torch.set_num_threads(previous)


def writer_request(seed: int, max_tokens: int = 300) -> GenerationRequest:
    prompt = Prompt(
        role="writer",
        system="You write a novel one paragraph at a time.",
        task="Write the next paragraph: the keeper opens the door in the sea.",
        context=(ContextSection("Previous paragraph", "The lamp went out at midnight.", 0),),
    )
    return GenerationRequest(prompt=prompt, sampling=Sampling(max_tokens=max_tokens, seed=seed, temperature=1.0))


async def reply(backend, request) -> tuple[str, str | None]:
    text, finish = "", None
    async for chunk in backend.stream(request):
        text += chunk.text
        finish = chunk.finish_reason or finish
    return text, finish


async def test_the_served_model_writes_what_it_writes_in_process_and_stops_at_the_paragraph_end(demo_served):
    in_process, url = demo_served
    served = ServedLocalBackend(url)
    try:
        assert (served.info.model, served.info.prose_only, served.chat) == ("demo_model", True, False)
        ended_early = 0
        for seed in (1, 2, 3):
            before = in_process.stats
            expected = await reply(in_process, writer_request(seed, max_tokens=600))
            written_in_process = in_process.stats.completion_tokens - before.completion_tokens
            before = in_process.stats
            got = await reply(served, writer_request(seed, max_tokens=600))
            assert got == expected, f"seed {seed}"
            if expected[1] == "stop":
                ended_early += 1
                # The server's model stops when the client closes the finished reply (it is
                # counted as cancelled), a few tokens on, not at max_tokens.
                deadline = time.monotonic() + 30
                while in_process.stats.cancelled == before.cancelled:
                    assert time.monotonic() < deadline, "the server's model did not stop"
                    await asyncio.sleep(0.05)
                written_served = in_process.stats.completion_tokens - before.completion_tokens
                assert written_served < written_in_process + 40 < 600
        assert ended_early, "at least one paragraph ended at its blank line"
    finally:
        await served.aclose()


async def test_the_engine_writes_through_the_served_model_as_settings_choose_it(demo_served, store, embedder):
    in_process, url = demo_served
    settings = Settings(backend="local", checkpoint=url, model="gpt-4o-mini")  # --model: for servers
    backend = make_backend(settings)
    assert isinstance(backend, ServedLocalBackend)
    requests_before = in_process.stats.requests
    config = settings.engine_config()
    config.sampling["writer"] = config.sampling["writer"].model_copy(update={"max_tokens": 60})
    engine = Engine(store, backend, embedder, config)
    try:
        story, _ = await engine.start_story("A keeper finds a door in the sea.", "fable")
        completed = [await engine.run_step(story.id) for _ in range(2)]
    finally:
        await backend.aclose()
    assert [step.id for step in store.branch(story.id)] == [event.step.id for event in completed]
    assert all(event.step.paragraph and event.step.backend == "local" for event in completed)
    # Prose only, as in process: one request a paragraph, no memory or plan requests.
    assert in_process.stats.requests - requests_before == 2
    assert "longyarn serve" in settings.describe_model()


def test_an_openai_base_url_in_the_environment_leaves_the_local_model_in_process(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    backend = make_backend(load_settings(backend="local"))
    try:
        assert isinstance(backend, LocalBackend) and backend.info.model == "demo_model"
    finally:
        backend.close()


async def test_a_server_that_is_not_longyarn_serve_or_is_not_there_is_one_sentence():
    with ScriptedServer() as other:
        with pytest.raises(LongyarnError, match="is not `longyarn serve`.*--backend openai"):
            ServedLocalBackend(other.base_url)
    with pytest.raises(LongyarnError, match="Could not read the model list of .*longyarn serve"):
        ServedLocalBackend("http://127.0.0.1:9/v1")


async def test_asking_for_another_model_than_the_one_served_says_which_is(demo_served):
    _, url = demo_served
    with pytest.raises(LongyarnError, match="serves 'demo_model', not 'rwkv7-g1a'"):
        ServedLocalBackend(url, model="rwkv7-g1a")

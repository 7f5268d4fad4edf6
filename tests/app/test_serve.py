"""`longyarn serve` driven by the real openai client, on a tiny random model over real HTTP."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
import torch

from longyarn.app.serve import create_app, running_server
from longyarn.app.serve_protocol import ChatMessage, chat_prompt
from longyarn.recurrent_core.backends.local import LocalBackend
from longyarn.recurrent_core.backends.openai_backend import OpenAIBackend
from longyarn.recurrent_core.engine import Engine, EngineConfig
from longyarn.recurrent_core.types import Sampling
from tests.backends.test_local_backend import write_tiny_local_model

MODEL = "tiny-base"
MESSAGES = [
    {"role": "system", "content": "You tell short fables."},
    {"role": "user", "content": "A fox meets a heron.\n\nWhat happens?"},
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_local_model(tmp_path_factory.mktemp("models") / MODEL)


@pytest.fixture
def backend(model_dir):
    backend = LocalBackend.load(model_dir)
    yield backend
    backend.close()


@pytest.fixture
def base_url(backend):
    with running_server(create_app(backend)) as url:
        yield url


@pytest.fixture
def client(base_url):
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def test_the_model_list_names_the_served_model(client):
    assert [model.id for model in client.models.list().data] == [MODEL]


def test_a_reply_the_model_is_stopped_under_is_an_error_not_a_finished_reply(client, backend):
    # What a reader's session meets when the reading room closes mid-paragraph: the partial
    # reply must not look complete (finish_reason "stop"), or it would be stored as one.
    stream = client.completions.create(
        model=MODEL, prompt="Once", max_tokens=3000, stream=True, extra_body={"ignore_eos": True}
    )
    pieces = iter(stream)
    next(pieces)
    closer = threading.Thread(target=backend.close)
    closer.start()
    with pytest.raises(openai.APIError, match="stopped before the reply ended"):
        for _ in pieces:
            pass
    closer.join(timeout=30)


def test_completions_whole_and_streamed_agree_and_count_tokens(client, backend):
    arguments = dict(model=MODEL, prompt="The fox said", max_tokens=48, seed=5, temperature=0.8)
    whole = client.completions.create(**arguments)

    chunks = list(client.completions.create(**arguments, stream=True, stream_options={"include_usage": True}))

    text = whole.choices[0].text
    assert text and whole.choices[0].finish_reason in ("stop", "length")
    usage = whole.usage
    assert usage.prompt_tokens == backend.count_tokens("The fox said")
    assert 1 <= usage.completion_tokens <= 48
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    streamed = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert len([chunk for chunk in chunks if chunk.choices and chunk.choices[0].text]) >= 2
    assert streamed == text
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == usage.model_dump()


def test_chat_completions_whole_and_streamed_agree_and_count_tokens(client, backend):
    arguments = dict(model=MODEL, messages=MESSAGES, max_tokens=12, seed=9)
    whole = client.chat.completions.create(**arguments)

    chunks = list(client.chat.completions.create(**arguments, stream=True, stream_options={"include_usage": True}))

    message = whole.choices[0].message
    assert message.role == "assistant" and message.content
    transcript = chat_prompt([ChatMessage(**m) for m in MESSAGES])
    assert transcript == "System: You tell short fables.\n\nUser: A fox meets a heron.\nWhat happens?\n\nAssistant:"
    assert whole.usage.prompt_tokens == backend.count_tokens(transcript)
    assert 1 <= whole.usage.completion_tokens <= 12
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == message.content
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": 6.0}, "temperature"),
        ({"n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"seed": 2**64}, "seed"),  # beyond the 64 bits a generator's seed has
    ],
)
def test_bad_parameters_get_a_400_with_an_openai_error_body(client, change, param):
    arguments = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4, **change}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**arguments)
    error = raised.value.response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"].endswith(".")
    assert set(error) == {"message", "type", "param", "code"}


def test_parameters_sent_as_null_take_their_defaults(client):
    # The openai SDK sends an explicit None as null, as many clients do for unset settings.
    reply = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=3, temperature=None, top_p=None, n=None,
        presence_penalty=None, frequency_penalty=None, stream=None, seed=None,
    )

    assert b'"temperature":null' in reply.http_request.content
    completion = reply.parse()
    assert completion.choices[0].message.content and completion.usage.completion_tokens >= 1


def test_content_the_model_cannot_read_is_named_in_the_error(client):
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": image}], max_tokens=4)

    error = raised.value.response.json()["error"]
    assert error["param"] == "messages"
    assert "'image_url'" in error["message"] and "text only" in error["message"]
    assert ".str" not in error["message"]


def test_a_batch_of_one_token_id_list_is_one_prompt(client):
    as_batch = client.completions.create(model=MODEL, prompt=[[5, 6, 7]], max_tokens=3, seed=1)
    as_list = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=3, seed=1)

    assert as_batch.choices[0].text == as_list.choices[0].text
    assert as_batch.usage.prompt_tokens == 3
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=MODEL, prompt=[[5, 6], [7]], max_tokens=3)
    assert "one prompt per request" in raised.value.response.json()["error"]["message"]


def test_paths_and_methods_not_served_get_an_openai_error_naming_the_endpoints(client, base_url):
    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(model=MODEL, input="a fox")
    error = raised.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "not_found"
    assert "POST /v1/embeddings" in error["message"] and "/v1/chat/completions" in error["message"]

    wrong_method = httpx.get(f"{base_url}/chat/completions")
    assert wrong_method.status_code == 405
    assert "GET /v1/chat/completions" in wrong_method.json()["error"]["message"]
    not_utf8 = httpx.post(f"{base_url}/completions", content=b'{"prompt": "\xff"}',
                          headers={"content-type": "application/json"})
    assert not_utf8.status_code == 400 and not_utf8.json()["error"]["code"] == "invalid_json"


def test_an_unknown_model_gets_a_404_naming_the_model_served(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
    error = raised.value.response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert MODEL in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_a_prompt_over_the_model_limit_gets_a_400(model_dir):
    backend = LocalBackend.load(model_dir, max_prompt_tokens=8)
    try:
        with running_server(create_app(backend)) as url, openai.OpenAI(base_url=url, api_key="x", max_retries=0) as client:
            with pytest.raises(openai.BadRequestError) as raised:
                client.completions.create(model=MODEL, prompt="The fox said " * 10, max_tokens=4)
        error = raised.value.response.json()["error"]
        assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
        # What a client can do about it, not longyarn's own settings.
        assert "send a shorter prompt" in error["message"]
        assert "max_prompt_tokens" not in error["message"]
    finally:
        backend.close()


def test_requests_beyond_the_queue_get_a_503_and_a_dropped_stream_frees_the_model(backend):
    long_run = dict(model=MODEL, prompt="Once", max_tokens=20000, stream=True, extra_body={"ignore_eos": True})
    with running_server(create_app(backend, max_waiting=0)) as url, openai.OpenAI(
        base_url=url, api_key="x", max_retries=0, timeout=60
    ) as client:
        running = client.completions.create(**long_run)
        next(iter(running))  # the model is busy writing

        with pytest.raises(openai.APIStatusError) as raised:
            client.completions.create(model=MODEL, prompt="Hello", max_tokens=2)
        assert raised.value.status_code == 503
        assert raised.value.response.json()["error"]["code"] == "server_overloaded"

        running.close()  # the client goes away mid-stream
        deadline = time.monotonic() + 20
        while backend.stats.cancelled == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.stats.cancelled == 1
        assert backend.stats.completion_tokens < 20000
        # ignore_eos: a random-weights model may end its reply at once, which would prove nothing
        reply = client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, extra_body={"ignore_eos": True})
        assert reply.usage.completion_tokens >= 1


def test_a_client_that_gives_up_on_a_whole_reply_stops_the_model(backend, base_url, client):
    impatient = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=1)
    with impatient, pytest.raises(openai.APITimeoutError):
        impatient.completions.create(
            model=MODEL, prompt="Once", max_tokens=20000, extra_body={"ignore_eos": True}
        )

    # The model serves one request at a time, so this one runs after the abandoned one ended.
    reply = client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens >= 1
    assert backend.stats.completion_tokens < 20000  # not all of max_tokens, for nobody


async def test_the_engine_writes_a_story_through_the_server(base_url, store, embedder):
    remote = OpenAIBackend(MODEL, base_url=base_url, api_key=None, backoff_s=0.01)
    sampling = {
        role: Sampling(max_tokens=tokens, seed=seed)
        for seed, (role, tokens) in enumerate(
            {"opening": 24, "writer": 24, "memory": 16, "planner": 24, "chooser": 4}.items()
        )
    }
    engine = Engine(store, remote, embedder, EngineConfig(sampling=sampling, parse_retries=1))
    try:
        story, _ = await engine.start_story("A fox learns to read in the heron's library.", "fable")
        completed = [await engine.run_step(story.id) for _ in range(2)]
    finally:
        await remote.aclose()

    steps = store.branch(story.id)
    assert [step.id for step in steps] == [event.step.id for event in completed]
    assert all(step.backend == "openai" and step.model == MODEL and step.paragraph for step in steps)
    assert all(step.fallbacks == event.fallbacks for step, event in zip(steps, completed))
    assert any(step.fallbacks for step in steps)
    assert not remote.info.supports_json_schema  # the server said so, and the engine asked in words
    assert completed[-1].usage.prompt_tokens > 0

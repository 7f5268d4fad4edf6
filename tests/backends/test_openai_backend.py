"""OpenAIBackend through the real `openai` client against a real (scripted) HTTP server.

The `server` fixture (tests/conftest.py) is a fresh `ScriptedServer` answering with
`story_responder`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import pytest

from longyarn.recurrent_core.backends import OpenAIBackend, StreamInterrupted
from longyarn.recurrent_core.backends.base import Chunk, GenerationRequest
from longyarn.recurrent_core.errors import ModelError
from longyarn.recurrent_core.types import ContextSection, Prompt, Sampling, Usage
from tests.scripted_server import Reply, ScriptedServer

FAKE_KEY = "sk-test-UNMISTAKABLE-9f8e7d6c5b4a"
PARAGRAPH = (
    "The ferry left without them. Mara watched its lights shrink across the black water, "
    "and only when the last of them was gone did she open her hand and look at the key."
)
MEMORY_SCHEMA = {
    "title": "ShortTermMemory",
    "type": "object",
    "properties": {"short_term_memory": {"type": "string"}, "reason": {"type": "string"}},
    "required": ["short_term_memory", "reason"],
}


def make_request(
    role: str = "writer", *, json_schema: dict | None = None, stop: tuple[str, ...] = (), **sampling
) -> GenerationRequest:
    prompt = Prompt(
        role=role,
        system="You write literary fiction.",
        task="Instruction: Mara finds the key under the floorboards.",
        context=(ContextSection("Short-term memory", "Mara is back in the lighthouse.", 7),),
        output_format="Reply with the paragraph only.",
    )
    return GenerationRequest(prompt, Sampling(**sampling), json_schema=json_schema, stop=stop)


def make_backend(base_url: str, **options) -> OpenAIBackend:
    options = {"api_key": FAKE_KEY, "timeout_s": 5, "backoff_s": 0.01, **options}
    return OpenAIBackend("scripted-model", base_url=base_url, **options)


async def collect(backend: OpenAIBackend, request: GenerationRequest) -> tuple[list[Chunk], str]:
    chunks = [chunk async for chunk in backend.stream(request)]
    return chunks, "".join(chunk.text for chunk in chunks)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---- streaming --------------------------------------------------------------------------


async def test_streamed_deltas_arrive_in_order_and_join_to_the_reply(server):
    server.enqueue(Reply(PARAGRAPH, chunk_chars=7))
    chunks, text = await collect(make_backend(server.base_url), make_request())

    pieces = [chunk.text for chunk in chunks if chunk.text]
    assert len(pieces) == -(-len(PARAGRAPH) // 7)
    assert text == PARAGRAPH
    assert chunks[-1].usage == Usage(
        prompt_tokens=chunks[-1].usage.prompt_tokens, completion_tokens=len(PARAGRAPH.split())
    )
    assert chunks[-1].usage.prompt_tokens > 0


async def test_the_prompt_and_sampling_reach_the_server(server):
    request = make_request(
        "planner", temperature=0.7, top_p=0.9, max_tokens=321, seed=42, presence_penalty=0.5,
        stop=("\n\n",),
    )
    await collect(make_backend(server.base_url), request)

    sent = server.requests[0]
    assert sent["_role"] == "planner"
    assert sent["model"] == "scripted-model"
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.7, 0.9, 321)
    assert (sent["seed"], sent["presence_penalty"], sent["stop"]) == (42, 0.5, ["\n\n"])
    user_text = sent["messages"][-1]["content"]
    assert "Mara finds the key under the floorboards" in user_text
    assert "Mara is back in the lighthouse." in user_text
    assert sent["messages"][0] == {"role": "system", "content": "You write literary fiction."}


async def test_top_k_is_sent_only_when_set(server):
    backend = make_backend(server.base_url)
    await collect(backend, make_request(top_k=0))
    await collect(backend, make_request(top_k=40))

    assert "top_k" not in server.requests[0]
    assert server.requests[1]["top_k"] == 40


# ---- retries ----------------------------------------------------------------------------


async def test_rate_limit_with_retry_after_is_waited_out_and_retried(server):
    server.enqueue(Reply(status=429, headers={"Retry-After": "0.3"}), Reply(PARAGRAPH))
    backend = make_backend(server.base_url, backoff_s=0.001)

    started = time.monotonic()
    _, text = await collect(backend, make_request())

    assert text == PARAGRAPH
    assert len(server.requests) == 2
    assert time.monotonic() - started >= 0.3  # the server's wait, not our 1 ms backoff


async def test_server_error_then_success_is_retried(server):
    server.enqueue(Reply(status=500), Reply(status=503), Reply(PARAGRAPH))
    _, text = await collect(make_backend(server.base_url), make_request())

    assert text == PARAGRAPH
    assert len(server.requests) == 3


async def test_a_stream_cut_before_any_text_is_retried(server):
    server.enqueue(Reply(PARAGRAPH, stream_cut_after=0), Reply(PARAGRAPH))
    _, text = await collect(make_backend(server.base_url), make_request())

    assert text == PARAGRAPH
    assert len(server.requests) == 2


async def test_rate_limit_that_never_lifts_fails_after_max_attempts(server):
    server.enqueue(*[Reply(status=429, headers={"Retry-After": "0"})] * 5)
    with pytest.raises(ModelError) as failure:
        await collect(make_backend(server.base_url, max_attempts=3), make_request())

    assert len(server.requests) == 3
    message = str(failure.value)
    assert "rate-limit" in message and "after 3 attempts" in message
    assert "nothing was written" in message and "retry the step" in message


async def test_a_retry_after_longer_than_a_minute_fails_at_once(server):
    server.enqueue(Reply(status=429, headers={"Retry-After": "3600"}), Reply(PARAGRAPH))
    with pytest.raises(ModelError, match="asked to wait 3600 seconds"):
        await collect(make_backend(server.base_url), make_request())
    assert len(server.requests) == 1


async def test_exhausted_quota_is_not_retried(server):
    server.enqueue(
        Reply(status=429, error_code="insufficient_quota", error_message="Quota exceeded."),
        Reply(PARAGRAPH),
    )
    with pytest.raises(ModelError, match="run out of quota"):
        await collect(make_backend(server.base_url), make_request())
    assert len(server.requests) == 1


async def test_a_server_that_does_not_answer_in_time_gives_a_timeout_error(server):
    server.enqueue(Reply(PARAGRAPH, delay_s=3), Reply(PARAGRAPH, delay_s=3))
    backend = make_backend(server.base_url, timeout_s=0.2, max_attempts=2)
    with pytest.raises(ModelError) as failure:
        await collect(backend, make_request())

    message = str(failure.value)
    assert "did not answer within 0.2 seconds after 2 attempts" in message
    assert server.base_url in message


async def test_a_closed_port_gives_an_error_naming_the_url():
    url = closed_port_url()
    with pytest.raises(ModelError) as failure:
        await collect(make_backend(url, max_attempts=2), make_request())

    message = str(failure.value)
    assert f"Could not reach the model server at {url}" in message
    assert "--base-url" in message


# ---- streams that break -----------------------------------------------------------------


async def test_a_stream_cut_mid_reply_raises_stream_interrupted(server):
    server.enqueue(Reply(PARAGRAPH, chunk_chars=10, stream_cut_after=3), Reply(PARAGRAPH))
    received: list[str] = []

    with pytest.raises(StreamInterrupted) as failure:
        async for chunk in make_backend(server.base_url).stream(make_request()):
            received.append(chunk.text)

    assert "".join(received) == PARAGRAPH[:30]  # the caller saw the part, then the error
    assert "partial reply was discarded" in str(failure.value)
    assert len(server.requests) == 1  # never retried once text was out: no paragraph twice


async def test_a_stream_that_ends_without_finishing_is_not_taken_as_a_whole_reply(server):
    server.enqueue(Reply(PARAGRAPH, chunk_chars=10, stream_end_after=2), Reply(PARAGRAPH))
    with pytest.raises(StreamInterrupted):
        await collect(make_backend(server.base_url), make_request())
    assert len(server.requests) == 1


async def test_keep_alive_comments_and_compact_data_lines_are_read_as_the_reply(server):
    # OpenRouter and some proxies send ": keep-alive" comments and "data:" with no space.
    server.enqueue(Reply(PARAGRAPH, chunk_chars=7, sse_comments=True))
    chunks, text = await collect(make_backend(server.base_url), make_request())
    assert text == PARAGRAPH
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_an_error_the_server_reports_mid_stream_is_an_error_not_a_paragraph(server):
    server.enqueue(Reply(PARAGRAPH, chunk_chars=10, error_event_after=2))
    received = []
    with pytest.raises(StreamInterrupted):
        async for chunk in make_backend(server.base_url).stream(make_request()):
            received.append(chunk.text)
    assert "".join(received) == PARAGRAPH[:20]
    # Before any text, it is asked again, like any failed request; the error is said if it stays.
    server.enqueue(Reply(PARAGRAPH, error_event_after=0), Reply(PARAGRAPH))
    assert (await collect(make_backend(server.base_url), make_request()))[1] == PARAGRAPH
    server.enqueue(*[Reply(PARAGRAPH, error_event_after=0)] * 4)
    with pytest.raises(ModelError, match="crashed mid-reply"):
        await collect(make_backend(server.base_url, max_attempts=2), make_request())


async def test_abandoning_the_stream_closes_the_connection(server):
    server.enqueue(Reply(PARAGRAPH * 20, chunk_chars=4, chunk_delay_s=0.05))
    stream = make_backend(server.base_url).stream(make_request())
    assert (await anext(stream)).text
    await asyncio.wait_for(stream.aclose(), 1)

    deadline = time.monotonic() + 3
    while server.disconnects == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert server.disconnects == 1


async def test_a_reply_that_is_not_openai_format_says_so(server):
    server.enqueue(Reply(raw_body="data: <html>Welcome to nginx</html>\n\n"))
    with pytest.raises(ModelError, match="not in OpenAI's chat format"):
        await collect(make_backend(server.base_url), make_request())


async def test_cancelling_the_consumer_closes_the_stream_promptly(server):
    server.enqueue(Reply(PARAGRAPH * 20, chunk_chars=4, chunk_delay_s=0.05))
    first_text = asyncio.Event()

    async def consume() -> None:
        async for chunk in make_backend(server.base_url).stream(make_request()):
            if chunk.text:
                first_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_text.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)

    deadline = time.monotonic() + 3
    while server.disconnects == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert server.disconnects == 1
    assert server.completed_streams == 0


# ---- structured output ------------------------------------------------------------------


async def test_json_schema_is_sent_when_the_server_accepts_it(server):
    backend = make_backend(server.base_url)
    _, text = await collect(backend, make_request("memory", json_schema=MEMORY_SCHEMA))

    response_format = server.requests[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "ShortTermMemory"
    assert response_format["json_schema"]["schema"] == MEMORY_SCHEMA
    assert text.startswith("{") and '"short_term_memory"' in text
    assert backend.info.supports_json_schema


def response_format_types(server: ScriptedServer) -> list[str | None]:
    return [(sent.get("response_format") or {}).get("type") for sent in server.requests]


async def test_a_server_that_rejects_json_schema_is_asked_for_json_objects_and_remembered():
    with ScriptedServer(json_schema_supported=False) as server:
        backend = make_backend(server.base_url, max_attempts=1)
        _, first = await collect(backend, make_request("memory", json_schema=MEMORY_SCHEMA))
        _, second = await collect(backend, make_request("memory", json_schema=MEMORY_SCHEMA))

    assert response_format_types(server) == ["json_schema", "json_object", "json_object"]
    assert backend.info.supports_json_schema is False
    assert json.loads(first)["short_term_memory"] and json.loads(second)["short_term_memory"]


async def test_llama_cpp_pythons_500_refusing_json_schema_falls_back_at_once_and_says_so_once():
    # llama-cpp-python's server 0.3 answers a json_schema response_format with HTTP 500 and its
    # validation error; that is a refusal of the format, not a server fault to retry four times.
    with ScriptedServer(
        refused_response_formats=("json_schema",), response_format_refusal="llama-cpp-python"
    ) as server:
        backend = make_backend(server.base_url)
        _, first = await collect(backend, make_request("memory", json_schema=MEMORY_SCHEMA))
        _, second = await collect(backend, make_request("planner", json_schema=MEMORY_SCHEMA))

    assert response_format_types(server) == ["json_schema", "json_object", "json_object"]
    assert json.loads(first)["short_term_memory"]
    [notice] = backend.take_notices()
    assert "does not accept json_schema" in notice and "JSON objects" in notice
    assert backend.take_notices() == ()


async def test_a_server_that_refuses_both_json_formats_is_asked_for_labelled_text():
    with ScriptedServer(
        refused_response_formats=("json_schema", "json_object"), response_format_refusal="llama-cpp-python"
    ) as server:
        backend = make_backend(server.base_url)
        _, first = await collect(backend, make_request("memory", json_schema=MEMORY_SCHEMA))
        _, second = await collect(backend, make_request("memory", json_schema=MEMORY_SCHEMA))

    assert response_format_types(server) == ["json_schema", "json_object", None, None]
    assert first.startswith("Short-term memory:") and second.startswith("Short-term memory:")
    notices = backend.take_notices()
    assert len(notices) == 2 and "labelled text" in notices[1]


async def test_a_500_that_is_no_format_refusal_is_still_retried_as_a_server_fault(server):
    server.enqueue(Reply(status=500), Reply('{"reason": "r", "short_term_memory": "Mara waits."}'))
    backend = make_backend(server.base_url)
    _, text = await collect(backend, make_request("memory", json_schema=MEMORY_SCHEMA))
    assert response_format_types(server) == ["json_schema", "json_schema"]
    assert json.loads(text)["short_term_memory"] == "Mara waits."


# ---- servers that answer one request at a time -------------------------------------------


async def test_a_one_slot_server_that_cuts_overlapping_requests_gets_them_one_at_a_time():
    # llama-cpp-python's server cuts the request in progress when another arrives, and drops
    # the new one too: both clients see a broken connection, though the server is up.
    with ScriptedServer(lambda request: Reply(PARAGRAPH), one_slot=True, latency_s=0.2) as server:
        backend = make_backend(server.base_url)
        first, second = await asyncio.gather(
            collect(backend, make_request("memory")), collect(backend, make_request("planner"))
        )
        assert first[1] == second[1] == PARAGRAPH
        assert server.overlap_drops == 1 and len(server.requests) == 4
        [notice] = backend.take_notices()
        assert "one request at a time" in notice

        # From now on this server gets one request at a time: nothing overlaps, nothing is cut.
        third, fourth = await asyncio.gather(
            collect(backend, make_request("memory")), collect(backend, make_request("planner"))
        )
        assert third[1] == fourth[1] == PARAGRAPH
        assert server.overlap_drops == 1 and len(server.requests) == 6
        assert backend.take_notices() == ()


async def test_a_fixed_concurrency_limit_is_kept_and_a_lone_failed_request_is_not_blamed_on_overlap():
    with ScriptedServer(lambda request: Reply(PARAGRAPH), latency_s=0.1) as server:
        backend = make_backend(server.base_url, concurrency=2)
        results = await asyncio.gather(*(collect(backend, make_request()) for _ in range(5)))
        assert all(text == PARAGRAPH for _, text in results)
        assert server.max_concurrent == 2

    # A single request that cannot connect is a server that is down, with the usual sentence.
    backend = make_backend(closed_port_url(), max_attempts=2)
    with pytest.raises(ModelError, match="Could not reach the model server"):
        await collect(backend, make_request())
    assert backend.take_notices() == ()


async def test_a_server_that_wants_max_completion_tokens_gets_it():
    def newer_openai_model(request: dict) -> Reply:
        if "max_tokens" in request:
            return Reply(
                status=400,
                error_message="Unsupported parameter 'max_tokens'; use 'max_completion_tokens'.",
            )
        return Reply(PARAGRAPH)

    with ScriptedServer(newer_openai_model) as server:
        backend = make_backend(server.base_url, max_attempts=1)
        _, text = await collect(backend, make_request(max_tokens=200))
        await collect(backend, make_request(max_tokens=200))

    assert text == PARAGRAPH
    assert [sent.get("max_completion_tokens") for sent in server.requests] == [None, 200, 200]


@pytest.mark.parametrize("parameter", ["stream_options", "seed"])
async def test_a_server_that_refuses_an_optional_parameter_is_asked_without_it_and_remembered(parameter):
    # Some vLLM versions validate the body strictly and answer 400 "Extra inputs are not
    # permitted" for a field they do not know.
    with ScriptedServer(rejected_parameters=(parameter,)) as server:
        backend = make_backend(server.base_url, max_attempts=1)
        _, first = await collect(backend, make_request(seed=7))
        _, second = await collect(backend, make_request(seed=7))

    assert first == second != ""
    assert [parameter in sent for sent in server.requests] == [True, False, False]
    # The user set a seed and is told it has no effect; stream_options is no setting of theirs.
    notices = backend.take_notices()
    assert len(notices) == (1 if parameter == "seed" else 0)
    assert all("seed setting" in notice for notice in notices)
    assert backend.take_notices() == ()


async def test_a_refused_value_is_an_error_and_the_parameter_is_still_sent_afterwards(server):
    # OpenAI caps temperature at 2: that is a setting to fix, not a parameter this server lacks.
    server.enqueue(
        Reply(
            status=400,
            error_message="Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.",
            error_code="decimal_above_max_value",
        ),
        Reply(PARAGRAPH),
    )
    backend = make_backend(server.base_url, max_attempts=1)
    with pytest.raises(ModelError, match="temperature"):
        await collect(backend, make_request(temperature=3.0))
    _, text = await collect(backend, make_request(temperature=0.3))
    assert text == PARAGRAPH
    assert [sent.get("temperature") for sent in server.requests] == [3.0, 0.3]


async def test_filter_chunks_without_choices_and_a_bare_usage_chunk_still_stream(server):
    server.enqueue(Reply(PARAGRAPH, empty_choices_first=True, usage_without_choices=True))
    chunks, text = await collect(make_backend(server.base_url), make_request())
    assert text == PARAGRAPH
    assert chunks[-1].usage.completion_tokens == len(PARAGRAPH.split())


async def test_a_reply_cut_by_max_tokens_says_so_in_its_last_chunk(server):
    server.enqueue(Reply(PARAGRAPH[:40], finish_reason="length"), Reply(PARAGRAPH))
    backend = make_backend(server.base_url)
    cut, _ = await collect(backend, make_request())
    whole, _ = await collect(backend, make_request())
    assert (cut[-1].finish_reason, whole[-1].finish_reason) == ("length", "stop")


async def test_a_prompt_longer_than_the_context_window_says_which_setting_to_lower(server):
    server.enqueue(
        Reply(
            status=400,
            error_message="This model's maximum context length is 8192 tokens. However, you requested "
            "9000 tokens (8100 in the messages, 900 in the completion).",
        )
    )
    with pytest.raises(ModelError) as failure:
        await collect(make_backend(server.base_url, max_attempts=1), make_request())
    message = str(failure.value)
    assert "context_budget_tokens" in message and "8192" in message and "\n" not in message


# ---- errors a person can act on ---------------------------------------------------------


async def test_a_missing_model_is_named_with_the_server():
    with ScriptedServer(known_models=("llama-3-8b",)) as server:
        with pytest.raises(ModelError) as failure:
            await collect(make_backend(server.base_url), make_request())

    message = str(failure.value)
    assert "'scripted-model' was not found on " + server.base_url in message
    assert "--model" in message
    assert len(server.requests) == 1


async def test_a_rejected_key_is_reported_without_the_key(server, caplog):
    # Some servers echo the key they were sent; the backend must not pass it on.
    server.enqueue(Reply(status=401, error_message=f"Incorrect API key provided: {FAKE_KEY}."))
    backend = make_backend(server.base_url)
    with pytest.raises(ModelError) as failure:
        await collect(backend, make_request())

    assert "rejected the API key" in str(failure.value)
    assert FAKE_KEY not in str(failure.value)
    assert FAKE_KEY not in repr(backend) and FAKE_KEY not in repr(backend.info)
    assert len(server.requests) == 1


async def test_the_key_appears_in_no_error_message_or_log(server, caplog):
    caplog.set_level(logging.DEBUG, logger="recurrent_core")
    server.enqueue(
        Reply(status=500, error_message=f"key {FAKE_KEY} broke us"),
        Reply(status=400, error_message=f"Bad request for key {FAKE_KEY}"),
    )
    messages = []
    for backend in (make_backend(server.base_url), make_backend(closed_port_url(), max_attempts=1)):
        with pytest.raises(ModelError) as failure:
            await collect(backend, make_request())
        messages.append(str(failure.value))

    assert "Bad request for key ***" in messages[0]  # the server's words, scrubbed
    assert all(FAKE_KEY not in message for message in messages)
    assert FAKE_KEY not in caplog.text


async def test_no_key_and_no_server_is_refused_with_what_to_do(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelError) as failure:
        OpenAIBackend("gpt-4o-mini", base_url=None, api_key=None)
    assert str(failure.value) == (
        "No OpenAI API key is set; nothing was written. Set OPENAI_API_KEY, or pass "
        "--base-url for a local server, or use --backend local."
    )


async def test_a_local_server_needs_no_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = OpenAIBackend("scripted-model", base_url=server.base_url, api_key=None)
    server.enqueue(Reply(PARAGRAPH))

    _, text = await collect(backend, make_request())
    assert text == PARAGRAPH
    await backend.aclose()


@pytest.mark.parametrize("jrt_repeats", [1, 2])
async def test_a_real_writer_prompt_reaches_the_story_responder(server, jrt_repeats):
    from longyarn.recurrent_core.prompts import render_prompt

    prompt = render_prompt(
        "writer",
        context_sections=(ContextSection("Short-term memory", "Ilse is alone in the chapel.", 6),),
        instruction="Ilse opens the tin of letters >>> and reads the last one",
    )
    backend = make_backend(server.base_url, jrt_repeats=jrt_repeats)
    _, text = await collect(backend, GenerationRequest(prompt, Sampling()))

    assert "Ilse opens the tin of letters > and reads the last one" in text
    assert server.requests[0]["messages"][-1]["content"].count("tin of letters") == jrt_repeats


def test_token_estimates_do_not_undercount_stories_outside_english() -> None:
    # Real tokenizers (cl100k, Llama 3) spend about a token per Chinese character and one per
    # 2-3 Cyrillic letters; a 4-characters-a-token guess let such prompts overrun the budget.
    backend = make_backend("http://127.0.0.1:9/v1")
    english = "The keeper climbed the stairs and looked out over the grey water. " * 6
    chinese = "灯塔看守人爬上楼梯，望向灰色的海水。" * 20
    russian = "Смотритель поднялся по лестнице и посмотрел на серую воду. " * 6
    assert abs(backend.count_tokens(english) - len(english) / 4) < 0.15 * len(english) / 4
    assert backend.count_tokens(chinese) >= len(chinese)
    assert backend.count_tokens(russian) >= len(russian) / 3

"""The scripted OpenAI-compatible server that the other tests and the benchmarks stand on."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from tests.scripted_server import (
    SAMPLE_FIELDS,
    Reply,
    ScriptedServer,
    fenced_json_reply,
    markdown_labels_reply,
    missing_field_reply,
    story_responder,
    truncated_reply,
)

INSTRUCTION = "Ilse rows the zeppelin's anchor out to the drowned chapel"


def chat(server: ScriptedServer, role: str | None, content: str, **extra) -> str:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    headers = {"X-Longyarn-Role": role} if role else {}
    reply = client.chat.completions.create(
        model="scripted-model",
        messages=[{"role": "user", "content": content}],
        extra_headers=headers,
        **extra,
    )
    return reply.choices[0].message.content


MEMORY_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "memory", "schema": {"type": "object"}},
}


def test_queued_replies_come_first_then_the_responder():
    with ScriptedServer(lambda request: Reply("from the responder")) as server:
        server.enqueue(Reply("first"), Reply("second"))
        answers = [chat(server, "writer", "go") for _ in range(3)]
    assert answers == ["first", "second", "from the responder"]
    assert [(r["_role"], r["_path"]) for r in server.requests] == [
        ("writer", "/v1/chat/completions")
    ] * 3


def test_writer_paragraphs_carry_the_instruction_and_vary_with_the_request():
    with ScriptedServer() as server:
        quoted = chat(
            server,
            "writer",
            f"Story frame: ...\n\nWrite the next paragraph, following this direction "
            f"(between <<< and >>>):\n<<<{INSTRUCTION}>>>\n\nReply with the paragraph only.",
        )
        labelled = chat(server, "writer", f"Story so far.\nInstruction: {INSTRUCTION}.")
        other = chat(server, "writer", "Instruction: Corin burns the ledger.")
        again = chat(server, "writer", "Instruction: Corin burns the ledger.")

    assert INSTRUCTION in quoted and INSTRUCTION in labelled
    assert all(80 <= len(text.split()) <= 150 for text in (quoted, labelled, other))
    assert "Corin burns the ledger" in other and other not in (quoted, labelled)
    assert again == other  # deterministic


def test_structured_roles_answer_json_when_asked_and_labels_otherwise():
    with ScriptedServer() as server:
        memory_json = json.loads(chat(server, "memory", "para", response_format=MEMORY_FORMAT))
        memory_text = chat(server, "memory", "para")
        plans = chat(server, "planner", "plan")
        opening = json.loads(chat(server, "opening", "premise", response_format=MEMORY_FORMAT))

    assert set(memory_json) == {"short_term_memory", "reason"}
    assert memory_text.startswith("Short-term memory: ") and "\nReason: " in memory_text
    assert [line.split(":")[0] for line in plans.splitlines()] == [
        "Instruction 1", "Instruction 2", "Instruction 3"
    ]
    assert set(opening) == {"title", "outline"} and opening["title"]


def test_unsupported_json_schema_is_a_400_naming_response_format():
    with ScriptedServer(json_schema_supported=False) as server:
        server.enqueue(Reply("kept for the next request"))
        with pytest.raises(openai.BadRequestError, match="response_format"):
            chat(server, "memory", "para", response_format=MEMORY_FORMAT)
        assert chat(server, "memory", "para") == "kept for the next request"


def test_completions_and_models_endpoints():
    with ScriptedServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        server.enqueue(Reply("once upon a time"))
        completion = client.completions.create(model="scripted-model", prompt="Begin")
        streamed = client.completions.create(model="scripted-model", prompt="Begin", stream=True)
        pieces = [choice.text for event in streamed for choice in event.choices]
        models = [model.id for model in client.models.list()]

    assert completion.choices[0].text == "once upon a time"
    assert completion.usage.completion_tokens == 4
    assert len(pieces) > 1 and "".join(pieces) == story_responder(server.requests[1]).text
    assert models == ["scripted-model"]


def test_stop_sequences_end_the_reply():
    with ScriptedServer(lambda request: Reply("one two\n\nthree")) as server:
        assert chat(server, None, "go", stop=["\n\n"]) == "one two"


async def test_requests_are_served_concurrently():
    async with ScriptedServer(latency_s=0.2) as server:
        async with httpx.AsyncClient(timeout=5) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "go"}]}
            replies = await asyncio.gather(
                *[client.post(server.base_url + "/chat/completions", json=body) for _ in range(6)]
            )
    assert [reply.status_code for reply in replies] == [200] * 6
    assert server.max_concurrent == 6


def test_error_replies_have_openai_shape_and_headers():
    with ScriptedServer() as server:
        server.enqueue(Reply(status=429, headers={"Retry-After": "7"}))
        reply = httpx.post(
            server.base_url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "go"}]},
        )
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "7"
    assert set(reply.json()["error"]) >= {"message", "type", "code"}


@pytest.mark.parametrize("role", sorted(SAMPLE_FIELDS))
def test_messy_reply_helpers_keep_or_break_the_sample_fields_as_named(role):
    fields = SAMPLE_FIELDS[role]
    first_value = next(iter(fields.values()))
    first_value = first_value[0] if isinstance(first_value, list) else first_value

    markdown = markdown_labels_reply(role).text
    assert "**" in markdown and first_value in markdown
    fenced = fenced_json_reply(role).text
    inner = fenced.split("```json", 1)[1].split("```", 1)[0]
    assert json.loads(inner) == fields and not fenced.startswith("```")
    missing = json.loads(missing_field_reply(role, as_json=True).text)
    assert missing != fields and set(missing) <= set(fields)
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated_reply(role, as_json=True).text)

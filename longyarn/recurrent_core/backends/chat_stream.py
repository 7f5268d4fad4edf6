"""A streamed chat completion read as plain JSON events.

The `openai` package builds a pydantic model for every streamed chunk: about 0.1 ms of CPU a
token, which a process serving many readers pays for every token of every reader. The reply
needs three fields of each chunk, so the events are read here with `json.loads` from the
response the package opened (it still builds and sends the request and raises its errors).
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any, AsyncIterator

import anyio
import openai

try:  # the HTTP client the openai package is built on (httpx2 from openai 3)
    import httpx2 as http_client
except ImportError:  # pragma: no cover - older openai releases
    import httpx as http_client  # type: ignore[no-redef]

from ..types import Usage


@dataclass(frozen=True)
class ChunkFields:
    """What one streamed chunk says: text to append, a finish reason, token counts."""

    text: str | None
    finish_reason: str | None
    usage: Usage | None


async def sse_data(lines: AsyncIterator[str], request: Any) -> AsyncIterator[str]:
    """The data of each server-sent event, per the SSE format: `data:` lines joined by newlines,
    an event ending at a blank line; comments and other fields are skipped. A connection that
    breaks or times out mid-stream raises the openai package's own error for it."""
    async for data in _events(_mapped_errors(lines, request)):
        yield data


async def _mapped_errors(lines: AsyncIterator[str], request: Any) -> AsyncIterator[str]:
    try:
        async for line in lines:
            yield line
    except http_client.TimeoutException as error:
        raise openai.APITimeoutError(request=request) from error
    except (http_client.RequestError, ssl.SSLError, anyio.EndOfStream) as error:
        raise openai.APIConnectionError(request=request) from error


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def chunk_fields(data: str, request: Any) -> ChunkFields:
    """The fields of one chunk's JSON; ValueError when it is not a chunk, and the server's
    own error (some servers report one mid-stream) as an `openai.APIError`."""
    event = json.loads(data)
    if not isinstance(event, dict):
        raise ValueError(f"a streamed chunk that is not a JSON object: {data[:80]!r}")
    error = event.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise openai.APIError(message or "The server reported an error mid-stream.", request, body=error)
    usage = event.get("usage")
    text = finish_reason = None
    choices = event.get("choices") or []  # a usage-only chunk may carry [] or null, or none at all
    if not isinstance(choices, list):
        raise ValueError(f"a streamed chunk whose choices are not a list: {data[:80]!r}")
    if choices:
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict | None):
            raise ValueError(f"a streamed chunk of the wrong shape: {data[:80]!r}")
        delta = delta or {}
        text = delta.get("content") or None
        if text is not None and not isinstance(text, str):
            raise ValueError(f"a streamed chunk whose content is not text: {data[:80]!r}")
        finish_reason = choice.get("finish_reason") or None
    return ChunkFields(
        text=text,
        finish_reason=None if finish_reason is None else str(finish_reason),
        usage=None if not isinstance(usage, dict) else Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        ),
    )

"""A real OpenAI-compatible HTTP server on 127.0.0.1 that answers from a script.

Tests and benchmarks point the real `openai` client (or anything else that speaks the
protocol) at `ScriptedServer().base_url` and decide what it answers: queued `Reply`s first,
then a responder function. `story_responder` gives plausible, deterministic replies per role,
so the whole engine can run end to end without a model.

    with ScriptedServer(story_responder) as server:
        backend = OpenAIBackend("scripted-model", base_url=server.base_url, api_key=None)
        ...
        assert server.requests[0]["_role"] == "writer"

The server runs uvicorn on its own event loop in a background thread, so it works the same
from synchronous and asynchronous tests. Requests are served concurrently: K clients waiting
on `latency_s` see K-fold throughput.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.scripted_continuity import continuity_fields

ROLE_HEADER = "x-longyarn-role"
DEFAULT_MODEL = "scripted-model"


@dataclass
class Reply:
    """One scripted answer: its text, or an HTTP error, and how to deliver it."""

    text: str = ""  # the assistant's whole reply
    status: int = 200  # non-200: an OpenAI-style error body {"error": {"message","type","code"}}
    delay_s: float = 0.0  # before answering (use for timeouts / latency)
    stream_cut_after: int | None = None  # streamed: drop the connection after this many chunks
    stream_end_after: int | None = None  # streamed: end the body cleanly, with no finish_reason
    # and no [DONE], after this many chunks (as a proxy that gives up can)
    chunk_chars: int = 12  # streamed: characters per SSE chunk
    chunk_delay_s: float = 0.0  # streamed: pause between chunks
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "0"}
    error_message: str | None = None  # non-200: overrides the default message for the status
    error_code: str | None = None  # non-200: overrides the default error code
    raw_body: str | None = None  # sent as it is, instead of JSON or SSE events (malformed replies)
    finish_reason: str = "stop"  # "length": the text is what a server sends when max_tokens cut it
    empty_choices_first: bool = False  # streamed: a chunk with "choices": [] before the text
    # (as Azure OpenAI sends its prompt filter results)
    usage_without_choices: bool = False  # streamed: the usage chunk has no "choices" key at all
    sse_comments: bool = False  # streamed: ": keep-alive" comments between events and "data:"
    # without its space (as OpenRouter and some proxies send)
    error_event_after: int | None = None  # streamed: after this many chunks, an {"error": ...}
    # event ends the stream (as vLLM and OpenRouter report a failure mid-reply)


Responder = Callable[[dict], Reply]


class _DeliberateStreamCut(Exception):
    """Raised inside the app to make uvicorn drop a connection mid-body, as a crash would."""


class _HideDeliberateCuts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DeliberateStreamCut))


# ---- the server -----------------------------------------------------------------------


class ScriptedServer:
    """Context manager (sync `with` and `async with`): starts uvicorn in a background thread on
    127.0.0.1 with a free port; stops it on exit.

    - `requests`: every request body received, in order, each with added keys "_role" (from the
      X-Longyarn-Role header, or None) and "_path".
    - `enqueue(*replies)`: served first, in order, before the responder is used.
    - `json_schema_supported=False`: a request carrying a json_schema response_format gets a 400
      whose message mentions response_format (a queued reply is not consumed by it).
    - `refused_response_formats` / `response_format_refusal`: the response_format types refused,
      and how: "vllm" (a 400 naming the type) or "llama-cpp-python" (a 500 whose body is the
      pydantic validation error naming response_format and the type, as its server 0.3 sends).
    - `one_slot=True`: one request at a time, as llama-cpp-python's server runs: a request that
      arrives while another is being answered cuts that one and is dropped itself (both clients
      see a broken connection). `overlap_drops` counts the requests dropped so.
    - `latency_s`: added to every request.
    - `known_models`: when given, a request for any other model gets OpenAI's 404 model_not_found.
    - `disconnects`: how many streamed replies the client abandoned before their end;
      `completed_streams`: how many were sent to the end.
    - `max_concurrent`: the most requests that were being handled at the same time.
    - `rejected_parameters`: a request carrying any of these body keys gets the 400 that vLLM's
      request validation sends for a field it does not know, naming the field.
    - `context_tokens`: the model's context; a request whose prompt (`prompt_tokens`) plus its
      max_tokens is longer gets the 400 vLLM sends, naming both (as every server refuses or,
      like Ollama, silently cuts such a request). `over_context` counts them.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        json_schema_supported: bool = True,
        latency_s: float = 0.0,
        known_models: tuple[str, ...] | None = None,
        rejected_parameters: tuple[str, ...] = (),
        refused_response_formats: tuple[str, ...] = (),
        response_format_refusal: str = "vllm",
        one_slot: bool = False,
        context_tokens: int | None = None,
    ) -> None:
        self.responder: Responder = responder or story_responder
        self.context_tokens = context_tokens
        self.over_context = 0
        self.json_schema_supported = json_schema_supported
        self.latency_s = latency_s
        self.known_models = known_models
        self.rejected_parameters = rejected_parameters
        self.refused_response_formats = set(refused_response_formats)
        if not json_schema_supported:
            self.refused_response_formats.add("json_schema")
        self.response_format_refusal = response_format_refusal
        self.one_slot = one_slot
        self.overlap_drops = 0
        self._answering: set[asyncio.Event] = set()  # one per request until its reply is sent
        self.requests: list[dict] = []
        self.disconnects = 0
        self.completed_streams = 0
        self.max_concurrent = 0
        self._in_flight = 0
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.base_url = ""

    # -- scripting --

    def enqueue(self, *replies: Reply) -> None:
        """Serve these replies first, in order, before the responder is consulted."""
        with self._lock:
            self._queue.extend(replies)

    def _next_reply(self, request: dict) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.responder(request)

    # -- lifecycle --

    def start(self) -> "ScriptedServer":
        """Bind a free port and serve until `stop()`; returns once the server accepts requests."""
        # Binding the socket ourselves (port 0) leaves no gap in which another process could
        # take the free port before uvicorn does.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(
            _build_app(self),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_HIDE_CUTS)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True,
            name=f"scripted-server-{self.port}",
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The scripted OpenAI server did not start.")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving and join the server thread (open streams get a second to finish)."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=3)
        if self._thread.is_alive():  # a handler ignored the graceful deadline: stop waiting for it
            self._server.force_exit = True
            self._thread.join(timeout=3)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> "ScriptedServer":
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)


_HIDE_CUTS = _HideDeliberateCuts()


def _build_app(server: ScriptedServer) -> Starlette:
    async def chat_completions(request: Request) -> Response:
        return await _answer(server, request, kind="chat")

    async def completions(request: Request) -> Response:
        return await _answer(server, request, kind="text")

    async def models(request: Request) -> Response:
        await asyncio.sleep(server.latency_s)
        names = server.known_models or (DEFAULT_MODEL,)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "longyarn-tests"}
                    for name in names
                ],
            }
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


async def _answer(server: ScriptedServer, http_request: Request, *, kind: str) -> Response:
    server._in_flight += 1
    server.max_concurrent = max(server.max_concurrent, server._in_flight)
    cut = asyncio.Event()  # set when a one-slot server cuts this request for a newer one
    response: Response | None = None
    try:
        response = await _answer_one(server, http_request, kind=kind, cut=cut)
        return response
    finally:
        server._in_flight -= 1
        if not isinstance(response, _SSEStream):  # a stream lets go of its slot when it ends
            server._answering.discard(cut)


async def _answer_one(
    server: ScriptedServer, http_request: Request, *, kind: str, cut: asyncio.Event
) -> Response:
    try:
        body = await http_request.json()
    except ValueError:
        return _error_response(400, "The request body is not valid JSON.", "invalid_json")
    if not isinstance(body, dict):
        return _error_response(400, "The request body must be a JSON object.", "invalid_json")
    body["_role"] = http_request.headers.get(ROLE_HEADER)
    body["_path"] = http_request.url.path
    server.requests.append(body)
    if server.one_slot and server._answering:
        for busy in server._answering:
            busy.set()
        server.overlap_drops += 1
        return _DroppedConnection()
    server._answering.add(cut)

    if server.latency_s and not await _sleep_while_connected(http_request, server.latency_s):
        return Response(status_code=499)
    if cut.is_set():
        return _DroppedConnection()

    model = body.get("model") or DEFAULT_MODEL
    if server.known_models is not None and model not in server.known_models:
        return _error_response(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "model_not_found",
        )
    for name in server.rejected_parameters:
        if name in body:
            return _error_response(
                400,
                f"[{{'type': 'extra_forbidden', 'loc': ('body', '{name}'), "
                f"'msg': 'Extra inputs are not permitted', 'input': {body[name]!r}}}]",
                "BadRequestError",
            )
    if server.context_tokens is not None:
        asked = prompt_tokens(body)
        completion = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        if asked + completion > server.context_tokens:
            server.over_context += 1
            return _error_response(
                400,
                f"This model's maximum context length is {server.context_tokens} tokens. However, you "
                f"requested {asked + completion} tokens ({asked} in the messages, {completion} in the "
                "completion). Please reduce the length of the messages or completion.",
                "BadRequestError",
            )
    refused_format = _response_format_type(body)
    if refused_format in server.refused_response_formats:
        return _response_format_refusal(server.response_format_refusal, refused_format)

    reply = server._next_reply(body)
    if reply.delay_s and not await _sleep_while_connected(http_request, reply.delay_s):
        return Response(status_code=499)  # nobody is listening; this only ends the handler
    if reply.status != 200:
        return _error_response(
            reply.status, reply.error_message, reply.error_code, headers=reply.headers
        )

    if reply.raw_body is not None:
        media_type = "text/event-stream" if body.get("stream") else "application/json"
        return Response(reply.raw_body, headers=reply.headers, media_type=media_type)
    text = _apply_stop(reply.text, body.get("stop"))
    if cut.is_set():
        return _DroppedConnection()
    if body.get("stream"):
        return _SSEStream(server, reply, text, body, kind=kind, cut=cut)
    return JSONResponse(
        _whole_reply(text, body, kind=kind, finish_reason=reply.finish_reason), headers=reply.headers
    )


async def _sleep_while_connected(http_request: Request, seconds: float) -> bool:
    """Wait `seconds`, waking early (and returning False) if the client hangs up, so that a
    client that timed out does not keep a handler, and the server's shutdown, waiting."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.05))
        if await http_request.is_disconnected():
            return False
    return True


def _response_format_refusal(style: str, refused: str) -> JSONResponse:
    if style == "llama-cpp-python":
        # Its server validates the body inside the route's error handler, which answers every
        # exception with a 500 and the exception's text.
        allowed = "'text' or 'json_object'"
        message = (
            f"[{{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
            f"'msg': \"Input should be {allowed}\", 'input': '{refused}', "
            f"'ctx': {{'expected': \"{allowed}\"}}}}]"
        )
        return JSONResponse(
            {"error": {"message": message, "type": "internal_server_error", "param": None, "code": None}},
            status_code=500,
        )
    return _error_response(
        400,
        f"response_format of type {refused} is not supported by this server.",
        "unsupported_response_format",
    )


class _DroppedConnection(Response):
    """Headers, then a dropped connection: what a client of a server that gave up sees."""

    def __init__(self) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        raise _DeliberateStreamCut()


def _response_format_type(body: dict) -> str | None:
    response_format = body.get("response_format")
    return response_format.get("type") if isinstance(response_format, dict) else None


def _apply_stop(text: str, stop: Any) -> str:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


_ERROR_DEFAULTS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request", "The request was invalid."),
    401: ("authentication_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", "forbidden", "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    422: ("invalid_request_error", "unprocessable", "The request could not be processed."),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", "server_error", "The server had an error while processing your request."),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "overloaded", "The server is overloaded."),
}


def _error_response(
    status: int,
    message: str | None = None,
    code: str | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error_type, default_code, default_message = _ERROR_DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", "error", "Error.")
    )
    return JSONResponse(
        {
            "error": {
                "message": message or default_message,
                "type": error_type,
                "code": code or default_code,
                "param": None,
            }
        },
        status_code=status,
        headers=headers,
    )


def _word_count(text: str) -> int:
    return len(text.split())


def prompt_tokens(body: dict) -> int:
    """A request's prompt in tokens as a server's tokenizer would count English text: about four
    characters a token, and a few tokens of chat template around each message."""
    messages = body.get("messages")
    if messages is None:
        prompt = body.get("prompt")
        return len(" ".join(prompt) if isinstance(prompt, list) else str(prompt or "")) // 4
    return sum(len(str(message.get("content") or "")) // 4 + 4 for message in messages)


def _prompt_words(body: dict) -> int:
    if "messages" in body:
        return sum(_word_count(str(m.get("content") or "")) for m in body["messages"])
    prompt = body.get("prompt") or ""
    return sum(_word_count(p) for p in prompt) if isinstance(prompt, list) else _word_count(prompt)


def _usage(text: str, body: dict) -> dict:
    prompt_tokens, completion_tokens = _prompt_words(body), _word_count(text)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _whole_reply(text: str, body: dict, *, kind: str, finish_reason: str = "stop") -> dict:
    common = {"created": int(time.time()), "model": body.get("model") or DEFAULT_MODEL}
    if kind == "chat":
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            **common,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": _usage(text, body),
        }
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        **common,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        "usage": _usage(text, body),
    }


class _SSEStream(Response):
    """Server-sent events in OpenAI's chunk shapes, with scripted pacing and a scripted cut.

    Written against raw ASGI (rather than StreamingResponse) so that it can notice the client
    leaving between chunks and count it, and can drop the connection on purpose.
    """

    def __init__(
        self, server: ScriptedServer, reply: Reply, text: str, body: dict, *, kind: str,
        cut: asyncio.Event,
    ):
        super().__init__(status_code=200, headers=reply.headers, media_type="text/event-stream")
        # The body length is unknown up front: drop the content-length Response set for b"",
        # so that uvicorn uses chunked encoding (which is also what lets a cut look like a cut).
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.raw_headers.append((b"cache-control", b"no-cache"))
        self._server, self._reply, self._text = server, reply, text
        self._body, self._kind, self._cut = body, kind, cut
        self._id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self._created = int(time.time())
        self._model = body.get("model") or DEFAULT_MODEL

    def _chunk(self, piece: str | None, finish_reason: str | None = None, **extra: Any) -> dict:
        if self._kind == "chat":
            delta = {} if piece is None else {"content": piece}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            obj = "chat.completion.chunk"
        else:
            choice = {
                "index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish_reason
            }
            obj = "text_completion"
        return {"id": self._id, "object": obj, "created": self._created, "model": self._model,
                "choices": [choice], **extra}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client_left = asyncio.Event()

        async def watch_for_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            client_left.set()

        watcher = asyncio.create_task(watch_for_disconnect())
        try:
            finished = await self._send_events(send, client_left)
        finally:
            watcher.cancel()
            self._server._answering.discard(self._cut)
        if finished:
            self._server.completed_streams += 1
        else:
            self._server.disconnects += 1

    async def _send_events(self, send: Send, client_left: asyncio.Event) -> bool:
        """Send the whole stream; False if the client left first."""
        reply = self._reply
        include_usage = bool((self._body.get("stream_options") or {}).get("include_usage"))
        usage_field = {"usage": None} if include_usage else {}

        async def event(payload: dict | str) -> bool:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            if client_left.is_set():
                return False
            body = f": keep-alive\n\ndata:{data}\n\n" if reply.sse_comments else f"data: {data}\n\n"
            await send({"type": "http.response.body", "body": body.encode(), "more_body": True})
            return True

        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        if self._kind == "chat":
            opening = self._chunk(None, **usage_field)
            opening["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            if reply.empty_choices_first:
                filters = self._chunk(None)
                filters["choices"] = []
                filters["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
                if not await event(filters):
                    return False
            if not await event(opening):
                return False

        step = max(1, reply.chunk_chars)
        pieces = [self._text[i : i + step] for i in range(0, len(self._text), step)]
        for sent, piece in enumerate(pieces):
            if reply.stream_cut_after is not None and sent >= reply.stream_cut_after:
                raise _DeliberateStreamCut()
            if reply.error_event_after is not None and sent >= reply.error_event_after:
                await event({"error": {"message": "The model crashed mid-reply.", "type": "server_error"}})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return True
            if reply.stream_end_after is not None and sent >= reply.stream_end_after:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return True
            if sent and reply.chunk_delay_s:
                try:  # wake early if the client goes away, as a real server would stop generating
                    await asyncio.wait_for(client_left.wait(), reply.chunk_delay_s)
                except asyncio.TimeoutError:
                    pass
            if self._cut.is_set():
                raise _DeliberateStreamCut()
            if not await event(self._chunk(piece, **usage_field)):
                return False
        if reply.stream_cut_after is not None and len(pieces) >= reply.stream_cut_after:
            raise _DeliberateStreamCut()

        if not await event(self._chunk(None, reply.finish_reason, **usage_field)):
            return False
        if include_usage:
            final = self._chunk(None, usage=_usage(self._text, self._body))
            final["choices"] = []
            if reply.usage_without_choices:
                del final["choices"]
            if not await event(final):
                return False
        if not await event("[DONE]"):
            return False
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True


# ---- plausible replies per role -------------------------------------------------------

_STOPWORDS = frozenset(
    """a an the and or but if then than that this these those there their they them he she
    his her hers him it its of to in on at by for from with without into onto over under
    about after before while when where which who whom whose what why how is are was were be
    been being have has had do does did not no nor so as up down out off again further once
    here all any both each few more most other some such only own same too very can will
    just should now must may might would could shall your you our we us i me my mine yours
    next step write paragraph story instruction premise genre outline title memory reason
    summary summarise json output format label labels answer reply context""".split()
)

_NAMES = ("Mara", "Tobias", "Ilse", "Corin", "Anya", "Felix", "Odile", "Ravi", "Sunniva", "Jonah")
_PLACES = ("the lighthouse", "the salt marsh", "the old mill", "the harbour", "the orchard",
           "the station", "the attic", "the ferry", "the glasshouse", "the market square")
_OBJECTS = ("a brass key", "a torn map", "a letter", "a lantern", "a music box", "a compass",
            "a photograph", "a ledger", "a pocket watch", "a wooden boat")
_MOODS = ("quiet", "uneasy", "bright", "heavy", "restless", "tender", "cold", "strange")

_SCENE_SENTENCES = (
    "{name} stood at the edge of {place} and listened to the wind worry the loose boards.",
    "The light was {mood} that evening, and every shadow seemed to lean toward the water.",
    "Somewhere below, a door knocked against its frame as if someone had forgotten to leave.",
    "{name} turned {object} over in both hands, feeling for the seam that had always been there.",
    "Nobody in the village spoke about {place} after dark, and {name} had never asked why.",
    "The smell of tar and rain clung to everything, even to the pages of the old almanac.",
    "It was the kind of silence that made a person count their own breaths.",
    "A gull cried once and then thought better of it.",
    "{name} remembered the promise, and the memory sat in the chest like a swallowed stone.",
    "By the time the bells rang, the tide had already begun to turn.",
    "Far off, a lamp was lit in a window that had been dark for eleven years.",
    "The floorboards answered each step with a different complaint.",
)
_INSTRUCTION_LEAD_INS = (
    "{name} knew what had to happen next: {instruction}",
    "And then, because there was no other way: {instruction}",
    "It came to this in the end: {instruction}",
    "Later, nobody could say who decided it first: {instruction}",
)


def _request_seed(request: dict) -> random.Random:
    """A random generator seeded by the request's content, so equal requests get equal replies."""
    content = json.dumps(
        {k: request.get(k) for k in ("messages", "prompt", "model", "seed")}, sort_keys=True
    )
    return random.Random(int.from_bytes(hashlib.sha256(content.encode()).digest()[:8], "big"))


def _last_user_text(request: dict) -> str:
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                return " ".join(str(part.get("text", "")) for part in content)
            return str(content or "")
    prompt = request.get("prompt")
    return " ".join(prompt) if isinstance(prompt, list) else str(prompt or "")


_QUOTED = re.compile(r"<<<(?P<text>.*?)>>>", re.S)
_INSTRUCTION_LINE = re.compile(
    r"^[\s#>*_-]*(?:next\s+|current\s+)?instruction[\s*_]*[:\-]+[\s*_]*(?P<text>\S.*)$",
    re.IGNORECASE | re.MULTILINE,
)


def find_instruction(request: dict) -> str:
    """The instruction a writer prompt carries, found in the last user message as: the last
    text quoted <<<like this>>> (the writer template quotes the instruction and nothing else,
    apart from naming the quotes themselves, "<<< and >>>"); else an "Instruction: ..." line;
    else the first non-empty line."""
    text = _last_user_text(request)
    quoted = [" ".join(m.group("text").split()) for m in _QUOTED.finditer(text)]
    quoted = [q for q in quoted if q.lower() not in ("", "and", "or")]
    if quoted:
        return quoted[-1]
    match = _INSTRUCTION_LINE.search(text)
    if match:
        return match.group("text").strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def content_words(text: str, limit: int = 8) -> list[str]:
    """Distinct non-trivial words of `text` in order of first appearance (at most `limit`)."""
    seen: dict[str, str] = {}
    for word in re.findall(r"[A-Za-z][A-Za-z'-]*[A-Za-z]", text):
        key = word.lower()
        if len(key) >= 4 and key not in _STOPWORDS and key not in seen:
            seen[key] = word
    return list(seen.values())[:limit]


def _fill(template: str, rng: random.Random, **extra: str) -> str:
    return template.format(
        name=extra.get("name", rng.choice(_NAMES)),
        place=rng.choice(_PLACES),
        object=rng.choice(_OBJECTS),
        mood=rng.choice(_MOODS),
    )


def writer_paragraph(request: dict) -> str:
    """A paragraph of 80-150 words that repeats the request's instruction in one sentence, so a
    test can check that the instruction reached the writer."""
    rng = _request_seed(request)
    name = rng.choice(_NAMES)
    sentences = []
    instruction = find_instruction(request).rstrip(" .!?;:")
    if instruction:
        lead_in = rng.choice(_INSTRUCTION_LEAD_INS)
        sentences.append(lead_in.format(name=name, instruction=instruction) + ".")
    scene = list(_SCENE_SENTENCES)
    rng.shuffle(scene)
    words = sum(_word_count(s) for s in sentences)
    for template in scene:
        if words >= 90:
            break
        sentence = _fill(template, rng, name=name)
        sentences.insert(rng.randrange(len(sentences) + 1), sentence)
        words += _word_count(sentence)
    return " ".join(sentences)


def _wants_json(request: dict) -> bool:
    return _response_format_type(request) in ("json_schema", "json_object")


def memory_fields(request: dict) -> dict[str, str]:
    rng = _request_seed(request)
    name, place, obj = rng.choice(_NAMES), rng.choice(_PLACES), rng.choice(_OBJECTS)
    keywords = content_words(_last_user_text(request), limit=12)
    focus = rng.choice(keywords).lower() if keywords else "secret"
    return {
        "short_term_memory": (
            f"{name} has reached {place} carrying {obj}. The {focus} is still unexplained, "
            f"and {name} means to find out who left it there before the tide turns."
        ),
        "reason": f"Kept the {focus} and {name}'s goal because the next paragraphs depend on them.",
    }


def planner_fields(request: dict) -> dict[str, list[str]]:
    rng = _request_seed(request)
    names = rng.sample(_NAMES, 3)
    places = rng.sample(_PLACES, 3)
    objects = rng.sample(_OBJECTS, 3)
    return {
        "instructions": [
            f"{names[0]} follows the trail of {objects[0]} to {places[0]}.",
            f"{names[1]} confesses what happened at {places[1]} the night of the storm.",
            f"A stranger arrives at {places[2]} asking about {objects[2]}.",
        ]
    }


def opening_fields(request: dict) -> dict[str, str]:
    rng = _request_seed(request)
    keywords = content_words(_last_user_text(request), limit=6) or ["lantern"]
    name = rng.choice(_NAMES)
    noun = keywords[0].capitalize()
    return {
        "title": f"The {rng.choice(_MOODS).capitalize()} {noun}",
        "outline": (
            f"{name} returns to {rng.choice(_PLACES)} and finds {rng.choice(_OBJECTS)} tied to "
            f"the {keywords[-1]}. Old loyalties are tested as the truth comes out. In the end "
            f"{name} must choose between the life they built and the one they left behind."
        ),
    }


def chapter_summary_fields(request: dict) -> dict[str, str]:
    """A chapter's title and summary that name the chapter's first content words, so a test
    can tell which chapter a summary came from."""
    rng = _request_seed(request)
    text = _last_user_text(request)
    chapter = text.split("## Chapter text", 1)[-1]
    keywords = content_words(chapter, limit=4) or ["silence"]
    return {
        "title": f"The {rng.choice(_MOODS).capitalize()} {keywords[0].capitalize()}",
        "summary": f"In this chapter {rng.choice(_NAMES)} dealt with the {', the '.join(k.lower() for k in keywords)}.",
    }


def _labelled(role: str, fields: dict) -> str:
    if role == "memory":
        return f"Short-term memory: {fields['short_term_memory']}\nReason: {fields['reason']}"
    if role == "planner":
        return "\n".join(
            f"Instruction {i}: {text}" for i, text in enumerate(fields["instructions"], start=1)
        )
    if role == "opening":
        return f"Title: {fields['title']}\nOutline: {fields['outline']}"
    if role == "chapter_summary":
        return f"Title: {fields['title']}\nSummary: {fields['summary']}"
    if role == "continuity":
        return json.dumps(fields)  # it has no labelled form
    raise ValueError(f"no labelled form for role {role!r}")


_FIELDS_BY_ROLE: dict[str, Callable[[dict], dict]] = {
    "memory": memory_fields,
    "planner": planner_fields,
    "opening": opening_fields,
    "chapter_summary": chapter_summary_fields,
    "continuity": continuity_fields,  # see scripted_continuity: reports only what was planted
}


def story_responder(request: dict) -> Reply:
    """Plausible, deterministic replies per role (`request["_role"]`), varied by request content.

    writer: an 80-150 word paragraph using the instruction's words; memory, planner, opening:
    JSON when the request asks for a json_schema/json_object response, labelled text otherwise.
    A request without a role gets a writer paragraph.
    """
    role = request.get("_role")
    fields_for = _FIELDS_BY_ROLE.get(role or "")
    if fields_for is None:
        return Reply(writer_paragraph(request))
    fields = fields_for(request)
    return Reply(json.dumps(fields) if _wants_json(request) else _labelled(role, fields))


# ---- messy replies for parser tests ---------------------------------------------------

SAMPLE_FIELDS: dict[str, dict] = {
    "memory": {
        "short_term_memory": "Mara has the brass key and suspects her brother lied about the fire.",
        "reason": "The key and the lie drive the next scene.",
    },
    "planner": {
        "instructions": [
            "Mara confronts her brother at the harbour.",
            "Mara opens the locked room with the brass key.",
            "A letter arrives from the mainland.",
        ]
    },
    "opening": {
        "title": "The Salt Marsh Key",
        "outline": "Mara returns home, finds a key, and learns what burned the mill.",
    },
}
"""The field values the messy-reply helpers use unless given others; parser tests compare
what they parse against these."""


def _fields(role: str, fields: dict | None) -> dict:
    if role not in SAMPLE_FIELDS:
        raise ValueError(f"role must be one of {sorted(SAMPLE_FIELDS)}, not {role!r}")
    return dict(fields if fields is not None else SAMPLE_FIELDS[role])


def markdown_labels_reply(role: str, fields: dict | None = None) -> Reply:
    """Labelled text with markdown around the labels, e.g. `**Short-term memory:** ...`."""
    plain = _labelled(role, _fields(role, fields))
    lines = [re.sub(r"^([^:]+):", r"**\1:**", line) for line in plain.splitlines()]
    return Reply("Here is what I came up with.\n\n" + "\n\n".join(lines) + "\n")


def fenced_json_reply(role: str, fields: dict | None = None) -> Reply:
    """JSON inside a ```json fence, with chatter before and after."""
    body = json.dumps(_fields(role, fields), indent=2)
    return Reply(
        f"Sure! Here is the result:\n\n```json\n{body}\n```\n\nLet me know if you want changes."
    )


def missing_field_reply(role: str, *, as_json: bool = False) -> Reply:
    """A reply that lacks one expected field (memory: no reason; planner: two instructions;
    opening: no outline)."""
    fields = _fields(role, None)
    if role == "memory":
        del fields["reason"]
    elif role == "planner":
        fields["instructions"] = fields["instructions"][:2]
    else:
        del fields["outline"]
    if as_json:
        return Reply(json.dumps(fields))
    if role == "memory":
        return Reply(f"Short-term memory: {fields['short_term_memory']}")
    if role == "opening":
        return Reply(f"Title: {fields['title']}")
    return Reply(_labelled(role, fields))


def truncated_reply(role: str, *, as_json: bool = False) -> Reply:
    """A reply cut off mid-sentence, as when max_tokens runs out."""
    fields = _fields(role, None)
    text = json.dumps(fields) if as_json else _labelled(role, fields)
    return Reply(text[: int(len(text) * 0.6)])


__all__ = [
    "prompt_tokens",
    "Reply",
    "ScriptedServer",
    "story_responder",
    "writer_paragraph",
    "find_instruction",
    "content_words",
    "SAMPLE_FIELDS",
    "markdown_labels_reply",
    "fenced_json_reply",
    "missing_field_reply",
    "truncated_reply",
]

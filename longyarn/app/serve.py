"""`longyarn serve`: the local RWKV-7 model behind an OpenAI-compatible HTTP API.

    longyarn serve [--host 127.0.0.1] [--port 8000] [--checkpoint PATH]

Endpoints: `GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions`, each
streaming (server-sent events, with `stream_options.include_usage`) or not, with usage
counts. Any OpenAI client works, longyarn's own included (`--base-url http://127.0.0.1:8000/v1`).

- A parameter sent as null takes its default, as OpenAI does.
- Bad parameters get HTTP 400 with OpenAI's error body
  `{"error": {"message", "type": "invalid_request_error", "param", "code"}}`: an unknown model,
  values out of range, n above 1, tools, logprobs, JSON modes, malformed messages, a prompt
  over the model's limit.
- The model serves one request at a time (CPU inference is compute-bound); up to
  `max_waiting` more wait their turn, and any beyond get HTTP 503 with an OpenAI-style body
  and a Retry-After header.
- A client that disconnects, mid-stream or while it waits for a whole reply, stops the model
  within one token.
- Chat messages become RWKV's chat transcript (`System: ...`, `User: ...`, `Assistant:`, as
  `longyarn.recurrent_core.local_lm.chat_format` writes it) with blank lines inside a message
  collapsed, because RWKV chat models read a blank line as the end of a turn; the reply ends
  at the next "\\n\\nUser:". A last message from the assistant is continued rather than
  answered.
- Extensions that vLLM and llama.cpp also accept: `top_k`, `min_p`, `repetition_penalty`,
  `ignore_eos`, and RWKV's
  `penalty_decay` (default 1: penalties as OpenAI defines them, counted without decay).

It binds 127.0.0.1 by default. With `--api-key KEY` (or `LONGYARN_API_KEY`), as vLLM and
llama.cpp's server have, every request must carry `Authorization: Bearer KEY` (compared in
constant time) or gets OpenAI's 401; a key is required to bind any address beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import socket
import sys
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable, Iterator

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from longyarn.app.serve_protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    SamplingParameters,
    chat_prompt,
    http_error,
    validation_error,
)
from longyarn.app.sockets import tcp_socket
from longyarn.recurrent_core.errors import InvalidInput, LongyarnError, ModelError
from longyarn.recurrent_core.local_lm.chat_format import CHAT_TURN_END
from longyarn.recurrent_core.local_lm.runtime import LocalGeneration, LocalRuntime
from longyarn.recurrent_core.local_lm.sampling import SamplerConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_WAITING = 16
# Paragraphs a model shared by the reading room's processes queues before it answers "busy"
# (each reader is also limited to a few a minute).
SHARED_MODEL_MAX_WAITING = 64
# OpenAI's own default for completions; chat completions have no limit there, so a server
# must pick one.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
CHAT_DEFAULT_MAX_TOKENS = 1024

_FINISH_REASONS = {"stop": "stop", "eos": "stop", "length": "length"}
# Said when the model is closed under a reply (the server stopping): the reply is incomplete.
API_KEY_ENV = "LONGYARN_API_KEY"
WRONG_KEY = (
    "The request's API key is missing or wrong, so nothing was generated; send the key this "
    "server was started with as `Authorization: Bearer KEY`."
)
MODEL_STOPPED = (
    "The model was stopped before the reply ended (the server is shutting down); the partial "
    "reply is incomplete, so send the request again once the server is back."
)


# ---- the app ----------------------------------------------------------------------------------


class _Admission:
    """At most one request runs and `max_waiting` wait; the rest are turned away (503)."""

    def __init__(self, max_waiting: int) -> None:
        self.capacity = 1 + max_waiting
        self.active = 0

    def enter(self) -> Callable[[], None]:
        """Count a request in, or raise the 503; returns the (idempotent) way out."""
        if self.active >= self.capacity:
            raise OpenAIError(
                503,
                f"The local model is busy with {self.active} requests (one running, the rest "
                "waiting); this request was not started, so retry it in a moment.",
                type="server_error",
                code="server_overloaded",
                headers={"Retry-After": "1"},
            )
        self.active += 1
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                self.active -= 1

        return leave


class _AdmittedStream(StreamingResponse):
    """A streamed reply that frees its admission however the response ends.

    The body's own `finally` would not run if sending failed before the body started.
    """

    def __init__(self, events: AsyncIterator[str], leave: Callable[[], None]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._events = events
        self._leave = leave

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()  # type: ignore[attr-defined]
            self._leave()


def create_app(
    model: LocalRuntime | Any,
    *,
    tokenizer: Any | None = None,
    model_name: str | None = None,
    max_waiting: int = DEFAULT_MAX_WAITING,
    api_key: str | None = None,
) -> FastAPI:
    """The OpenAI-compatible app for a `LocalRuntime`, for what runs on one (a `LocalBackend`:
    its `runtime`), or for a `LocalLM` and its tokenizer. With `api_key`, every request must
    carry it as a Bearer token.

    The caller owns the model and closes it (`await runtime.aclose()`) when done.
    """
    runtime = _as_runtime(model, tokenizer, model_name)
    admission = _Admission(max_waiting)
    app = FastAPI(
        title="longyarn local model", docs_url=None, redoc_url=None, openapi_url=None,
        dependencies=[Depends(_bearer_check(api_key))],
    )
    app.state.runtime = runtime
    app.state.admission = admission
    created = int(time.time())

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, error: OpenAIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        return validation_error(error).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Routing's own errors (an unknown path, a wrong method, a body that is not UTF-8)
        # would otherwise answer {"detail": ...}, which OpenAI clients cannot read.
        return http_error(request, error).response()

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [_model_card(runtime, created)]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict:
        _check_model(runtime, model_id)
        return _model_card(runtime, created)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(runtime, body.model)
        config = _sampler_config(runtime, body, body.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS)
        return await _serve(admission, runtime, request, body, body.prompt, config, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        _check_model(runtime, body.model)
        max_tokens = body.max_completion_tokens or body.max_tokens or CHAT_DEFAULT_MAX_TOKENS
        config = _sampler_config(runtime, body, max_tokens)
        prompt = chat_prompt(body.messages)
        return await _serve(admission, runtime, request, body, prompt, config, chat=True)

    return app


def _bearer_check(api_key: str | None) -> Callable[[Request], Any]:
    """A dependency that refuses requests without `api_key` as their Bearer token (none: all pass)."""
    expected = hashlib.sha256(api_key.encode()).digest() if api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        # Digests of equal length, compared in constant time: neither the key nor its length leaks.
        given = hashlib.sha256(presented.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise OpenAIError(
                401, WRONG_KEY, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )

    return check


def _as_runtime(model: Any, tokenizer: Any | None, model_name: str | None) -> LocalRuntime:
    if isinstance(model, LocalRuntime):
        return model
    if isinstance(getattr(model, "runtime", None), LocalRuntime):  # a LocalBackend
        return model.runtime
    from longyarn.recurrent_core.local_lm.tokenizer import HFTokenizer

    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise InvalidInput(
            "This model came without a tokenizer, so the server cannot read text; nothing was "
            "started, so pass tokenizer=load_tokenizer_for(checkpoint_path)."
        )
    if not hasattr(tokenizer, "decode_bytes"):  # a bare `tokenizers.Tokenizer`
        tokenizer = HFTokenizer(tokenizer)
    return LocalRuntime(model, tokenizer, model_name=model_name or "local-rwkv7")


def _model_card(runtime: LocalRuntime, created: int) -> dict:
    return {
        "id": runtime.model_name, "object": "model", "created": created, "owned_by": "longyarn",
        # What longyarn's own client (ServedLocalBackend) needs to lay out prompts and end
        # replies as the model does in process; other clients ignore it.
        "longyarn": {
            "chat": runtime.chat,
            "prose_only": runtime.prose_only,
            "jrt_repeats": runtime.jrt_repeats,
            "max_prompt_tokens": runtime.max_prompt_tokens,
        },
    }


def _check_model(runtime: LocalRuntime, model: str) -> None:
    if model != runtime.model_name:
        raise OpenAIError(
            404,  # as OpenAI answers for a model it does not have
            f"The model '{model}' is not served here; this server runs '{runtime.model_name}' "
            "only, so send that name (GET /v1/models lists it).",
            param="model",
            code="model_not_found",
        )


async def _encode(runtime: LocalRuntime, prompt: str | list[int], param: str) -> list[int]:
    if isinstance(prompt, str):
        prompt_ids = await asyncio.to_thread(runtime.tokenizer.encode, prompt)
    elif any(not 0 <= token < runtime.lm.vocab_size for token in prompt):
        raise OpenAIError(
            400,
            f"The prompt holds token ids outside this model's vocabulary (0 to "
            f"{runtime.lm.vocab_size - 1}); nothing was generated, so send text instead.",
            param=param,
            code="invalid_value",
        )
    else:
        prompt_ids = prompt
    if len(prompt_ids) > runtime.max_prompt_tokens:
        # Said here rather than by the runtime, whose advice (a lower context budget, a
        # higher max_prompt_tokens) is about longyarn's settings, which a client cannot change.
        raise OpenAIError(
            400,
            f"The prompt is {len(prompt_ids):,} tokens long, more than the "
            f"{runtime.max_prompt_tokens:,} this server's model reads; nothing was generated, "
            "so send a shorter prompt.",
            param=param,
            code="context_length_exceeded",
        )
    try:
        return runtime.check_prompt_ids(prompt_ids)
    except InvalidInput as error:
        raise OpenAIError(400, str(error), param=param, code="invalid_value") from error


def _sampler_config(runtime: LocalRuntime, body: SamplingParameters, max_tokens: int) -> SamplerConfig:
    eos = runtime.tokenizer.eos_id
    try:
        return SamplerConfig(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            min_p=body.min_p,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            repetition_penalty=body.repetition_penalty,
            penalty_decay=body.penalty_decay,
            max_tokens=max_tokens,
            stop=body.stop_strings(),
            seed=body.seed,
            banned_token_ids=(eos,) if body.ignore_eos and eos is not None else (),
        )
    except InvalidInput as error:
        raise OpenAIError(400, str(error), code="invalid_value") from error


async def _serve(
    admission: _Admission,
    runtime: LocalRuntime,
    request: Request,
    body: SamplingParameters,
    prompt: str | list[int],
    config: SamplerConfig,
    *,
    chat: bool,
):
    """Admit the request, read its prompt, and answer it streamed or whole."""
    leave = admission.enter()
    try:
        prompt_ids = await _encode(runtime, prompt, "messages" if chat else "prompt")
    except BaseException:
        leave()
        raise
    markers = (CHAT_TURN_END,) if chat else ()
    generation = runtime.generate(prompt_ids, config, reply_end_markers=markers)
    reply_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    header = {"id": reply_id, "created": int(time.time()), "model": runtime.model_name}
    if body.stream:
        return _AdmittedStream(_stream_events(generation, header, chat, body.include_usage), leave)
    try:
        text = await _text_unless_disconnected(generation, request)
    except LongyarnError as error:
        raise OpenAIError(500, str(error), type="server_error", code="model_error") from error
    finally:
        await generation.aclose()
        leave()
    if text is None:  # the client went away; the model has stopped and nobody reads this
        return Response(status_code=499)
    if generation.finish_reason == "cancelled":
        raise OpenAIError(503, MODEL_STOPPED, type="server_error", code="model_stopped")
    finish_reason = _FINISH_REASONS.get(generation.finish_reason or "", "stop")
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason,
            "logprobs": None,
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    return {
        **header,
        "object": "chat.completion" if chat else "text_completion",
        "choices": [choice],
        "usage": _usage(generation),
    }


async def _text_unless_disconnected(generation: LocalGeneration, request: Request) -> str | None:
    """The whole reply, or None if the client disconnected first (the model is stopped then).

    A reply that is not streamed sends nothing until it is done, so nothing else notices a
    client that timed out: the model would write all of max_tokens for nobody, and the
    client's retries would queue behind it.
    """
    reading = asyncio.ensure_future(generation.text())
    watching = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait((reading, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not reading.done():
            reading.cancel()  # stops the model within a token (LocalGeneration)
        await asyncio.wait((reading, watching))  # both end; the model is free after this
    if reading.cancelled():
        return None
    return reading.result()


async def _until_disconnected(request: Request) -> None:
    # The body was read already, so the next message the server sends is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _stream_events(
    generation: LocalGeneration,
    header: dict,
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choice: dict | None, **extra: Any) -> str:
        chunk = {**header, "object": kind, "choices": [choice] if choice else [], **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def choice(text: str | None, finish_reason: str | None) -> dict:
        if chat:
            delta = {} if text is None else {"content": text}
            return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}

    try:
        if chat:
            yield event({"index": 0, "delta": {"role": "assistant", "content": ""},
                         "finish_reason": None, "logprobs": None})
        async for piece in generation:
            yield event(choice(piece, None))
        if generation.finish_reason == "cancelled":
            raise ModelError(MODEL_STOPPED)  # an error event, not a finished reply
        yield event(choice(None, _FINISH_REASONS.get(generation.finish_reason or "", "stop")))
        if include_usage:
            yield event(None, usage=_usage(generation))
        yield "data: [DONE]\n\n"
    except LongyarnError as error:
        # The status line is sent already; OpenAI's clients raise on an error event.
        body = {"error": {"message": str(error), "type": "server_error", "param": None,
                          "code": "model_error"}}
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        await generation.aclose()  # a client that went away stops the model here


def _usage(generation: LocalGeneration) -> dict:
    usage = generation.usage
    prompt_tokens = usage.prompt_tokens if usage else 0
    completion_tokens = usage.completion_tokens if usage else 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# ---- running it -------------------------------------------------------------------------------


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port); `InvalidInput` if the address is taken."""
    sock = tcp_socket(host)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InvalidInput(
            f"Could not listen on {host}:{port} ({error.strerror or error}); nothing was "
            "started, so pick another --port or stop the program that uses it."
        ) from error
    return sock


@contextlib.contextmanager
def running_server(app: FastAPI, host: str = DEFAULT_HOST, port: int = 0) -> Iterator[str]:
    """Serve `app` from a background thread; yields the base URL ("http://host:port/v1").

    Port 0 picks a free port. The reading room serves its shared model this way; so do tests
    and benchmarks.
    """
    sock = bind_socket(host, port)
    actual_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server thread did not start")
            time.sleep(0.01)
        yield f"http://{host}:{actual_port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def run_server(
    settings: Any,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    checkpoint: str | None = None,
    *,
    max_waiting: int = DEFAULT_MAX_WAITING,
    api_key: str | None = None,
) -> None:
    """Load the local model the settings name (or `checkpoint`) and serve it until Ctrl+C.

    Requests must carry `api_key` as a Bearer token when it is given; it must be given to
    listen beyond loopback (`InvalidInput`, before the model loads).
    """
    if not api_key and not _is_loopback(host):
        raise InvalidInput(
            f"{host} is reachable from other machines, so `longyarn serve` needs an API key there; "
            f"nothing was started; pass --api-key KEY (or set {API_KEY_ENV}), or bind 127.0.0.1."
        )
    runtime = LocalRuntime.from_settings(settings, checkpoint=checkpoint)
    sock = bind_socket(host, port)
    app = create_app(runtime, max_waiting=max_waiting, api_key=api_key)
    shown_host = f"[{host}]" if ":" in host else host
    print(
        f"Serving {runtime.model_name} (local RWKV-7, {runtime.lm.device}) at "
        f"http://{shown_host}:{sock.getsockname()[1]}/v1, OpenAI-compatible; Ctrl+C stops it.",
        file=sys.stderr,
    )
    if api_key:
        print("Requests must carry the API key as a Bearer token.", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        runtime.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def shared_local_model(settings: Any, *, when: bool = True) -> Iterator[Any]:
    """Settings for sibling processes that should share one copy of the local model.

    Unchanged unless `when` and the settings choose the local model in process; then it is
    loaded here once and served on 127.0.0.1 while the block runs, and the settings yielded
    read it there (`--checkpoint URL`), as the reading room's workers and sessions do.
    """
    from longyarn.recurrent_core.backends.served_local import is_served_model

    if not when or settings.resolved_backend() != "local" or is_served_model(settings.checkpoint):
        yield settings
        return
    from longyarn.recurrent_core.backends.local import LocalBackend

    backend = LocalBackend.from_settings(settings)
    try:
        with running_server(create_app(backend, max_waiting=SHARED_MODEL_MAX_WAITING)) as url:
            yield settings.model_copy(update={"backend": "local", "checkpoint": url})
    finally:
        backend.close()

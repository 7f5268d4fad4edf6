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
- Chat messages become RWKV's chat transcript (`System: ...`, `User: ...`, `Assistant:`) with
  blank lines inside a message collapsed, because RWKV chat models read a blank line as the
  end of a turn; the reply ends at the next "\\n\\nUser:". A last message from the assistant
  is continued rather than answered.
- Extensions that vLLM and llama.cpp also accept: `top_k`, `ignore_eos`, and RWKV's
  `penalty_decay` (default 1: penalties as OpenAI defines them, counted without decay).

It binds 127.0.0.1 by default and has no authentication: bind another address only on a
network you trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import socket
import sys
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable, Iterator, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from longyarn.recurrent_core.backends.local import CHAT_TURN_END, LocalBackend, LocalGeneration
from longyarn.recurrent_core.errors import InvalidInput, LongyarnError, ModelError
from longyarn.recurrent_core.local_lm.sampling import SamplerConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_WAITING = 16
# OpenAI's own default for completions; chat completions have no limit there, so a server
# must pick one.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
CHAT_DEFAULT_MAX_TOKENS = 1024
MAX_STOP_STRINGS = 4

_FINISH_REASONS = {"stop": "stop", "eos": "stop", "length": "length"}
# Said when the model is closed under a reply (the server stopping): the reply is incomplete.
MODEL_STOPPED = (
    "The model was stopped before the reply ended (the server is shutting down); the partial "
    "reply is incomplete, so send the request again once the server is back."
)
_CHAT_SPEAKERS = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


class OpenAIError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


# ---- request bodies -------------------------------------------------------------------------


class _SamplingParameters(BaseModel):
    """The parameters both endpoints share; unknown ones are ignored, as OpenAI's SDKs expect."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float = Field(1.0, ge=0.0, le=5.0)  # as the in-process backend allows
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    # torch seeds its generator from a 64-bit integer; OpenAI's seed is one too.
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    logit_bias: dict[str, float] | None = None
    # Extensions (vLLM, llama.cpp and RWKV servers accept these too).
    top_k: int = Field(0, ge=0)
    penalty_decay: float = Field(1.0, ge=0.0, le=1.0)
    ignore_eos: bool = False

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, body: Any) -> Any:
        # OpenAI reads `"temperature": null` (what the openai SDK sends for temperature=None,
        # and what many clients send for settings left unset) as "use the default".
        if isinstance(body, dict):
            return {key: value for key, value in body.items() if value is not None}
        return body

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("n must be 1, as this server writes one choice per request")
        return n

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        strings = [stop] if isinstance(stop, str) else stop or []
        if len(strings) > MAX_STOP_STRINGS or any(not s for s in strings):
            raise ValueError(f"stop takes up to {MAX_STOP_STRINGS} non-empty strings")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        if bias:
            raise ValueError("logit_bias is not supported by this server")
        return bias

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionRequest(_SamplingParameters):
    prompt: str | list[int]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, prompt: Any) -> Any:
        # Checked before pydantic's union, whose errors would name a branch ("prompt.str:
        # Input should be a valid string") rather than what was wrong.
        if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
            if len(prompt) != 1:
                raise ValueError("send one prompt per request")
            prompt = prompt[0]  # one text, or one list of token ids
        if isinstance(prompt, str) or (
            isinstance(prompt, list) and all(type(token) is int for token in prompt)
        ):
            return prompt
        raise ValueError("the prompt must be a string or a list of token ids")

    @field_validator("echo", "suffix", "best_of", "logprobs")
    @classmethod
    def _unsupported(cls, value: Any, info: Any) -> Any:
        if value not in (None, False) and not (info.field_name == "best_of" and value == 1):
            raise ValueError(f"{info.field_name} is not supported by this server")
        return value


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_ContentPart]

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, content: Any) -> Any:
        # Checked before pydantic's union, whose error for an image part would be
        # "content.str: Input should be a valid string".
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise ValueError("content must be a string or a list of text parts")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise ValueError(
                    f"this server's model reads text only, so a content part of type {kind!r} "
                    "cannot be read; send text parts"
                )
            if not isinstance(part.get("text"), str):
                raise ValueError("a text content part needs its text as a string in 'text'")
        return content

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingParameters):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    logprobs: bool | None = None

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, response_format: dict[str, Any] | None) -> dict[str, Any] | None:
        if response_format and response_format.get("type", "text") != "text":
            raise ValueError(
                "response_format json_schema and json_object are not supported by this server; "
                "ask for the format in the prompt"
            )
        return response_format

    @field_validator("tools", "logprobs")
    @classmethod
    def _unsupported(cls, value: Any, info: Any) -> Any:
        if value:
            raise ValueError(f"{info.field_name} is not supported by this server")
        return value


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The RWKV chat transcript for `messages`, ending where the assistant speaks next."""
    turns = []
    for message in messages:
        text = _BLANK_LINES.sub("\n", message.text.strip())
        turns.append(f"{_CHAT_SPEAKERS[message.role]}: {text}")
    transcript = "\n\n".join(turns)
    if messages[-1].role == "assistant":
        return transcript  # continue the assistant's unfinished reply
    return transcript + "\n\nAssistant:"


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
    backend_or_lm: LocalBackend | Any,
    *,
    tokenizer: Any | None = None,
    model_name: str | None = None,
    max_waiting: int = DEFAULT_MAX_WAITING,
) -> FastAPI:
    """The OpenAI-compatible app for a `LocalBackend` (or a `LocalLM` and its tokenizer).

    The caller owns the backend and closes it (`await backend.aclose()`) when done.
    """
    backend = _as_backend(backend_or_lm, tokenizer, model_name)
    admission = _Admission(max_waiting)
    app = FastAPI(title="longyarn local model", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend
    app.state.admission = admission
    created = int(time.time())

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, error: OpenAIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_error(error).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Routing's own errors (an unknown path, a wrong method, a body that is not UTF-8)
        # would otherwise answer {"detail": ...}, which OpenAI clients cannot read.
        return _http_error_response(request, error).response()

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [_model_card(backend, created)]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict:
        _check_model(backend, model_id)
        return _model_card(backend, created)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(backend, body.model)
        config = _sampler_config(backend, body, body.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS)
        return await _serve(admission, backend, request, body, body.prompt, config, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        _check_model(backend, body.model)
        max_tokens = body.max_completion_tokens or body.max_tokens or CHAT_DEFAULT_MAX_TOKENS
        config = _sampler_config(backend, body, max_tokens)
        prompt = chat_prompt(body.messages)
        return await _serve(admission, backend, request, body, prompt, config, chat=True)

    return app


def _as_backend(backend_or_lm: Any, tokenizer: Any | None, model_name: str | None) -> LocalBackend:
    if isinstance(backend_or_lm, LocalBackend):
        return backend_or_lm
    from longyarn.recurrent_core.local_lm.tokenizer import HFTokenizer

    tokenizer = tokenizer or getattr(backend_or_lm, "tokenizer", None)
    if tokenizer is None:
        raise InvalidInput(
            "This model came without a tokenizer, so the server cannot read text; nothing was "
            "started, so pass tokenizer=load_tokenizer_for(checkpoint_path)."
        )
    if not hasattr(tokenizer, "decode_bytes"):  # a bare `tokenizers.Tokenizer`
        tokenizer = HFTokenizer(tokenizer)
    return LocalBackend(backend_or_lm, tokenizer, model_name=model_name or "local-rwkv7")


def _model_card(backend: LocalBackend, created: int) -> dict:
    return {
        "id": backend.info.model, "object": "model", "created": created, "owned_by": "longyarn",
        # What longyarn's own client (ServedLocalBackend) needs to lay out prompts and end
        # replies as the model does in process; other clients ignore it.
        "longyarn": {
            "chat": backend.chat,
            "prose_only": backend.info.prose_only,
            "jrt_repeats": backend.info.jrt_repeats,
            "max_prompt_tokens": backend.max_prompt_tokens,
        },
    }


def _check_model(backend: LocalBackend, model: str) -> None:
    if model != backend.info.model:
        raise OpenAIError(
            404,  # as OpenAI answers for a model it does not have
            f"The model '{model}' is not served here; this server runs '{backend.info.model}' "
            "only, so send that name (GET /v1/models lists it).",
            param="model",
            code="model_not_found",
        )


_ENDPOINTS = "GET /v1/models, POST /v1/completions and POST /v1/chat/completions"


def _http_error_response(request: Request, error: StarletteHTTPException) -> OpenAIError:
    where = f"{request.method} {request.url.path}"
    if error.status_code == 404:
        message = f"There is no {where} here; nothing was done, so use {_ENDPOINTS}."
        return OpenAIError(404, message, code="not_found")
    if error.status_code == 405:
        message = f"{where} is not answered here; nothing was done, so use {_ENDPOINTS}."
        return OpenAIError(405, message, code="method_not_allowed", headers=dict(error.headers or {}))
    if error.status_code == 400:  # the body could not be parsed (not UTF-8, say)
        return OpenAIError(
            400,
            "The request body is not a JSON object; nothing was generated, so send the "
            "parameters as JSON.",
            code="invalid_json",
        )
    return OpenAIError(error.status_code, f"{where} failed: {error.detail}.", code=None)


def _validation_error(error: RequestValidationError) -> OpenAIError:
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = location[0] if location else None
    if first.get("type") == "json_invalid" or not location:
        return OpenAIError(
            400,
            "The request body is not a JSON object; nothing was generated, so send the "
            "parameters as JSON.",
            code="invalid_json",
        )
    reason = str(first.get("msg", "")).removeprefix("Value error, ")
    where = ".".join(location) or "the request body"
    return OpenAIError(
        400,
        f"Invalid value for {where}: {reason}; nothing was generated, so correct it and retry.",
        param=param,
        code="invalid_value",
    )


async def _encode(backend: LocalBackend, prompt: str | list[int], param: str) -> list[int]:
    if isinstance(prompt, str):
        prompt_ids = await asyncio.to_thread(backend.tokenizer.encode, prompt)
    elif any(not 0 <= token < backend.lm.vocab_size for token in prompt):
        raise OpenAIError(
            400,
            f"The prompt holds token ids outside this model's vocabulary (0 to "
            f"{backend.lm.vocab_size - 1}); nothing was generated, so send text instead.",
            param=param,
            code="invalid_value",
        )
    else:
        prompt_ids = prompt
    if len(prompt_ids) > backend.max_prompt_tokens:
        # Said here rather than by the backend, whose advice (a lower context budget, a
        # higher max_prompt_tokens) is about longyarn's settings, which a client cannot change.
        raise OpenAIError(
            400,
            f"The prompt is {len(prompt_ids):,} tokens long, more than the "
            f"{backend.max_prompt_tokens:,} this server's model reads; nothing was generated, "
            "so send a shorter prompt.",
            param=param,
            code="context_length_exceeded",
        )
    try:
        return backend.check_prompt_ids(prompt_ids)
    except InvalidInput as error:
        raise OpenAIError(400, str(error), param=param, code="invalid_value") from error


def _sampler_config(backend: LocalBackend, body: _SamplingParameters, max_tokens: int) -> SamplerConfig:
    eos = backend.tokenizer.eos_id
    try:
        return SamplerConfig(
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
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
    backend: LocalBackend,
    request: Request,
    body: _SamplingParameters,
    prompt: str | list[int],
    config: SamplerConfig,
    *,
    chat: bool,
):
    """Admit the request, read its prompt, and answer it streamed or whole."""
    leave = admission.enter()
    try:
        prompt_ids = await _encode(backend, prompt, "messages" if chat else "prompt")
    except BaseException:
        leave()
        raise
    markers = (CHAT_TURN_END,) if chat else ()
    generation = backend.generate(prompt_ids, config, reply_end_markers=markers)
    reply_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    header = {"id": reply_id, "created": int(time.time()), "model": backend.info.model}
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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
) -> None:
    """Load the local model the settings name (or `checkpoint`) and serve it until Ctrl+C."""
    backend = LocalBackend.from_settings(settings, checkpoint=checkpoint)
    sock = bind_socket(host, port)
    app = create_app(backend, max_waiting=max_waiting)
    shown_host = f"[{host}]" if ":" in host else host
    print(
        f"Serving {backend.info.model} (local RWKV-7, {backend.info.extra['device']}) at "
        f"http://{shown_host}:{sock.getsockname()[1]}/v1, OpenAI-compatible; Ctrl+C stops it.",
        file=sys.stderr,
    )
    if not _is_loopback(host):
        print(
            f"Warning: {host} is reachable from other machines and this server has no "
            "authentication; use 127.0.0.1 unless the network is trusted.",
            file=sys.stderr,
        )
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        backend.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

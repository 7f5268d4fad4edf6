"""OpenAI's HTTP API as `longyarn serve` reads and answers it: request bodies and error bodies.

The request bodies validate as OpenAI does (see `longyarn.app.serve` for what is accepted);
`validation_error` and `http_error` turn a refusal into OpenAI's error body
`{"error": {"message", "type", "param", "code"}}`, which OpenAI's clients read.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from longyarn.recurrent_core.local_lm.chat_format import chat_transcript

MAX_STOP_STRINGS = 4


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


class SamplingParameters(BaseModel):
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
    min_p: float = Field(0.0, ge=0.0, lt=1.0)
    repetition_penalty: float = Field(1.0, ge=1.0, le=3.0)
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


class CompletionRequest(SamplingParameters):
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


class ChatCompletionRequest(SamplingParameters):
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
    """The RWKV chat transcript for `messages`, ending where the assistant speaks next (a
    last message from the assistant is continued)."""
    return chat_transcript([(message.role, message.text) for message in messages])


_ENDPOINTS = "GET /v1/models, POST /v1/completions and POST /v1/chat/completions"
_NOT_JSON = (
    "The request body is not a JSON object; nothing was generated, so send the parameters as JSON."
)


def http_error(request: Request, error: StarletteHTTPException) -> OpenAIError:
    """Routing's own refusal (an unknown path, a wrong method, a body that is not UTF-8), as
    OpenAI's error body rather than FastAPI's `{"detail": ...}`."""
    where = f"{request.method} {request.url.path}"
    if error.status_code == 404:
        message = f"There is no {where} here; nothing was done, so use {_ENDPOINTS}."
        return OpenAIError(404, message, code="not_found")
    if error.status_code == 405:
        message = f"{where} is not answered here; nothing was done, so use {_ENDPOINTS}."
        return OpenAIError(405, message, code="method_not_allowed", headers=dict(error.headers or {}))
    if error.status_code == 400:  # the body could not be parsed (not UTF-8, say)
        return OpenAIError(400, _NOT_JSON, code="invalid_json")
    return OpenAIError(error.status_code, f"{where} failed: {error.detail}.", code=None)


def validation_error(error: RequestValidationError) -> OpenAIError:
    """A request body that failed validation, as OpenAI's 400 naming the parameter."""
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = location[0] if location else None
    if first.get("type") == "json_invalid" or not location:
        return OpenAIError(400, _NOT_JSON, code="invalid_json")
    reason = str(first.get("msg", "")).removeprefix("Value error, ")
    where = ".".join(location) or "the request body"
    return OpenAIError(
        400,
        f"Invalid value for {where}: {reason}; nothing was generated, so correct it and retry.",
        param=param,
        code="invalid_value",
    )

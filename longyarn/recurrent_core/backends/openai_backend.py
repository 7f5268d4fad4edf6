"""A model backend for any OpenAI-compatible server: OpenAI itself, vLLM, Ollama, llama.cpp
server, LM Studio.

It streams chat completions through the `openai` package, with our own bounded retry loop
(the client's is switched off) so that retries happen only before the first piece of text
reaches the caller: a step never shows, or commits, half a paragraph twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import random
import re
import time
from typing import Any, AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import openai

from ..errors import ModelError, StreamInterrupted
from ..prompts import layout_messages
from .base import BackendInfo, Chunk, GenerationRequest, ModelBackend
from .chat_stream import chunk_fields, sse_data
from .request_slots import Flight, RequestSlots

log = logging.getLogger(__name__)

OPENAI_API_URL = "https://api.openai.com/v1"
ROLE_HEADER = "X-Longyarn-Role"
# Local servers ignore the key, but the client insists on one.
LOCAL_SERVER_PLACEHOLDER_KEY = "not-needed"
# A server that asks us to wait longer than this gets a clear error instead of a silent wait.
LONGEST_RETRY_AFTER_S = 60.0
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# Parameters a request works without; a server that refuses one by name is asked again
# without it. (response_format and max_tokens have their own fallbacks.)
OPTIONAL_PARAMETERS = (
    "stream_options", "seed", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "stop",
    "temperature",  # OpenAI's reasoning models accept only their default
)
# Of those, the ones a person sets (Settings → sampling): dropping one is said, not only logged.
USER_SETTINGS = frozenset({
    "seed", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "temperature", "stop",
})
_UNSUPPORTED_WORDS = (
    "unsupported", "not supported", "unrecognized", "unknown", "extra inputs", "extra_forbidden",
    "not permitted", "not allowed", "unexpected",
)
# A refused value ("temperature: decimal above maximum value") is the user's to fix, not a
# parameter to drop for every later request.
_OUT_OF_RANGE_WORDS = ("maximum", "minimum", "above", "below", "range", "greater than", "less than")
# Structured replies, best first: a JSON schema, any JSON object, or labelled text that the
# prompt alone asks for (None: no response_format is sent).
RESPONSE_FORMATS: tuple[str | None, ...] = ("json_schema", "json_object", None)


# Han, kana, hangul and their punctuation: scripts without spaces between words, about a
# token a character.
_IDEOGRAPHIC = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


class OpenAIBackend(ModelBackend):
    """Streams chat completions from an OpenAI-compatible server.

    `base_url` and `api_key` fall back to OPENAI_BASE_URL and OPENAI_API_KEY; with neither a
    key nor a base URL there is nothing to talk to and the constructor raises `ModelError`.
    With a base URL but no key (a local server) a placeholder key is sent.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
        jrt_repeats: int = 1,
        concurrency: int | None = None,
    ) -> None:
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if api_key is None:
            if base_url is None or _is_openai_itself(base_url):
                raise ModelError(
                    "No OpenAI API key is set; nothing was written. Set OPENAI_API_KEY, or pass "
                    "--base-url for a local server, or use --backend local."
                )
            api_key = LOCAL_SERVER_PLACEHOLDER_KEY
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

        self.info = BackendInfo(
            name="openai", model=model, supports_json_schema=True, jrt_repeats=jrt_repeats
        )
        self.base_url = (base_url or OPENAI_API_URL).rstrip("/")
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        # Kept only to scrub it from server messages we quote; never shown anywhere.
        self._api_key = api_key
        self._use_max_completion_tokens = False
        self._response_format: str | None = RESPONSE_FORMATS[0]
        self._slots = RequestSlots(concurrency)
        self._dropped_parameters: set[str] = set()  # optional parameters this server refused
        self._notices: list[str] = []  # what the user has not been told yet (take_notices)
        self._jitter = random.Random()
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key, timeout=timeout_s, max_retries=0
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.info.model!r}, base_url={self._shown_url!r})"

    @property
    def _shown_url(self) -> str:
        """The base URL as messages show it: without any user:password part."""
        return _without_credentials(self.base_url)

    # ---- generation -------------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield the reply's text as it arrives, then a usage-only chunk if the server sends one.

        Retries (bounded, with backoff) happen only before the first text is yielded; a break
        after that raises `StreamInterrupted`. Every failure is a `ModelError`.
        """
        messages = layout_messages(request.prompt, self.info.jrt_repeats)
        attempt = 0
        while True:
            attempt += 1
            response_format = self._response_format if request.json_schema is not None else None
            arguments = self._arguments(request, messages, response_format)
            yielded_text = False
            flight: Flight | None = None
            try:
                async with self._slots.slot() as flight:
                    opened = self._client.chat.completions.with_streaming_response.create(**arguments)
                    async with opened as response:
                        finished, usage = None, None
                        request_sent = response.http_response.request
                        async for data in sse_data(response.iter_lines(), request_sent):
                            if data.startswith("[DONE]"):
                                break
                            fields = chunk_fields(data, request_sent)
                            if fields.usage is not None:  # some send it every chunk
                                usage = fields.usage
                            if fields.text:
                                yielded_text = True
                                yield Chunk(text=fields.text)
                            if fields.finish_reason:
                                finished = fields.finish_reason
                    if not finished:
                        # The body ended cleanly but without a finish_reason: a proxy or server
                        # dropped the rest. Treat it as the broken stream it is.
                        raise openai.APIConnectionError(
                            message="The stream ended before the reply did.", request=request_sent
                        )
                yield Chunk(usage=usage, finish_reason=finished)
                return
            except ValueError as error:  # undecodable JSON or a chunk of the wrong shape
                if yielded_text:
                    raise self._interrupted() from error
                raise ModelError(
                    f"The server at {self._shown_url} sent a reply that is not in OpenAI's chat "
                    "format; nothing was written, so check that --base-url points at an "
                    "OpenAI-compatible endpoint."
                ) from error
            except openai.APIError as error:
                if flight is not None and self._overlap_broke(error, flight):
                    if yielded_text:  # the caller asks again (Engine retries an interrupted stream)
                        raise self._interrupted() from error
                    attempt -= 1  # the server's slot limit, not a failed attempt
                    continue
                if yielded_text:
                    raise self._interrupted() from error
                rejected = self._rejected_parameter(error, arguments)
                if rejected is not None:
                    # Some vLLM, llama.cpp and LM Studio versions refuse a parameter that others
                    # accept (stream_options, seed, penalties ...): drop it for this server.
                    self._dropped_parameters.add(rejected)
                    log.info("%s refuses %r; asking without it", self._shown_url, rejected)
                    if rejected in USER_SETTINGS:
                        self._notices.append(
                            f"The server at {self._shown_url} does not accept the {rejected} "
                            f"setting, so longyarn now asks it without one; the {rejected} in "
                            "the settings has no effect with this server."
                        )
                    attempt -= 1
                    continue
                if response_format is not None and _rejects_response_format(error, response_format):
                    self._fall_back_from(response_format)
                    attempt -= 1  # a capability probe, not a failed attempt
                    continue
                if _rejects_max_tokens(error) and not self._use_max_completion_tokens:
                    self._use_max_completion_tokens = True
                    attempt -= 1
                    continue
                if not _is_retryable(error) or attempt >= self.max_attempts:
                    raise self._model_error(error, attempt) from error
                delay = self._retry_delay(attempt, error)
                if delay is None:
                    raise self._model_error(error, attempt) from error
                log.warning(
                    "%s failed (%s); retrying in %.2fs (attempt %d of %d)",
                    self._shown_url, _describe(error), delay, attempt + 1, self.max_attempts,
                )
                await asyncio.sleep(delay)

    def _overlap_broke(self, error: openai.APIError, flight: Flight) -> bool:
        """Whether `error` is a server dropping requests that overlapped; in "auto" mode this
        server gets one request at a time from now on (said once), and the request is retried."""
        if not self._slots.auto or not flight.overlapped:
            return False
        if not isinstance(error, openai.APIConnectionError) or isinstance(error, openai.APITimeoutError):
            return False
        if self._slots.serialize():
            log.info("%s dropped overlapping requests; sending one at a time", self._shown_url)
            self._notices.append(
                f"The server at {self._shown_url} drops a request when another arrives, so "
                "longyarn now sends it one request at a time (the server_concurrency setting "
                "fixes a number instead)."
            )
        return True

    def _fall_back_from(self, refused: str) -> None:
        """Ask this server for the next, plainer reply format from now on, and say so once."""
        following = RESPONSE_FORMATS[RESPONSE_FORMATS.index(refused) + 1]
        self._response_format = following
        self.info.supports_json_schema = False
        log.info("%s refuses response_format %s; now %s", self._shown_url, refused, following)
        plainer = "plain JSON objects" if following == "json_object" else "labelled text, in the prompt alone"
        self._notices.append(
            f"The server at {self._shown_url} does not accept {refused} replies, so longyarn now "
            f"asks it for {plainer}; replies are read the same way."
        )

    def take_notices(self) -> tuple[str, ...]:
        notices, self._notices = tuple(self._notices), []
        return notices

    def _arguments(
        self, request: GenerationRequest, messages: list[dict], response_format: str | None
    ) -> dict:
        sampling = request.sampling
        arguments: dict[str, Any] = {
            "model": self.info.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
            "extra_headers": {ROLE_HEADER: request.prompt.role},
        }
        token_limit = "max_completion_tokens" if self._use_max_completion_tokens else "max_tokens"
        arguments[token_limit] = sampling.max_tokens
        if sampling.seed is not None:
            arguments["seed"] = sampling.seed
        if request.stop:
            arguments["stop"] = list(request.stop)
        # vLLM, llama.cpp, Ollama and LM Studio accept these; OpenAI rejects them (and the
        # refusal drops them for this server, said once), so each goes only when asked for.
        extensions = {
            "top_k": sampling.top_k if sampling.top_k > 0 else None,
            "min_p": sampling.min_p if sampling.min_p > 0 else None,
            "repetition_penalty": sampling.repetition_penalty if sampling.repetition_penalty != 1.0 else None,
        }
        extensions = {name: value for name, value in extensions.items() if value is not None}
        if extensions:
            arguments["extra_body"] = extensions
        if response_format == "json_schema":
            schema = request.json_schema or {}
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": _schema_name(schema),
                    "schema": schema,
                    "strict": False,
                },
            }
        elif response_format == "json_object":
            arguments["response_format"] = {"type": "json_object"}
        for name in self._dropped_parameters:
            arguments.pop(name, None)
            arguments.get("extra_body", {}).pop(name, None)
        if not arguments.get("extra_body", True):
            del arguments["extra_body"]
        return arguments

    def _rejected_parameter(self, error: openai.APIError, arguments: dict) -> str | None:
        """The optional parameter a 400/422 names as unsupported, if we sent it."""
        if not isinstance(error, (openai.BadRequestError, openai.UnprocessableEntityError)):
            return None
        sent = {
            name for name in OPTIONAL_PARAMETERS
            if name in arguments or name in arguments.get("extra_body", {})
        } - self._dropped_parameters
        text = f"{error.message} {error.body}".lower()
        if not any(word in text for word in _UNSUPPORTED_WORDS) or any(
            word in text for word in _OUT_OF_RANGE_WORDS
        ):
            return None
        param = getattr(error, "param", None)
        if isinstance(param, str) and param in sent:
            return param
        named = [name for name in sent if re.search(rf"\b{name}\b", text)]
        return named[0] if len(named) == 1 else None

    def _interrupted(self) -> StreamInterrupted:
        return StreamInterrupted(
            f"The connection to {self._shown_url} broke while the model was writing; the "
            "partial reply was discarded, so retry the step."
        )

    def _retry_delay(self, attempt: int, error: openai.APIError) -> float | None:
        """Seconds to wait before the next attempt, or None if the server asks for too long."""
        retry_after = _retry_after_s(error)
        if retry_after is not None:
            return retry_after if retry_after <= LONGEST_RETRY_AFTER_S else None
        ceiling = self.backoff_s * 2 ** (attempt - 1)
        return self._jitter.uniform(ceiling / 2, ceiling)

    # ---- errors -----------------------------------------------------------------------

    def _model_error(self, error: openai.APIError, attempts: int) -> ModelError:
        """One sentence for the person: what failed, that nothing was written, what to do."""
        url, model = self._shown_url, self.info.model
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        if isinstance(error, openai.APITimeoutError):
            return ModelError(
                f"The model server at {url} did not answer within {self.timeout_s:g} seconds"
                f"{tried}; nothing was written, so try again, or allow a longer timeout for a slow "
                "model."
            )
        if isinstance(error, openai.APIConnectionError):
            return ModelError(
                f"Could not reach the model server at {url}{tried}; nothing was written, so check "
                "that the server is running and that --base-url is right."
            )
        if not isinstance(error, openai.APIStatusError):
            return ModelError(
                f"The model server at {url} reported an error ({self._server_message(error)}); "
                "nothing was written, so retry the step."
            )
        status = error.status_code
        if status == 401:
            return ModelError(
                f"The server at {url} rejected the API key (401); nothing was written, so check "
                "OPENAI_API_KEY, or the key your server expects."
            )
        if status == 403:
            return ModelError(
                f"The server at {url} refused access to model '{model}' (403); nothing was "
                "written, so check that your key may use this model, or pick another with --model."
            )
        if status == 404:
            if _mentions(error, "model"):
                return ModelError(
                    f"The model '{model}' was not found on {url}; nothing was written, so choose a "
                    "model that the server offers with --model."
                )
            return ModelError(
                f"The server at {url} has no chat completions endpoint (404); nothing was written, "
                "so check --base-url (most servers want it to end in /v1)."
            )
        if status in (400, 413, 422) and _exceeds_context(error):
            return ModelError(
                f"The prompt is longer than model '{model}' at {url} can read "
                f"({self._server_message(error)}); nothing was written, so lower "
                "context_budget_tokens or this role's max_tokens in the settings, or use a model "
                "with a longer context."
            )
        if status == 429 and _error_code(error) == "insufficient_quota":
            return ModelError(
                f"The account behind the API key for {url} has run out of quota; nothing was "
                "written, so add credit to the account or use another backend."
            )
        if status == 429:
            wait = _retry_after_s(error)
            asked = f" and asked to wait {wait:g} seconds" if wait is not None and wait > 0 else ""
            return ModelError(
                f"The server at {url} kept rate-limiting requests{tried}{asked}; nothing was "
                "written, so wait a minute and retry the step, or lower --concurrency."
            )
        if status >= 500 or status in RETRYABLE_STATUSES:
            return ModelError(
                f"The model server at {url} kept failing (HTTP {status}){tried}; nothing was "
                "written, so try again later or use another server."
            )
        return ModelError(
            f"The server at {url} rejected the request for model '{model}' (HTTP {status}: "
            f"{self._server_message(error)}); nothing was written, so check the model's settings."
        )

    def _server_message(self, error: openai.APIError) -> str:
        """The server's own words, short and with the key scrubbed (some servers echo it)."""
        message = " ".join(str(error.message or type(error).__name__).split())
        if self._api_key:
            message = message.replace(self._api_key, "***")
        message = message.rstrip(".")
        return message if len(message) <= 200 else message[:197] + "..."

    # ---- the rest of the interface ----------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """A cheap estimate; exact tokenizers would need downloads at run time.

        English runs about four characters, or three quarters of a word, to a token. Other
        scripts cost more: about a token a character for Chinese, Japanese and Korean, and one
        per two characters for other non-ASCII letters (Cyrillic, Greek, accented Latin).
        """
        if not text:
            return 0
        # Counted in C: a prompt is fitted many times a step, for every reader at once.
        non_ascii = len(text) - len(text.encode("ascii", "ignore"))
        ideographic = len(_IDEOGRAPHIC.findall(text)) if non_ascii else 0
        other_non_ascii = non_ascii - ideographic
        ascii_characters = len(text) - ideographic - other_non_ascii
        by_characters = ascii_characters / 4 + other_non_ascii / 2 + ideographic
        return max(1, math.ceil(by_characters), math.ceil(len(text.split()) * 4 / 3))

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()


# ---- helpers ----------------------------------------------------------------------------


def _is_openai_itself(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host == "api.openai.com" or host.endswith(".openai.com")


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _schema_name(schema: dict) -> str:
    """OpenAI wants a name of letters, digits, _ and - (64 at most); the schema's title is it."""
    title = str(schema.get("title") or "reply")
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in title)[:64]
    return name or "reply"


def _error_code(error: openai.APIError) -> str | None:
    return getattr(error, "code", None)


def _mentions(error: openai.APIError, *words: str) -> bool:
    text = f"{error.message} {error.body}".lower()
    return any(word in text for word in words)


def _rejects_response_format(error: openai.APIError, sent: str) -> bool:
    """Whether the server refused the reply format we asked for, by what it says.

    The status does not tell: vLLM answers 400, some proxies 422, and llama-cpp-python's server
    500 with the validation error that names `response_format` and the refused type.
    """
    if not isinstance(error, openai.APIStatusError):
        return False
    if isinstance(error, openai.UnprocessableEntityError) and not _exceeds_context(error):
        return True
    if error.status_code == 429 or _exceeds_context(error):
        return False
    return _mentions(error, "response_format", "response format", sent)


def _exceeds_context(error: openai.APIError) -> bool:
    # OpenAI: context_length_exceeded; vLLM: "maximum context length is"; llama.cpp:
    # "exceeds the available context size".
    return _error_code(error) in ("context_length_exceeded", "exceed_context_size_error") or _mentions(
        error, "maximum context length", "context size", "context window", "context_length_exceeded"
    )


def _rejects_max_tokens(error: openai.APIError) -> bool:
    # Newer OpenAI models refuse max_tokens and name max_completion_tokens as the replacement.
    return isinstance(error, openai.BadRequestError) and _mentions(error, "max_completion_tokens")


def _is_retryable(error: openai.APIError) -> bool:
    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return True
    if isinstance(error, openai.APIStatusError):
        if error.status_code == 429 and _error_code(error) == "insufficient_quota":
            return False  # no amount of waiting refills a quota
        return error.status_code in RETRYABLE_STATUSES or error.status_code >= 500
    return True  # an error event inside the stream, before any text: worth another try


def _retry_after_s(error: openai.APIError) -> float | None:
    """The wait a 429/503 asks for, from retry-after-ms or Retry-After (seconds or HTTP date)."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _describe(error: openai.APIError) -> str:
    status = getattr(error, "status_code", None)
    return f"HTTP {status}" if status else type(error).__name__


__all__ = ["OpenAIBackend"]

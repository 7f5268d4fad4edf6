"""The local RWKV model as `longyarn serve` serves it: the same prompts, ends and sampling as
the in-process `LocalBackend`, over HTTP.

    backend = ServedLocalBackend("http://127.0.0.1:8000/v1")    # --checkpoint URL

One model process can then serve many others: every browser session of `longyarn read
--serve` (each its own process) shares one copy of the model instead of loading its own,
and a writer can use a model that runs on another machine's GPU.

A plain OpenAI client would read a local model through the chat endpoint, where a base model
never writes the chat turn's end. This backend instead lays the prompt out as `LocalBackend`
does (a completion, with JRT), streams `/v1/completions`, and ends the reply at the role's end
marker (`local_lm.chat_format`); closing the stream there stops the model within a token.
What the layout needs (chat or base model, JRT, prose only) comes from `longyarn serve`'s
model list.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import openai

from .. import prompts
from ..errors import LongyarnError, ModelError, StreamInterrupted
from ..local_lm.chat_format import ReplyBoundary, reply_ends, reply_min_chars
from ..types import Prompt, Usage
from .base import BackendInfo, Chunk, GenerationRequest, ModelBackend

# Sent when no key is given: a server started without --api-key needs none, but the openai
# client insists on one.
NO_KEY = "longyarn-serve"


def is_served_model(checkpoint: str | None) -> bool:
    """Whether a checkpoint setting names a `longyarn serve` (its URL) rather than a file."""
    return bool(checkpoint) and str(checkpoint).startswith(("http://", "https://"))


class ServedLocalBackend(ModelBackend):
    """Reads the local model `longyarn serve` runs at `base_url`."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        timeout_s: float = 600.0,
        api_key: str | None = None,
    ) -> None:
        """Asks the server what it runs; `LongyarnError` (one sentence) if it is not there or
        is not `longyarn serve`, or runs another model than `model`. `api_key` is sent as a
        Bearer token (what `longyarn serve --api-key` checks)."""
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or NO_KEY
        card = self._model_card(model, timeout_s)
        layout = card["longyarn"]
        self.chat = bool(layout.get("chat"))
        self.max_prompt_tokens = int(layout.get("max_prompt_tokens") or 0)
        self.info = BackendInfo(
            name="local",
            model=str(card["id"]),
            jrt_repeats=int(layout.get("jrt_repeats") or 1),
            prose_only=bool(layout.get("prose_only")),
            extra={"chat": self.chat, "served_at": self.base_url},
        )
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=timeout_s, max_retries=0
        )

    def _model_card(self, model: str | None, timeout_s: float) -> dict[str, Any]:
        try:
            with openai.OpenAI(
                base_url=self.base_url, api_key=self._api_key, timeout=min(timeout_s, 30),
                max_retries=2,
            ) as client:
                cards = [card.model_dump() for card in client.models.list()]
        except openai.AuthenticationError as error:
            raise LongyarnError(
                f"{self.base_url} refused the API key, so nothing was loaded; set LONGYARN_API_KEY "
                "to the key that server was started with (--api-key)."
            ) from error
        except openai.APIError as error:
            raise LongyarnError(
                f"Could not read the model list of {self.base_url} ({_reason(error)}); nothing was "
                "loaded, so check that `longyarn serve` runs there and that --base-url is right."
            ) from error
        served = [card for card in cards if isinstance(card.get("longyarn"), dict)]
        if not served:
            raise LongyarnError(
                f"The server at {self.base_url} is not `longyarn serve` (its model list has no "
                "longyarn entry); nothing was loaded, so point --base-url at one, or use "
                "--backend openai for other servers."
            )
        card = served[0]
        if model and model != card["id"]:
            raise LongyarnError(
                f"{self.base_url} serves '{card['id']}', not '{model}'; nothing was loaded, so "
                f"pass --model {card['id']} or leave --model out."
            )
        return card

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        prompt = request.prompt
        sampling = request.sampling
        boundary = ReplyBoundary(
            reply_ends(prompt.role, self.chat), min_chars=reply_min_chars(prompt.role, self.chat)
        )
        arguments: dict[str, Any] = {
            "model": self.info.model,
            "prompt": prompts.layout_completion(prompt, self.info.jrt_repeats, chat=self.chat),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
            "extra_body": {
                "top_k": sampling.top_k,
                "min_p": sampling.min_p,
                "repetition_penalty": sampling.repetition_penalty,
                "penalty_decay": sampling.penalty_decay,
            },
        }
        if sampling.seed is not None:
            arguments["seed"] = sampling.seed
        if request.stop:
            arguments["stop"] = list(request.stop)
        usage: Usage | None = None
        finish_reason: str | None = None
        yielded = ended = False
        try:
            response = await self._client.completions.create(**arguments)
            async with response:  # leaving it closes the stream: the server stops the model
                async for event in response:
                    if event.usage is not None:
                        usage = Usage(
                            prompt_tokens=event.usage.prompt_tokens,
                            completion_tokens=event.usage.completion_tokens,
                        )
                    if not event.choices:
                        continue
                    choice = event.choices[0]
                    text, ended = boundary.feed(choice.text or "")
                    if text:
                        yielded = True
                        yield Chunk(text=text)
                    if ended:
                        finish_reason = "stop"
                        break
                    finish_reason = choice.finish_reason or finish_reason
        except openai.APIError as error:
            if yielded:
                raise StreamInterrupted(
                    f"The connection to the model server at {self.base_url} broke while the "
                    "model was writing; the partial reply was discarded, so retry the step."
                ) from error
            raise self._model_error(error) from error
        if not ended and finish_reason is None:
            # The body ended with no end marker and no finish: a proxy or server dropped the rest.
            raise StreamInterrupted(
                f"The model server at {self.base_url} stopped sending before the reply ended; "
                "the partial reply was discarded, so retry the step."
            )
        if not ended:
            rest = boundary.flush()  # text held back in case it began an end marker
            if rest:
                yield Chunk(text=rest)
        yield Chunk(usage=usage, finish_reason=finish_reason)

    def prompt_tokens(self, prompt: Prompt) -> int:
        """An estimate of the tokens the served model reads for `prompt`, as laid out for it."""
        return self.count_tokens(prompts.layout_completion(prompt, self.info.jrt_repeats, chat=self.chat))

    def _model_error(self, error: openai.APIError) -> ModelError:
        if isinstance(error, openai.APIConnectionError):
            return ModelError(
                f"Could not reach the model server at {self.base_url} ({_reason(error)}); nothing "
                "was written, so check that `longyarn serve` still runs there."
            )
        reason = _reason(error)  # the server's own sentence says what to do, when it has one
        ending = "" if reason.endswith(".") else "; nothing was written, so retry the step."
        return ModelError(f"The model server at {self.base_url} refused the request: {reason}{ending}")

    async def aclose(self) -> None:
        await self._client.close()


def _reason(error: openai.APIError) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    status = getattr(error, "status_code", None)
    return f"HTTP {status}" if status else (str(error).strip() or type(error).__name__)


__all__ = ["ServedLocalBackend"]

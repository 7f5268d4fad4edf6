"""How the engine asks its model: a role's sampling on each request, whole replies, and
structured replies repaired a bounded number of times when they cannot be read."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from .backends.base import GenerationRequest, ModelBackend
from .engine_config import EngineConfig
from .errors import ModelError, StreamInterrupted
from .replies.roles import JSON_SCHEMAS, describe_problem
from .role_prompts import PromptFitter
from .types import Prompt, Sampling, Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoleReply:
    text: str | None  # None: no readable reply after the retries
    usage: Usage
    cut_off: bool = False  # the reply hit max_tokens (finish_reason "length")


class ModelCalls:
    """Requests to `backend` with the sampling and retries of the engine's current config."""

    def __init__(self, backend: ModelBackend, config: Callable[[], EngineConfig]) -> None:
        self.backend = backend
        self._config = config

    @property
    def config(self) -> EngineConfig:
        return self._config()

    def fitter(self, story_id: str | None) -> PromptFitter:
        """Builds prompts that fit the context budget, with the story's own templates if any."""
        config = self.config
        return PromptFitter(
            budget_tokens=config.context_budget_tokens,
            measure=self.backend.prompt_tokens,
            count_tokens=self.backend.count_tokens,
            context_repeats=self.backend.info.jrt_repeats,
            template_folders=config.template_folders(story_id),
            chapter_budget_tokens=config.chapter_budget_tokens,
        )

    def sampling(self, role: str) -> Sampling:
        return self.config.sampling.get(role) or self.config.sampling.get("writer") or Sampling()

    def request(
        self,
        role: str,
        prompt: Prompt,
        json_schema: dict | None = None,
        *,
        token_scale: int = 1,
        sampling: Sampling | None = None,
    ) -> GenerationRequest:
        sampling = sampling or self.sampling(role)
        if token_scale > 1:
            sampling = sampling.model_copy(
                update={"max_tokens": min(32768, sampling.max_tokens * token_scale)}
            )
        return GenerationRequest(prompt=prompt, sampling=sampling, json_schema=json_schema, stop=sampling.stop)

    async def complete(self, request: GenerationRequest) -> tuple[str, Usage, bool]:
        """The whole reply, its usage, and whether max_tokens cut it off."""
        text, usage, cut_off = "", Usage(), False
        for attempt in range(1, self.config.step_attempts + 1):
            text, usage, cut_off = "", Usage(), False
            try:
                async for chunk in self.backend.stream(request):
                    text += chunk.text
                    if chunk.usage:
                        usage += chunk.usage
                    if chunk.finish_reason:
                        cut_off = chunk.finish_reason == "length"
                return text, usage, cut_off
            except ModelError as error:
                if not isinstance(error, StreamInterrupted) or attempt == self.config.step_attempts:
                    raise
        return text, usage, cut_off

    async def ask_structured(
        self, role: str, prompt: Prompt, fitter: PromptFitter, *, give_up_quietly: bool = False
    ) -> RoleReply:
        """Ask a role for structured output; repair unreadable replies a bounded number of times.

        With `give_up_quietly`, a model that fails for good yields no reply instead of an error.
        """
        schema = JSON_SCHEMAS.get(role)
        request = self.request(role, prompt, schema)
        usage = Usage()
        token_scale = 1
        cut_text: str | None = None  # the latest reply cut off by max_tokens: its complete part is usable
        text, cut_off = "", False
        for _ in range(self.config.parse_retries + 1):
            try:
                text, call_usage, cut_off = await self.complete(request)
            except ModelError as error:
                if cut_text is not None:
                    # Asking again failed (e.g. the larger max_tokens overran the context): keep
                    # what the cut reply gave; the resolvers say it was cut.
                    log.warning("asking the %s again failed; using its cut reply (%s)", role, error)
                    return RoleReply(cut_text, usage, True)
                if not give_up_quietly:
                    raise
                log.warning("the %s call failed; using its fallback (%s)", role, error)
                return RoleReply(None, usage)
            usage += call_usage
            problem = describe_problem(role, text, cut_off=cut_off)
            if problem is None:
                return RoleReply(text, usage, cut_off)
            if cut_off and text.strip():
                cut_text = text
            log.info("unreadable %s reply (%s); asking again", role, problem)
            if cut_off:
                token_scale *= 2  # the same limit would cut the answer again
            request = self.request(role, fitter.repair(prompt, text, problem), schema, token_scale=token_scale)
        if cut_text is not None and not cut_off:
            # A cut reply beats a later one that could not be read at all ("I'm sorry ...").
            return RoleReply(cut_text, usage, True)
        # The last reply may still hold usable parts; the resolvers decide and say so.
        return RoleReply(text if text.strip() else None, usage, cut_off)

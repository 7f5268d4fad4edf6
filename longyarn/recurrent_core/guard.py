"""The writer's paragraph, written again when it degenerates.

Each attempt is judged (`replies.degeneration`: copied its context, repeated itself, leaked the
prompt's markup, came back empty). A degenerate one is asked for again with gentler sampling,
at most `RETRIES` times: stronger presence and frequency penalties (a server that takes them
applies them; a local model's own sampler does), and the next seed where one is set. If every
attempt degenerates, `EngineConfig.degeneration` says what happens: "keep" keeps the best
attempt and flags it in the step's fallbacks, "stop" stops the step with a clear sentence
(nothing is stored). Every rejected attempt is told in the step's fallbacks, so batch records it
and `longyarn report` counts it; an empty paragraph can never be kept.

    guard = ParagraphGuard(prompt, policy="keep")
    while not guard.settled:
        ... stream a reply with guard.sampling(writer_sampling) ...
        guard.judge(*finished_paragraph(raw, instruction, finish_reason))
    paragraph, fallbacks = guard.outcome()
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import ModelError
from .prompts import QUOTE_CLOSE, QUOTE_OPEN
from .replies import fallbacks as fallback_sentences
from .replies.degeneration import Degeneration, find_degeneration
from .types import Prompt, Sampling

DegenerationPolicy = Literal["keep", "stop"]
RETRIES = 2
PENALTY_STEP = 0.5  # added to the presence and frequency penalties on each retry
_QUOTED = re.compile(re.escape(QUOTE_OPEN) + ".*?" + re.escape(QUOTE_CLOSE), re.DOTALL)


def gentler_sampling(sampling: Sampling, retry: int) -> Sampling:
    """The writer's sampling for retry number `retry` (1, 2, ...): penalties on repeated tokens
    raised by `PENALTY_STEP` each time (within the 2.0 servers allow), and the next seed."""
    update = {
        "presence_penalty": min(2.0, max(0.0, sampling.presence_penalty) + PENALTY_STEP * retry),
        "frequency_penalty": min(2.0, max(0.0, sampling.frequency_penalty) + PENALTY_STEP * retry),
    }
    if sampling.seed is not None:
        update["seed"] = sampling.seed + retry
    return sampling.model_copy(update=update)


@dataclass(frozen=True)
class _Attempt:
    paragraph: str
    fallbacks: tuple[str, ...]  # e.g. cut back to its last full sentence
    problem: Degeneration | None


class ParagraphGuard:
    """Judges the writer's attempts at one paragraph and says when to ask again."""

    def __init__(self, prompt: Prompt, policy: DegenerationPolicy = "keep", retries: int = RETRIES) -> None:
        self.policy, self.retries = policy, retries
        # What a copy could come from: the context, and our own words around it; the writer's
        # instruction is left out, as following it closely is no copy.
        self._prompt_texts = [(section.name, section.text) for section in prompt.context]
        self._prompt_texts.append(("rules", "\n".join((prompt.system, _QUOTED.sub(" ", prompt.task), prompt.output_format))))
        self._section_names = [section.name for section in prompt.context]
        self.attempts: list[_Attempt] = []
        self.settled = False

    def sampling(self, base: Sampling) -> Sampling:
        """The sampling for the next attempt: `base` first, then gentler."""
        return gentler_sampling(base, len(self.attempts)) if self.attempts else base

    def judge(self, paragraph: str, fallbacks: tuple[str, ...] = ()) -> Degeneration | None:
        """Judge an attempt (the paragraph as it would be kept, and its fallbacks so far);
        `settled` turns true once it is sound or no retry is left."""
        problem = find_degeneration(
            paragraph, prompt_texts=self._prompt_texts, quote_marks=(QUOTE_OPEN, QUOTE_CLOSE),
            section_names=self._section_names,
        )
        self.attempts.append(_Attempt(paragraph, fallbacks, problem))
        self.settled = problem is None or len(self.attempts) > self.retries
        return problem

    @property
    def kept(self) -> _Attempt:
        """The attempt the step keeps: the sound one, else the least degenerate (the later of equals)."""
        return min(reversed(self.attempts), key=lambda a: a.problem.severity if a.problem else -1.0)

    @property
    def kept_an_earlier_attempt(self) -> bool:
        """Whether the paragraph kept is not the one streamed last (front ends show it again)."""
        return self.kept is not self.attempts[-1]

    def outcome(self) -> tuple[str, tuple[str, ...]]:
        """The paragraph to keep and its fallbacks, once `settled`.

        Raises `ModelError` (nothing is stored) when every attempt came back empty, or every
        attempt degenerated and the policy is "stop".
        """
        problems = [a.problem.describe() for a in self.attempts if a.problem is not None]
        kept = self.kept
        if kept.problem is None:
            told = (fallback_sentences.paragraph_written_again(problems),) if problems else ()
            return kept.paragraph, kept.fallbacks + told
        if kept.problem.kind == "empty":
            raise ModelError(fallback_sentences.empty_paragraph(len(self.attempts)))
        if self.policy == "stop":
            raise ModelError(fallback_sentences.degenerate_paragraph_stopped(problems))
        flag = fallback_sentences.degenerate_paragraph_kept(problems, self.attempts.index(kept) + 1)
        return kept.paragraph, kept.fallbacks + (flag,)

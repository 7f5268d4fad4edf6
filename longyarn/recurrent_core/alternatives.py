"""Several versions of the next paragraph at once ("swipes"): written from one prompt, browsed
side by side, one picked; the others are kept as versions beside it.

`draft_alternatives` writes them: the backend's `stream_many` asks a server for them
concurrently (within its concurrency limit) and has the local model read the prompt once and
sample every version in one batch. Nothing is stored until `keep_alternatives`, which remembers
and plans after each version (as a step does) and stores them all as siblings, the head on
the chosen one. A version the model left empty is dropped, and the drafts say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from .engine import Engine, Remembered, StepPlan, finished_paragraph
from .errors import InvalidInput, ModelError
from .replies import fallbacks as fallback_sentences
from .replies.clean import streamed_prose
from .types import ParagraphDelta, Step, Usage

MOST_ALTERNATIVES = 6


@dataclass(frozen=True)
class AlternativeDelta:
    """A piece of version `index` as it is written; `snapshot` is the whole of it so far."""

    index: int
    delta: ParagraphDelta


@dataclass(frozen=True)
class Drafts:
    """Versions of the next paragraph, written and not stored yet."""

    plan: StepPlan
    paragraphs: tuple[str, ...]
    fallbacks: tuple[tuple[str, ...], ...]  # per version, e.g. "cut back to its last sentence"
    usage: Usage
    dropped: int = 0  # versions the model left empty


async def draft_alternatives(
    engine: Engine,
    story_id: str,
    instruction: str | None,
    count: int,
    *,
    parent_step_id: str | None | Literal["head"] = "head",
    on_delta: Callable[[AlternativeDelta], None] | None = None,
) -> Drafts:
    """Write `count` versions of the next paragraph from one prompt (nothing is stored)."""
    if not 2 <= count <= MOST_ALTERNATIVES:
        raise InvalidInput(f"Ask for 2 to {MOST_ALTERNATIVES} versions at once, not {count}; nothing was written.")
    plan = await engine.plan_step(story_id, instruction, parent_step_id)
    request = engine.calls.request("writer", plan.prompt)
    raw = [""] * count
    shown = [""] * count
    finish: list[str | None] = [None] * count
    usage = Usage()
    async for index, chunk in engine.backend.stream_many(request, count):
        if chunk.usage:
            usage += chunk.usage
        if chunk.finish_reason:
            finish[index] = chunk.finish_reason
        if not chunk.text:
            continue
        raw[index] += chunk.text
        visible = streamed_prose(raw[index])
        if on_delta is not None and len(visible) > len(shown[index]) and visible.startswith(shown[index]):
            on_delta(AlternativeDelta(index, ParagraphDelta(visible[len(shown[index]) :], visible)))
        shown[index] = visible
    paragraphs, fallbacks = [], []
    for text, reason in zip(raw, finish):
        paragraph, taken = finished_paragraph(text, plan.instruction, reason)
        if paragraph:
            paragraphs.append(paragraph)
            fallbacks.append(taken)
    if not paragraphs:
        raise ModelError(fallback_sentences.EMPTY_PARAGRAPH_TWICE)
    return Drafts(plan, tuple(paragraphs), tuple(fallbacks), usage, dropped=count - len(paragraphs))


@dataclass(frozen=True)
class KeptVersions:
    """The versions as stored: every step in order, and what was remembered after each (its
    bible updates and contradictions among it)."""

    chosen: Step
    steps: list[Step]
    fallbacks: tuple[str, ...]  # the chosen version's
    remembered: list[Remembered]


async def keep_alternatives(engine: Engine, drafts: Drafts, chosen: int) -> KeptVersions:
    """Store every version as a step after the same parent, the head on `chosen`. Each is
    remembered and planned after as a step is; the others are stored first, so the story
    moves only once all landed."""
    if not 0 <= chosen < len(drafts.paragraphs):
        raise InvalidInput("That version does not exist; nothing was stored; pick one of those shown.")
    remembered = await asyncio.gather(*(engine.remember(drafts.plan, p) for p in drafts.paragraphs))
    steps: dict[int, Step] = {}
    chosen_fallbacks: tuple[str, ...] = ()
    for index in [i for i in range(len(drafts.paragraphs)) if i != chosen] + [chosen]:
        step, fallbacks = await engine.commit(
            drafts.plan, drafts.paragraphs[index], remembered[index], drafts.fallbacks[index],
            move_head=index == chosen,
        )
        steps[index] = step
        if index == chosen:
            chosen_fallbacks = fallbacks
    return KeptVersions(steps[chosen], [steps[i] for i in range(len(drafts.paragraphs))], chosen_fallbacks,
                        list(remembered))


async def stream_alternatives(
    engine: Engine, story_id: str, instruction: str | None, count: int
) -> AsyncIterator[AlternativeDelta | Drafts]:
    """`draft_alternatives` as a stream: the versions' pieces as they come, then the drafts."""
    queue: asyncio.Queue[AlternativeDelta | Drafts | BaseException] = asyncio.Queue()

    async def draft() -> None:
        try:
            await queue.put(await draft_alternatives(engine, story_id, instruction, count, on_delta=queue.put_nowait))
        except BaseException as error:
            await queue.put(error)

    task = asyncio.ensure_future(draft())
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Drafts):
                return
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

"""Co-writing inside the text: the model works on a passage the writer chose, and long notes are
summarised to fit beside the story.

- `propose_change`: rewrite, expand, describe or shorten a passage of a paragraph, or write on
  from a point in it, with the writer's optional wish. It returns the paragraph as it would
  read; the front end shows it as a change to accept or reject, and an accepted one is stored
  as a paragraph edit (`Engine.edit_paragraph`), so long-term memory follows it.
- `summarise`: a premise or outline too long to sit beside the story in every prompt, in about
  `words` words. Text longer than one request can hold is summarised in parts first, then the
  parts together, so every request fits the context budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .engine import Engine
from .errors import InvalidInput, ModelError
from .replies.writer import clean_paragraph
from .types import Sampling, Step, Usage

PassageTask = Literal["rewrite", "expand", "describe", "shorten", "continue"]
PASSAGE_TASKS: tuple[PassageTask, ...] = ("rewrite", "expand", "describe", "shorten", "continue")
MAX_PASSAGE_CHARS = 6000
MAX_WISH_CHARS = 500
SUMMARY_WORDS = 250
# A summary's parts: never more rounds than this, whatever the length (each round shrinks the
# text to a fraction of what it was).
MAX_SUMMARY_ROUNDS = 4
CLOSING_PUNCTUATION = frozenset(",.;:!?)]}…’”—")


@dataclass(frozen=True)
class PassageChange:
    """What the model proposes for a paragraph: the paragraph as it would read, and the span of
    it that is new (`start` to `end` in `proposed`)."""

    step_id: str
    original: str
    proposed: str
    start: int
    end: int
    usage: Usage

    @property
    def new_text(self) -> str:
        return self.proposed[self.start : self.end]


async def propose_change(
    engine: Engine, step: Step, text: str, start: int, end: int, task: PassageTask, wish: str = ""
) -> PassageChange:
    """The model's `task` on `text[start:end]`, where `text` is `step`'s paragraph as the writer
    is editing it: "rewrite", "expand", "describe" or "shorten" the selection, or "continue"
    at `end` (the cursor), leading into the text after it. Nothing is stored."""
    if task not in PASSAGE_TASKS:
        raise InvalidInput(f"'{task}' is not something the model can do to a passage; use one of {', '.join(PASSAGE_TASKS)}.")
    if not 0 <= start <= end <= len(text):
        raise InvalidInput("That selection is not inside the paragraph; nothing was changed; select the passage again.")
    # Continuing, the passage is what follows the cursor: the new words must lead into it.
    passage = text[end:] if task == "continue" else text[start:end]
    if task != "continue" and not passage.strip():
        raise InvalidInput("Select a passage first: the model needs some words to work on; nothing was changed.")
    if len(passage) > MAX_PASSAGE_CHARS or len(wish) > MAX_WISH_CHARS:
        raise InvalidInput(
            f"The passage is limited to {MAX_PASSAGE_CHARS:,} characters and the wish to {MAX_WISH_CHARS}; "
            "nothing was changed; select less, or say it more briefly."
        )
    story = await engine.story(step.story_id)
    previous = await engine.previous_step(step)
    before = "\n\n".join(part for part in (previous.paragraph if previous else "", text[:start]) if part.strip())
    fitter = engine.fitter(step.story_id)
    prompt = fitter.passage(
        story, previous.short_term_memory if previous else "", before,
        task=task, passage=passage, instruction=wish.strip(),
    )
    sampling = engine.calls.sampling("writer")
    ceiling = max(120, engine.backend.count_tokens(passage) * (3 if task in ("expand", "describe") else 2))
    request = engine.calls.request("passage", prompt, sampling=sampling.model_copy(
        update={"max_tokens": min(sampling.max_tokens, ceiling + 60)}
    ))
    reply, usage, _cut = await engine.calls.complete(request)
    new = clean_paragraph(reply)
    if not new:
        raise ModelError("The model wrote nothing for the passage; the paragraph is as it was; try again.")
    # Written on from a word, the new text needs a space, unless it goes on with punctuation
    # (", and the light went through it": a base model continues mid-sentence).
    joiner_before = " " if (
        task == "continue" and start and not text[start - 1].isspace() and new[0] not in CLOSING_PUNCTUATION
    ) else ""
    joiner_after = " " if end < len(text) and not text[end].isspace() and task == "continue" else ""
    inserted = joiner_before + new + joiner_after
    proposed = text[:start] + inserted + text[end:]
    return PassageChange(step.id, text, proposed, start + len(joiner_before), start + len(joiner_before) + len(new), usage)


async def summarise(engine: Engine, story_id: str | None, what: str, text: str, words: int = SUMMARY_WORDS) -> str:
    """`text` (the story's premise or outline) in about `words` words; every request fits the budget."""
    text = text.strip()
    if not text:
        raise InvalidInput(f"The {what} is empty; there is nothing to summarise.")
    fitter = engine.fitter(story_id)
    for _round in range(MAX_SUMMARY_ROUNDS):
        whole = fitter.summary(what, text, words)
        room = len(whole.context[0].text) if whole.context[0].trimmed_chars else len(text)
        if room >= len(text):
            return await _summary(engine, whole, words)
        # Too long for one request: summarise each part that fits, then the parts together.
        part_words = max(60, words // 2)
        parts = _parts(text, max(500, int(room * 0.9)))
        summaries = [await _summary(engine, fitter.summary(f"{what} (part {n} of {len(parts)})", part, part_words), part_words)
                     for n, part in enumerate(parts, 1)]
        text = "\n\n".join(summaries)
    return await _summary(engine, fitter.summary(what, text, words), words)


async def _summary(engine: Engine, prompt, words: int) -> str:  # noqa: ANN001 - a Prompt
    sampling = Sampling(temperature=0.3, max_tokens=min(4000, words * 3 + 100))
    reply, _usage, _cut = await engine.calls.complete(engine.calls.request("summary", prompt, sampling=sampling))
    summary = clean_paragraph(reply)
    if not summary:
        raise ModelError("The model wrote no summary; nothing was changed; try again, or shorten the text yourself.")
    return summary


def _parts(text: str, size: int) -> list[str]:
    """`text` in pieces of at most about `size` characters, cut between paragraphs or words."""
    parts = []
    while len(text) > size:
        cut = text.rfind("\n", 0, size)
        if cut < size // 2:
            cut = text.rfind(" ", 0, size)
        if cut < size // 2:
            cut = size
        parts.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        parts.append(text)
    return parts


"""The figures of a long-form quality report, computed from a stored story.

- Length: words per paragraph and per chapter against the length the writer prompt asks for,
  scored with LongWriter's length score S_l (Bai et al., 2024).
- Repetition: distinct-2, distinct-3 and the rate of repeated 4-grams in windows of 2,000 words;
  a repeated-4-gram rate that rises through the story is what collapse looks like.
- Fallbacks: which parts of each step were fallbacks (`replies.fallbacks.parts_of`), and how many
  paragraphs the degeneration guard caught, by kind.
- Long-term memory: for each planted fact, whether recall brought back the paragraph that states
  it when a later step's instruction mentions it (recall@k, from the context stored with each step).

Planted facts live in the story's settings as `planted_facts`: a list of
`{"text": "...", "keywords": ["Ines", "brass key"], "stated_at": STEP_ID}` (`benchmarks/longform.py`
writes them); a later instruction mentions a fact when it holds all of its keywords, and the
stating paragraph is `stated_at`, else the first whose text holds the fact's.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from longyarn.recurrent_core import prompts
from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.replies.opening import title_from_premise
from longyarn.recurrent_core.replies.degeneration import events_in
from longyarn.recurrent_core.replies.fallbacks import parts_of
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Contradiction, Step, StepContext, Story

WINDOW_WORDS = 2000
CHAPTER_PARAGRAPHS = 10  # until stories have chapters, every ten paragraphs count as one
DEFAULT_REQUESTED_WORDS = (120, 220)
# The repeated-4-gram rate counts as rising when its fitted line climbs this much over the story.
RISE_THRESHOLD = 0.05
PARTS = ("title", "outline", "paragraph", "degeneration", "memory", "instructions", "bible", "notice")
_WORD = re.compile(r"[\w']+")
_REQUESTED = re.compile(r"about (\d+) to (\d+) words")


def length_score(actual: int, requested: tuple[int, int]) -> float:
    """LongWriter's S_l (0-100) of `actual` words against a requested range (low, high).

    Within the range it is 100; above it, 100 * (1 - (actual / high - 1) / 3); below it,
    100 * (1 - (low / actual - 1) / 2); never below 0. LongWriter scores against one number;
    the range's nearer end plays that part here.
    """
    low, high = requested
    if actual <= 0:
        return 0.0
    if actual > high:
        return max(0.0, 100 * (1 - (actual / high - 1) / 3))
    if actual < low:
        return max(0.0, 100 * (1 - (low / actual - 1) / 2))
    return 100.0


def requested_paragraph_words() -> tuple[int, int]:
    """The paragraph length the shipped writer prompt asks for ("about 120 to 220 words")."""
    try:
        match = _REQUESTED.search(prompts.load_template("writer").output)
    except prompts.PromptTemplateError:
        match = None
    return (int(match.group(1)), int(match.group(2))) if match else DEFAULT_REQUESTED_WORDS


def words_of(text: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text)]


@dataclass(frozen=True)
class Chapter:
    first: int  # paragraph numbers, from 1
    last: int
    words: int
    requested: tuple[int, int]
    score: float


@dataclass(frozen=True)
class RepetitionWindow:
    first_paragraph: int
    last_paragraph: int
    words: int
    distinct_2: float
    distinct_3: float
    repeated_4: float  # share of the window's 4-grams that repeat one earlier in the window


@dataclass(frozen=True)
class Trend:
    rising: bool | None  # None: too few windows to tell
    rise: float  # the fitted line's climb from the first window to the last
    verdict: str


@dataclass(frozen=True)
class FactRecall:
    text: str
    stated_at: int | None  # paragraph number, None if no paragraph states it
    asked_at: tuple[int, ...]  # paragraphs whose instruction mentions it (2 or more later)
    recalled_at: tuple[int, ...]  # of those, where recall brought the stating paragraph back


@dataclass
class StoryFigures:
    story: Story
    steps: list[Step]
    requested_words: tuple[int, int]
    words: list[int]
    scores: list[float]
    chapters: list[Chapter]
    windows: list[RepetitionWindow]
    trend: Trend
    step_parts: list[tuple[str, ...]]  # per paragraph: the parts that were fallbacks
    part_counts: Counter
    guard_events: Counter  # kind -> attempts the guard rejected
    story_fallbacks: list[str]  # the title and outline, when they came from the premise
    facts: list[FactRecall] = field(default_factory=list)
    recall_k: int = 0
    # The continuity checks: (paragraph number, what was found), and how many paragraphs were checked.
    contradictions: list[tuple[int, Contradiction]] = field(default_factory=list)
    checked_paragraphs: int = 0

    @property
    def mean_score(self) -> float:
        return sum(self.scores) / len(self.scores)

    @property
    def caught_paragraphs(self) -> int:
        """Paragraphs with at least one attempt the guard rejected."""
        return sum("degeneration" in parts for parts in self.step_parts)

    @property
    def recall_at_k(self) -> float | None:
        asked = sum(len(fact.asked_at) for fact in self.facts)
        return sum(len(fact.recalled_at) for fact in self.facts) / asked if asked else None


def story_figures(store: StoryStore, story_id: str) -> StoryFigures:
    """Every figure of the report for the story's current branch.

    Raises `StoryNotFound` for an unknown id and `InvalidInput` for a story with no paragraphs.
    """
    story = store.get_story(story_id)
    steps = [step for step in store.branch(story_id) if step.paragraph.strip()]
    if not steps:
        raise InvalidInput(
            f"Story {story_id} has no paragraphs yet, so there is nothing to report; write some "
            f"(longyarn write, or longyarn batch --resume {story_id} --paragraphs N) and run it again."
        )
    requested = requested_paragraph_words()
    words = [len(words_of(step.paragraph)) for step in steps]
    step_parts = [tuple(dict.fromkeys(p for f in step.fallbacks for p in parts_of(f))) for step in steps]
    guard_events = Counter(kind for step in steps for f in step.fallbacks for kind in events_in(f))
    windows = repetition_windows([step.paragraph for step in steps])
    contexts = [store.step_context(step.id) for step in steps]
    return StoryFigures(
        story=story,
        steps=steps,
        requested_words=requested,
        words=words,
        scores=[length_score(count, requested) for count in words],
        chapters=chapters(words, requested),
        windows=windows,
        trend=repetition_trend(windows),
        step_parts=step_parts,
        part_counts=Counter(part for parts in step_parts for part in parts),
        guard_events=guard_events,
        story_fallbacks=_story_fallbacks(story),
        facts=fact_recall(story, steps, contexts),
        recall_k=max((len(context.recalled) for context in contexts if context), default=0),
        contradictions=[
            (number, found) for number, context in enumerate(contexts, 1)
            if context and context.contradictions for found in context.contradictions
        ],
        checked_paragraphs=sum(1 for context in contexts if context and context.contradictions is not None),
    )


def chapters(words: list[int], requested: tuple[int, int]) -> list[Chapter]:
    """The story in blocks of `CHAPTER_PARAGRAPHS` paragraphs, each scored against its paragraphs' request."""
    found = []
    for start in range(0, len(words), CHAPTER_PARAGRAPHS):
        block = words[start : start + CHAPTER_PARAGRAPHS]
        asked = (requested[0] * len(block), requested[1] * len(block))
        found.append(Chapter(start + 1, start + len(block), sum(block), asked, length_score(sum(block), asked)))
    return found


def repetition_windows(paragraphs: list[str], window_words: int = WINDOW_WORDS) -> list[RepetitionWindow]:
    """Distinct-n and repeated 4-grams in consecutive windows of about `window_words` words.

    A window ends at the paragraph that brings it to `window_words`; a last window shorter
    than half that joins the one before, so no figure rests on a few words.
    """
    spans: list[tuple[int, int]] = []  # paragraph index ranges [first, last]
    start, count = 0, 0
    for index, paragraph in enumerate(paragraphs):
        count += len(words_of(paragraph))
        if count >= window_words:
            spans.append((start, index))
            start, count = index + 1, 0
    if start < len(paragraphs):
        if spans and count < window_words // 2:
            spans[-1] = (spans[-1][0], len(paragraphs) - 1)
        else:
            spans.append((start, len(paragraphs) - 1))
    windows = []
    for first, last in spans:
        words = [w for paragraph in paragraphs[first : last + 1] for w in words_of(paragraph)]
        windows.append(RepetitionWindow(
            first + 1, last + 1, len(words), _distinct(words, 2), _distinct(words, 3), 1 - _distinct(words, 4),
        ))
    return windows


def _distinct(words: list[str], n: int) -> float:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def repetition_trend(windows: list[RepetitionWindow]) -> Trend:
    """Whether the repeated-4-gram rate rises through the story (a least-squares line's climb)."""
    if len(windows) < 3:
        return Trend(None, 0.0, f"Too short to tell a trend: {len(windows)} window{'s' if len(windows) != 1 else ''} "
                                f"of {WINDOW_WORDS:,} words, where three or more are needed.")
    ys = [window.repeated_4 for window in windows]
    n = len(ys)
    mean_x, mean_y = (n - 1) / 2, sum(ys) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(ys)) / sum((x - mean_x) ** 2 for x in range(n))
    rise = slope * (n - 1)
    if rise >= RISE_THRESHOLD:
        return Trend(True, rise, f"Rising: repeated 4-grams climb {100 * rise:.1f} points from the first window "
                                 "to the last, which is what collapse looks like.")
    return Trend(False, rise, f"Not rising: repeated 4-grams move {100 * rise:+.1f} points from the first window "
                              f"to the last (rising means +{100 * RISE_THRESHOLD:.0f} or more).")


def _story_fallbacks(story: Story) -> list[str]:
    found = []
    if story.title == title_from_premise(story.premise):
        found.append("The title is the premise's opening words (the model's title was not used).")
    if story.outline.strip() == story.premise.strip():
        found.append("The outline is the premise (the model wrote none).")
    return found


def fact_recall(story: Story, steps: list[Step], contexts: list[StepContext | None]) -> list[FactRecall]:
    """Recall of each planted fact at the later steps whose instruction mentions it
    (`contexts`: what each step's writer was given, as stored with it)."""
    planted = story.settings.get("planted_facts") or []
    position = {step.id: index for index, step in enumerate(steps)}
    found = []
    for fact in planted:
        text = str(fact.get("text", ""))
        keywords = [str(k).lower() for k in fact.get("keywords", [])]
        stated = position.get(fact.get("stated_at")) if fact.get("stated_at") else None
        if stated is None:
            stated = next((i for i, step in enumerate(steps) if text and text.lower() in step.paragraph.lower()), None)
        asked, recalled = [], []
        if stated is not None and keywords:
            for index in range(stated + 2, len(steps)):  # the previous paragraph is in the prompt anyway
                instruction = steps[index].instruction.lower()
                if not all(keyword in instruction for keyword in keywords):
                    continue
                asked.append(index + 1)
                context = contexts[index]
                if context and any(memory.step_id == steps[stated].id for memory in context.recalled):
                    recalled.append(index + 1)
        found.append(FactRecall(text, None if stated is None else stated + 1, tuple(asked), tuple(recalled)))
    return found

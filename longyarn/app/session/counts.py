"""Word counts and goals, as the writers' status line shows them: the story's words against its
goal, the words written today, and this session's against the session's goal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from longyarn.recurrent_core.types import Step, Story

STORY_GOAL = "word_goal"  # the story setting that holds its word goal


def words(text: str) -> int:
    return len(text.split())


def story_goal(story: Story | None) -> int:
    try:
        return max(0, int((story.settings if story else {}).get(STORY_GOAL) or 0))
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class WordCounts:
    story: int  # words on the current branch
    today: int  # of those, in paragraphs written today (the writer's local day)
    session: int  # in paragraphs written since the story was opened, still on the branch
    story_goal: int = 0  # 0: none
    session_goal: int = 0

    def line(self) -> str:
        """The status line's part, e.g. "2,340 words (5% of 50,000) · today 820 · session 310/1,000"."""
        story = f"{self.story:,} words"
        if self.story_goal:
            story += f" ({min(999, self.story * 100 // self.story_goal)}% of {self.story_goal:,})"
        session = f"session {self.session:,}"
        if self.session_goal:
            session += f"/{self.session_goal:,}"
            if self.session >= self.session_goal:
                session += " ✓"
        return f"{story} · today {self.today:,} · {session}"


def count_words(
    branch: Iterable[Step], written_here: set[str], now: datetime, *, story_goal: int = 0, session_goal: int = 0
) -> WordCounts:
    """The counts of a branch; `written_here` are the ids of steps written this session."""
    today = now.astimezone().date()
    total = today_words = session_words = 0
    for step in branch:
        count = words(step.paragraph)
        total += count
        created = step.created_at if step.created_at.tzinfo else step.created_at.replace(tzinfo=timezone.utc)
        if created.astimezone().date() == today:
            today_words += count
        if step.id in written_here:
            session_words += count
    return WordCounts(total, today_words, session_words, story_goal, session_goal)

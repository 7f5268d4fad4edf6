"""`longyarn batch` on a terminal: a live progress display per novel (rich), instead of a line
per paragraph. Piped or redirected, or with --quiet, batch prints its plain lines as before."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from longyarn.recurrent_core.replies.fallbacks import fallbacks_to_tell

from .batch import Reporter


@dataclass
class NovelCounts:
    """One novel's figures beside its bar."""

    task: TaskID
    words: int = 0
    fallbacks: int = 0
    started: float = field(default_factory=time.monotonic)
    written_here: int = 0  # paragraphs written in this run (a resumed novel had some already)


class _Figures(ProgressColumn):
    """Paragraphs done of all, words, paragraphs per minute and fallbacks so far."""

    def __init__(self, reporter: LiveReporter) -> None:
        super().__init__()
        self.reporter = reporter

    def render(self, task: Task) -> Text:
        counts = self.reporter.novels.get(str(task.fields.get("story_id")))
        if counts is None:
            return Text("")
        minutes = max(1e-9, (time.monotonic() - counts.started) / 60)
        rate = counts.written_here / minutes if counts.written_here else 0.0
        return Text(
            f"{int(task.completed)}/{int(task.total or 0)} ¶ · {counts.words:,} words · "
            f"{rate:.1f} ¶/min · {counts.fallbacks} fallbacks"
        )


class LiveReporter(Reporter):
    """Batch's reporter on a terminal: a live display with a bar per novel on stdout (the
    terminal the writer watches); the `story ID` lines, messages and errors print above it, and
    fallbacks are counted beside each bar and said once."""

    def __init__(self, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> None:
        super().__init__(stdout, stderr)
        self.novels: dict[str, NovelCounts] = {}
        self.console = Console(file=stdout)
        self.display = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            _Figures(self),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.display.start()

    def story(self, story_id: str) -> None:
        self._say(f"story {story_id}")

    def progress(self, message: str) -> None:
        self._say(message)

    def error(self, message: str) -> None:
        if self.display.live.is_started:
            self._say(f"error: {message}", style="red")
        else:
            super().error(message)

    def _say(self, line: str, style: str | None = None) -> None:
        """A line above the bars (a line printed beside a live display would tear it)."""
        self.console.print(line, markup=False, highlight=False, style=style, soft_wrap=True)

    def fallback(self, where: str, sentence: str, story_id: str | None = None) -> None:
        counts = self.novels.get(story_id or "")
        if counts is not None:
            counts.fallbacks += 1
        for fresh in fallbacks_to_tell([sentence], self._model_fallbacks_told):
            self.progress(f"{where} fallback: {fresh}")

    def novel_started(self, story_id: str, title: str, done: int, total: int, words: int) -> None:
        short = title if len(title) <= 40 else title[:39] + "…"
        task = self.display.add_task(f"[{story_id}] {short}", total=total, completed=done, story_id=story_id)
        self.novels[story_id] = NovelCounts(task, words)

    def paragraph_saved(self, story_id: str, done: int, total: int, words: int) -> None:
        counts = self.novels[story_id]
        counts.words += words
        counts.written_here += 1
        self.display.update(counts.task, completed=done)

    def close(self) -> None:
        self.display.stop()


def reporter_for(quiet: bool, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> Reporter:
    """A live display when stdout is a terminal and not --quiet; else the plain lines."""
    if not quiet and stdout.isatty():
        return LiveReporter(stdout, stderr)
    return Reporter(stdout, stderr, quiet=quiet)

"""A step's events shown as they come: the paragraph streaming into a `StoryView`, and one line
of status in the words of whoever watches (a writer, a writer keeping on writing, a reader)."""

from __future__ import annotations

from typing import Callable

from longyarn.recurrent_core.types import ParagraphDelta, PhaseChanged, StepCompleted, StepEvent, StepStarted

from longyarn.app.session.step_words import ESCAPE, Audience, phase_words

from .widgets import StoryView


class StepRenderer:
    """Renders one step's events into `view` and a status line (`say`).

    `prefix` goes before the status in a run of steps ("Keep writing: paragraph 2 of 5 · ").
    """

    def __init__(self, view: StoryView, say: Callable[[str], None], audience: Audience, prefix: str = "") -> None:
        self.view, self.say, self.audience, self.prefix = view, say, audience, prefix
        self.streamed = False  # a paragraph began streaming (a chosen existing one never does)

    def show(self, event: StepEvent) -> None:
        view = self.view
        if isinstance(event, ParagraphDelta):
            view.streaming.append(event.delta)
        elif isinstance(event, StepStarted):
            self.streamed = True
            view.streaming.begin()
            if self.audience == "reader":
                view.follow = True  # the reader asked for it: show it coming
            view.follow_end()
            self._status("started")
        elif isinstance(event, PhaseChanged):
            if event.phase == "writing" and self.streamed:
                # The engine starts the paragraph over (a cut stream, or what came before a lone
                # </think> was reasoning): drop what was shown.
                view.streaming.begin()
            self._status(event.phase)
        elif isinstance(event, StepCompleted):
            view.streaming.end()

    def _status(self, phase: str) -> None:
        words = phase_words(phase, self.audience)
        if phase == "started" and self.audience == "writer":
            self.say(words)  # it says what Escape does already
            return
        gap = " " if phase == "started" and self.audience == "reader" else "  "
        self.say(f"{self.prefix}{words}{gap}({ESCAPE[self.audience]})")

"""The story bible on the writing screen: the keys that open its panel and its waiting updates,
and the count of updates waiting in the status line. Mixed into `WritingScreen`, whose session
it uses."""

from __future__ import annotations

from typing import Callable

from textual.widgets import Static

from longyarn.app.session.bible import pending_label
from longyarn.app.session.writing import WritingSession

from .bible import BibleScreen
from .bible_updates import BibleUpdatesScreen
from .help import key_for


class BibleTools:
    """Mixed into `WritingScreen` (its on_mount and on_unmount run beside the screen's own)."""

    session: WritingSession
    generating: bool
    moving: bool

    def on_mount(self) -> None:
        self._waiting_told = len(self.session.bible.pending)
        self._stop_hearing_bible: Callable[[], None] = self.session.bible.listen(self.show_bible_updates)
        self.show_bible_updates()

    def on_unmount(self) -> None:
        stop = getattr(self, "_stop_hearing_bible", None)
        if stop is not None:
            stop()

    def show_bible_updates(self) -> None:
        """The count of waiting updates in the status line (none: nothing), and a notice when
        more arrive."""
        if not self.is_attached:  # type: ignore[attr-defined]
            return
        waiting = len(self.session.bible.pending)
        key = key_for(self.app, type(self), "bible-updates")  # type: ignore[attr-defined]
        widget = self.query_one("#bible-updates", Static)  # type: ignore[attr-defined]
        widget.update(f"{pending_label(waiting)} ({key})" if waiting else "")
        widget.display = bool(waiting)
        if waiting > getattr(self, "_waiting_told", 0) and self.is_current:  # type: ignore[attr-defined]
            self.notify(  # type: ignore[attr-defined]
                f"The model proposed changes to the story bible; {key} shows them: accept, edit or reject each.",
                title=pending_label(waiting),
            )
        self._waiting_told = waiting

    def action_bible(self) -> None:
        """The story bible: its entries by kind, their facts as at the newest paragraph."""
        story = self.session.story
        self.app.push_screen(BibleScreen(  # type: ignore[attr-defined]
            self.session.bible, self.session.host, story_title=story.title if story else "", busy=self._busy,
        ))

    def action_bible_updates(self) -> None:
        """The updates the model proposed to the bible, waiting for the writer."""
        self.app.push_screen(BibleUpdatesScreen(self.session.bible, self.session.host, busy=self._busy))  # type: ignore[attr-defined]

"""What the reader's screens share, handed to them by the app: they never import the app."""

from __future__ import annotations

from dataclasses import dataclass

from longyarn.app.session.engine_host import EngineHost
from longyarn.app.session.reading import ReadingSession
from longyarn.recurrent_core.readers import Reader, StoryAndReaderStore


@dataclass
class ReadingRoom:
    """The store, the room's one engine (built on the first new paragraph anyone asks for),
    the limits on what readers may have written, and the reader, once known."""

    store: StoryAndReaderStore
    host: EngineHost
    steps_per_minute: int
    action_chars: int
    in_browser: bool
    reader: Reader | None = None

    def session(self, story_id: str) -> ReadingSession:
        """The reader's way through `story_id` (raises `StoryClosed` if it is not open to readers)."""
        assert self.reader is not None
        return ReadingSession(
            self.store,
            self.reader,
            story_id,
            engine_factory=self.host.engine_now if self.host.factory is not None else None,
            steps_per_minute=self.steps_per_minute,
            action_chars=self.action_chars,
        )

"""What the writers' screens share, handed to them by the app: they never import the app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from textual.message import Message
from textual.signal import Signal

from longyarn.app.session.engine_host import EngineHost
from longyarn.app.session.writing import WritingSession
from longyarn.app.settings import Settings
from longyarn.recurrent_core.store import StoryStore


@dataclass
class Desk:
    """The store, the engine host, the clock, and a signal published when the model changes
    (loaded, replaced, or found unusable)."""

    store: StoryStore
    host: EngineHost
    model_changed: Signal[None]
    now: Callable[[], datetime]

    def session(self, story_id: str) -> WritingSession:
        return WritingSession(self.store, self.host, story_id, now=self.now)


class LoadModel(Message):
    """New settings need a new model (`EngineHost.apply_settings` said so): the app loads it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

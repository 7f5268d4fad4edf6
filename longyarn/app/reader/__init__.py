"""Reader mode, `longyarn read`: stories as interactive fiction, in a terminal or a browser.

`run_read` runs it in the terminal; `longyarn.app.reader.web.serve_reader` serves this terminal app to
browsers (`longyarn read --serve --terminal`); the web reader is `longyarn.app.web`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from longyarn.app.session.reading import DEFAULT_STEPS_PER_MINUTE
from longyarn.app.session.reader_text import DEFAULT_ACTION_CHARS

if TYPE_CHECKING:
    from longyarn.app.settings import Settings
    from longyarn.recurrent_core.engine import Engine
    from longyarn.recurrent_core.store import StoryStore


def steps_per_minute(settings: "Settings") -> int:
    """The most new paragraphs a reader may have written per minute (setting
    `reader_steps_per_minute`, default 6)."""
    return int(getattr(settings, "reader_steps_per_minute", DEFAULT_STEPS_PER_MINUTE))


def action_chars(settings: "Settings") -> int:
    """The longest free-text action a reader may type (setting `reader_action_chars`, default 500)."""
    return int(getattr(settings, "reader_action_chars", DEFAULT_ACTION_CHARS))


def engine_factory(store: "StoryStore", settings: "Settings"):
    """Builds the room's engine on a reader's first new paragraph, so reading alone needs no model."""
    from longyarn.app.session.engine_host import make_engine

    def build() -> "Engine":
        return make_engine(store, settings)

    return build


def run_read(settings: "Settings", story_id: str | None = None) -> None:
    """Run reader mode in this terminal until the reader quits (what `longyarn read` calls)."""
    from longyarn.storage.db import open_store

    from .app import make_reader_app
    from longyarn.app.session.reader_identity import load_local_token, save_local_token

    store = open_store(settings.db)
    try:
        make_reader_app(
            store=store,
            token=load_local_token(),
            engine_factory=engine_factory(store, settings),
            story_id=story_id,
            on_new_token=save_local_token,
            steps_per_minute=steps_per_minute(settings),
            action_chars=action_chars(settings),
        ).run()
    finally:
        store.close()


__all__ = ["run_read", "steps_per_minute", "action_chars", "engine_factory"]

"""Notices and flows that several writers' screens share: no model yet, fallbacks a step took,
and exporting a story."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.screen import Screen

from longyarn.app.epub import export_epub
from longyarn.app.export import export_story as export_text
from longyarn.app.export import slug, write_atomically
from longyarn.app.session.engine_host import EngineHost
from longyarn.app.ui.formatting import store_failure
from longyarn.recurrent_core.store import StoryStore

from .screens.dialogs import ExportDialog, ExportRequest


def explain_no_model(screen: Screen, host: EngineHost) -> None:
    """Say why there is no model to write with: still loading, or what is wrong."""
    title, sentence, loading = host.why_no_model()
    if loading:
        screen.notify(sentence, title=title, timeout=6)
    else:
        screen.notify(sentence, title=title, severity="warning", timeout=12)


def tell_fallbacks(screen: Screen, host: EngineHost, sentences: tuple[str, ...]) -> None:
    """A notice for each fallback a step took; one that describes the model only the first time
    since the model was chosen: with every paragraph, it would bury the story."""
    for sentence in host.fallbacks_to_tell(sentences):
        screen.notify(sentence, severity="warning", timeout=8)


def export_story(screen: Screen, store: StoryStore, story_id: str) -> None:
    """Ask where to export the story, then write it in a worker and say how it went."""
    story = store.get_story(story_id)
    default = Path.home() / f"{slug(story.title)}.md"

    def export(request: ExportRequest | None) -> None:
        if request is not None:
            screen.app.run_worker(_write_export(screen, store, story_id, request), group="export", exit_on_error=False)

    screen.app.push_screen(ExportDialog(default), export)


async def _write_export(screen: Screen, store: StoryStore, story_id: str, request: ExportRequest) -> None:
    """Read the branch, render it and write the file in a thread; say how it went."""

    desk = getattr(screen.app, "desk", None)  # the writers' app: its settings may name the author
    settings = desk.host.settings if desk is not None else None
    author = settings.author if settings is not None else None

    def write() -> None:
        if request.fmt == "epub":
            write_atomically(request.path, export_epub(store, story_id, author=author))
        else:
            write_atomically(request.path, export_text(store, story_id, request.fmt))  # type: ignore[arg-type]

    try:
        await asyncio.to_thread(write)
    except OSError as error:
        problem = (
            f"Could not write {request.path} ({error.strerror or error}); the story is unchanged; "
            "choose another path."
        )
    except Exception as error:
        problem = store_failure(error, f"read the story to export it to {request.path}")
    else:
        screen.app.notify(f"Wrote {request.path}.", title="Exported")
        return
    screen.app.notify(problem, title="Not exported", severity="error", timeout=12)

"""SVG snapshots of the main screens, with fixed stories, fixed times and a fixed clock.

Update them after a deliberate change with `pytest tests/app/test_tui_snapshots.py --snapshot-update`
and look at the SVGs in tests/app/__snapshots__/ before committing them.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import update

from longyarn.app.tui.screens.dialogs import KeepWritingDialog
from longyarn.app.tui.screens.writing import WritingScreen
from longyarn.storage.models import StoryRow
from tests.app.test_tui import PARAGRAPHS, build_app, run_step, seed_story, wait_for_screen, wait_until
from tests.conftest import make_engine


async def focus_the_story(pilot) -> WritingScreen:
    """Focus the writing screen's story, and wait for the footer's keys that focus brings.

    A dialog or editor opened next keeps the footer behind it as it was drawn then. Focusing
    the story makes the footer rebuild its keys (emptied, then filled) on a later refresh: let
    that refresh come, then wait for its keys.
    """
    from textual.widgets._footer import FooterKey

    screen = await wait_for_screen(pilot, WritingScreen)
    screen.story_view.focus()
    for _ in range(3):
        await pilot.pause()
    await wait_until(pilot, lambda: len(screen.query(FooterKey)) > 2, what="the writing screen's keys")
    return screen

NOW = datetime(2025, 3, 14, 16, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def freeze_story_times(store, story_id: str, when: datetime) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(StoryRow).where(StoryRow.id == story_id).values(created_at=when, updated_at=when)
        )


@pytest.fixture
def stories(store, embedder):
    marsh = seed_story(store, embedder, PARAGRAPHS)
    freeze_story_times(store, marsh.id, datetime(2025, 3, 14, 9, 30, tzinfo=timezone.utc))
    lantern = seed_story(store, embedder, PARAGRAPHS[:1], title="A Lantern for the Ferryman", genre="fable")
    freeze_story_times(store, lantern.id, datetime(2025, 2, 2, 18, 5, tzinfo=timezone.utc))
    return marsh, lantern


def test_library(snap_compare, store, server, embedder, stories):
    app = build_app(store, make_engine(store, server, embedder), now=lambda: NOW)
    assert snap_compare(app, terminal_size=(80, 24))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_writing_screen(snap_compare, store, server, embedder, stories, size):
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def opened(pilot):
        await wait_for_screen(pilot, WritingScreen)

    assert snap_compare(app, terminal_size=size, run_before=opened)


async def open_memory_browser(pilot) -> None:
    await pilot.press("f2")
    await wait_until(pilot, lambda: pilot.app.screen.query("#memory-caption"), what="the browser")
    caption = pilot.app.screen.query_one("#memory-caption")
    await wait_until(pilot, lambda: not str(caption.render()).startswith("Reading"), what="the memories")
    await pilot.pause()


def test_memory_browser(snap_compare, store, server, embedder, stories):
    """On a paragraph stored without its context: the notice, then every memory."""
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def browse(pilot):
        await wait_for_screen(pilot, WritingScreen)
        await open_memory_browser(pilot)

    assert snap_compare(app, terminal_size=(100, 30), run_before=browse)


def test_memory_browser_on_a_recall(snap_compare, store, server, embedder, stories):
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def after_a_step(pilot):
        screen = await wait_for_screen(pilot, WritingScreen)
        await run_step(pilot, screen, *"Mara goes down to the harbour at dawn.", "enter")
        pilot.app.clear_notifications()
        await open_memory_browser(pilot)

    assert snap_compare(app, terminal_size=(100, 30), run_before=after_a_step)


def test_context_viewer(snap_compare, store, server, embedder, stories):
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def after_a_step(pilot):
        screen = await wait_for_screen(pilot, WritingScreen)
        await run_step(pilot, screen, *"Mara goes down to the harbour at dawn.", "enter")
        pilot.app.clear_notifications()
        await pilot.press("f3")
        await wait_until(pilot, lambda: not pilot.app.screen.query("#context-loading"), what="the context")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 30), run_before=after_a_step)


def test_keep_writing_dialog(snap_compare, store, server, embedder, stories):
    """The count to write, and which instruction the first paragraph follows."""
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def ask(pilot):
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+o")
        await wait_for_screen(pilot, KeepWritingDialog)

    assert snap_compare(app, terminal_size=(80, 24), run_before=ask)


# ---- the craft tools' screens (issue 13) ----


def test_versions_at_once(snap_compare, store, server, embedder, stories):
    """Three versions of the next paragraph side by side, the first highlighted."""
    from dataclasses import replace

    from longyarn.app.tui.screens.alternatives import AlternativesScreen
    from tests.app.test_craft_tools import numbered_writer

    server.responder = numbered_writer()
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def versions(pilot):
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press(*"Mara rows out to the door.")
        await pilot.press("ctrl+n")
        screen = await wait_for_screen(pilot, AlternativesScreen)
        await wait_until(pilot, lambda: screen.drafts is not None, what="the versions")
        # Which reply a request got depends on arrival order: show them in a fixed order.
        screen._show_drafts(replace(screen.drafts, paragraphs=tuple(sorted(screen.drafts.paragraphs))))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 36), run_before=versions)


def test_sampling_screen(snap_compare, store, server, embedder, stories):
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def sampling(pilot):
        from longyarn.app.tui.screens.sampling import SamplingScreen

        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f9")
        screen = await wait_for_screen(pilot, SamplingScreen)
        screen.query_one("#preset").value = "creative"
        await pilot.pause()

    assert snap_compare(app, terminal_size=(110, 40), run_before=sampling)


def test_a_proposed_change_as_a_diff(snap_compare, store, server, embedder, stories):
    from tests.scripted_server import Reply

    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def proposal(pilot):
        from longyarn.app.tui.screens.craft_dialogs import ProposedChangeDialog

        await focus_the_story(pilot)
        await pilot.press("e")
        await pilot.pause()
        area = pilot.app.screen.query_one("#paragraph")
        start = PARAGRAPHS[2].index("a brass key")
        area.selection = type(area.selection)(
            area.document.get_location_from_index(start),
            area.document.get_location_from_index(start + len("a brass key")),
        )
        await pilot.press("ctrl+r")
        await pilot.pause()
        server.enqueue(Reply("an old iron key, cold as river water"))
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, ProposedChangeDialog)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 30), run_before=proposal)


@pytest.mark.parametrize("key", ["f7", "f8"], ids=["authors_note", "goals"])
def test_craft_dialogs(snap_compare, store, server, embedder, stories, key):
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def opened(pilot):
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press(key)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(100, 30), run_before=opened)


def test_a_long_outline_warning(snap_compare, store, server, embedder, stories):
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def warned(pilot):
        from longyarn.app.tui.screens.long_note import LongNoteDialog

        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f4")
        await pilot.pause()
        pilot.app.screen.query_one("#outline").load_text("Mara comes home to the salt marsh. " * 150)
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, LongNoteDialog)

    assert snap_compare(app, terminal_size=(100, 30), run_before=warned)


@pytest.mark.parametrize("ask", [False, True], ids=["editor", "passage_task"])
def test_co_writing_in_the_paragraph_editor(snap_compare, store, server, embedder, stories, ask):
    """The paragraph editor with its co-writing keys, and what to do with a selected passage."""
    app = build_app(store, make_engine(store, server, embedder), story_id=stories[0].id, now=lambda: NOW)

    async def opened(pilot):
        from longyarn.app.tui.screens.cowriting import CoWritingEditor, PassageTaskDialog

        await focus_the_story(pilot)
        await pilot.press("e")
        editor = await wait_for_screen(pilot, CoWritingEditor)
        area = editor.query_one("#paragraph")
        start = PARAGRAPHS[2].index("a brass key")
        area.selection = type(area.selection)(
            area.document.get_location_from_index(start),
            area.document.get_location_from_index(start + len("a brass key")),
        )
        if ask:
            await pilot.press("ctrl+r")
            await wait_for_screen(pilot, PassageTaskDialog)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 30), run_before=opened)

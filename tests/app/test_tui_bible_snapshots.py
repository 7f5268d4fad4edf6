"""SVG snapshots of the story bible's screens: the panel, the entry editor, the queue of proposed
updates, and the writing screen's count of updates waiting.

Update them after a deliberate change with `pytest tests/app/test_tui_bible_snapshots.py
--snapshot-update` and look at the SVGs in tests/app/__snapshots__/ before committing them.
"""

from __future__ import annotations

from longyarn.app.tui.screens.bible import BibleScreen
from longyarn.app.tui.screens.bible_editor import EntryEditorScreen
from longyarn.app.tui.screens.bible_updates import BibleUpdatesScreen
from longyarn.app.tui.screens.writing import WritingScreen
from longyarn.recurrent_core.bible import FactDraft
from tests.app.test_tui import PARAGRAPHS, build_app, seed_story, wait_for_screen, wait_until
from tests.app.test_tui_bible import proposals, seed_bible
from tests.conftest import make_engine


def bible_app(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    seed_bible(store, story.id)
    store.add_entry(story.id, name="Tobias", kind="character", aliases=["the miller"], always=True,
                    description="Runs the mill; knows what burned it.",
                    facts=[FactDraft("Tobias lit the fire.", 2)])
    return build_app(store, make_engine(store, server, embedder), story_id=story.id), story


async def propose(pilot, store, story_id: str, *, unknown: bool = False) -> None:
    from longyarn.app.session.bible import BibleUpdate

    writing = await wait_for_screen(pilot, WritingScreen)
    updates = proposals(store.branch(story_id))
    if unknown:
        updates.append(BibleUpdate("new_fact", "Nobody", text="Who is it?", paragraph=3))
    await writing.session.bible.propose(updates)
    await pilot.pause()


def test_bible_panel(snap_compare, store, server, embedder):
    app, story = bible_app(store, server, embedder)

    async def opened(pilot):
        await propose(pilot, store, story.id)
        pilot.app.clear_notifications()
        await pilot.press("f10")
        panel = await wait_for_screen(pilot, BibleScreen)
        await wait_until(pilot, lambda: panel.view is not None, what="the bible")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 30), run_before=opened)


def test_bible_entry_editor(snap_compare, store, server, embedder):
    app, _ = bible_app(store, server, embedder)

    async def editing(pilot):
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f10")
        panel = await wait_for_screen(pilot, BibleScreen)
        await wait_until(pilot, lambda: panel.view is not None, what="the bible")
        await pilot.press("e")
        editor = await wait_for_screen(pilot, EntryEditorScreen)
        editor.query_one("#fact-text").focus()
        await pilot.press(*"Mara sleeps.", "tab", "5", "tab", "2", "enter")  # its problem, in one sentence
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 44), run_before=editing)


def test_bible_updates_queue(snap_compare, store, server, embedder):
    app, story = bible_app(store, server, embedder)

    async def queued(pilot):
        await propose(pilot, store, story.id, unknown=True)
        writing = pilot.app.screen
        last = writing.session.bible.pending[-1]
        try:
            await writing.session.bible.accept(last)
        except Exception:
            pass  # its problem shows beside it
        pilot.app.clear_notifications()
        await pilot.press("f12")
        await wait_for_screen(pilot, BibleUpdatesScreen)
        await pilot.press("end")  # the one that could not be accepted: why, below
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 30), run_before=queued)


def test_writing_screen_with_bible_updates_waiting(snap_compare, store, server, embedder):
    app, story = bible_app(store, server, embedder)

    async def waiting(pilot):
        await propose(pilot, store, story.id)
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=waiting)


def test_a_proposed_entry_in_the_editor(snap_compare, store, server, embedder):
    app, story = bible_app(store, server, embedder)

    async def editing(pilot):
        await propose(pilot, store, story.id)
        pilot.app.clear_notifications()
        await pilot.press("f12")
        await wait_for_screen(pilot, BibleUpdatesScreen)
        await pilot.press("e")
        await wait_for_screen(pilot, EntryEditorScreen)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 44), run_before=editing)


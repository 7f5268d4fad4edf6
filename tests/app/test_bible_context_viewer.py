"""The context viewer shows which story bible entries went into a paragraph's prompt, why, and
which were left out: while it is written, and for any paragraph later (issue 14, item 2)."""

from __future__ import annotations

from longyarn.app.tui.screens.context import ContextScreen
from longyarn.app.tui.screens.writing import WritingScreen
from longyarn.recurrent_core.bible import FactDraft
from tests.app.test_tui import (
    PARAGRAPHS,
    build_app,
    run_step,
    seed_story,
    slow_writer,
    wait_for_screen,
    wait_for_step,
    wait_until,
)
from tests.app.test_tui_tools import assert_viewer_shows, open_context_viewer
from tests.conftest import make_engine

INSTRUCTION = "Mara waits at the quay: the ferry is late, and a late ferry brings bad news."


def add_bible(store, story_id: str) -> None:
    store.add_entry(story_id, name="Mill fire", kind="lore", description="The mill burned eleven years ago.", always=True)
    store.add_entry(story_id, name="Mara", kind="character", description="Tobias's sister, home after ten years.",
                    facts=[FactDraft("Mara holds the brass key")])
    store.add_entry(story_id, name="Ferry lore", kind="lore",
                    description="A late ferry brings bad news; Odile has run it for forty years.")
    store.add_entry(story_id, name="Tobias", kind="character", description="Mara's brother, who saw the fire.")
    store.add_entry(story_id, name="Odile", kind="character",
                    description="Grew up in the orchard, the youngest of nine, and learned every song of the valley "
                                "from her grandmother before she could read; " * 3)


def bible_lines(viewer: ContextScreen) -> list[str]:
    return [str(line.render()) for line in viewer.query(".bible-entry")]


async def test_the_context_viewer_shows_each_bible_entry_why_it_came_in_and_what_was_left_out(
    store, server, embedder
):
    story = seed_story(store, embedder, PARAGRAPHS)
    add_bible(store, story.id)
    engine = make_engine(store, server, embedder, bible_budget_tokens=100)
    app = build_app(store, engine, story_id=story.id)
    async with app.run_test(size=(120, 50)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await run_step(pilot, screen, *INSTRUCTION, "enter")
        started = screen.last_started
        viewer = await open_context_viewer(pilot)
        assert str(viewer.query_one(".screen-title").render()) == "Context of paragraph 4"
        assert_viewer_shows(viewer, started)
        lines = bible_lines(viewer)
        assert [line.split(" · ")[:2] for line in lines] == [
            ["✓ Mill fire (lore)", "always"],
            ["✓ Mara (character)", "named “Mara” in the instruction"],
            ["✓ Ferry lore (lore)", f"close in meaning to the instruction (score {started.bible.entries[2].score:.2f})"],
            ["✓ Tobias (character)", "mentioned as “Tobias” by Mara"],
            ["✗ Odile (character)", "mentioned as “Odile” by Ferry lore"],
        ]
        assert lines[-1].endswith("left out: over the bible budget")
        assert [bool(line.has_class("-trimmed")) for line in viewer.query(".bible-entry")] == [False] * 4 + [True]
        section = next(s for s in started.context if s.name == "Story bible")
        titles = [str(label.render()) for label in viewer.query(".section-title")]
        assert f"Story bible · {section.tokens} tokens · 1 of 5 entries left out" in titles
        assert "Facts: Mara holds the brass key." in section.text and "Odile (" not in section.text
        await pilot.press("escape")

        # While a paragraph is being written, F3 shows its bible entries too.
        server.responder = slow_writer(0.02)
        await pilot.press(*"Tobias rows out to meet the ferry.", "enter")
        await wait_until(pilot, lambda: screen.story_view.streaming.text, what="text to stream in")
        viewer = await open_context_viewer(pilot)
        assert str(viewer.query_one(".screen-title").render()) == "Context of the paragraph being written"
        assert "✓ Tobias (character) · named “Tobias” in the instruction" in "\n".join(bible_lines(viewer))
        await pilot.press("escape")
        await wait_for_step(pilot, screen)


async def test_a_paragraph_of_a_story_without_a_bible_shows_no_bible_entries(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await run_step(pilot, screen, *INSTRUCTION, "enter")
        viewer = await open_context_viewer(pilot)
        assert_viewer_shows(viewer, screen.last_started)
        assert not viewer.query(".bible-entry")
        assert "Story bible" not in [s.name for s in screen.last_started.context]

"""Chapters in the writers' UI, as a writer uses them: Pilot presses keys on the real app, which
runs the real engine against the scripted server, with a real SQLite file and embeddings."""

from __future__ import annotations

import pytest

from longyarn.app.tui.screens.chapters import ChapterDialog
from longyarn.app.tui.screens.help import HelpScreen
from longyarn.app.tui.screens.writing import WritingScreen
from longyarn.app.ui.widgets import ChapterHeading
from longyarn.recurrent_core.replies import fallbacks
from tests.app.test_tui import (
    PARAGRAPHS,
    Notices,
    build_app,
    demo_engine,
    run_step,
    seed_story,
    status_text,
    wait_for_screen,
    wait_until,
)
from tests.app.test_tui_snapshots import NOW, _utc  # noqa: F401 - the snapshot's fixed zone
from tests.conftest import make_engine

MORE = [
    "At dawn she walked to the mill and found the door chained from the inside.",
    "Tobias was waiting on the quay, pretending to mend a net he had never owned.",
    "He told her the fire had started in the ledger room, and that he had seen who lit it.",
]
STORY = PARAGRAPHS + MORE  # six paragraphs


def headings(screen: WritingScreen) -> list[tuple[str, str]]:
    """Each heading shown in the story, with the first words of the paragraph under it."""
    shown = []
    children = list(screen.story_view.children)
    for index, child in enumerate(children):
        if isinstance(child, ChapterHeading):
            shown.append((str(child.render()), children[index + 1].step.paragraph[:20]))
    return shown


def chapters_in_store(store, story_id: str) -> list[tuple[str, int, bool]]:
    story = store.get_story(story_id)
    return [(c.title, first, c.closed) for c, first in store.chapters_on_branch(story_id, story.head_step_id)]


async def select_paragraph(pilot, screen: WritingScreen, number: int) -> None:
    """Focus the story and select paragraph `number` (1-based) with the arrow keys."""
    screen.story_view.focus()
    await pilot.pause()
    views = screen.story_view.paragraph_views
    if screen.story_view.selected is None:
        await pilot.press("up")  # selects the newest
    await pilot.press(*["down"] * len(views), *["up"] * (len(views) - number))
    assert screen.story_view.selected is views[number - 1]


async def chapter_change(pilot, screen: WritingScreen, *keys: str) -> None:
    await pilot.press(*keys)
    await wait_until(pilot, lambda: not screen.moving, what="the chapter change")
    await pilot.pause()


async def test_ending_a_chapter_with_the_models_summary_and_the_next_paragraph_begins_the_next(
    store, server, embedder
):
    story = seed_story(store, embedder, STORY)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(110, 34)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+t")
        dialog = await wait_for_screen(pilot, ChapterDialog)
        assert "End Chapter 1 after paragraph 6" in str(dialog.query_one(".dialog-title").render())
        await pilot.press("ctrl+r")
        summary = dialog.query_one("#chapter-summary")
        await wait_until(pilot, lambda: summary.text.strip(), what="the model's summary")
        asked = [r for r in server.requests if r["_role"] == "chapter_summary"]
        assert len(asked) == 1 and STORY[-1] in asked[0]["messages"][-1]["content"]
        title = dialog.query_one("#chapter-title").value
        assert title.startswith("The "), "an untitled chapter takes the model's title"
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: not screen.moving, what="the chapter to end")
        assert chapters_in_store(store, story.id) == [(title, 1, True)]
        assert "chapter 2 begins next" in str(screen.query_one("#story-header").render())

        # The next paragraph is written with the summary in view, and begins chapter 2.
        await run_step(pilot, screen, "enter")
        writer = [r for r in server.requests if r["_role"] == "writer"][-1]["messages"][-1]["content"]
        chapters_section = writer.split("## Chapters\n", 1)[1].split("\n\n## ", 1)[0]
        assert chapters_section == (
            f'This paragraph begins chapter 2.\nChapter 1, "{title}" (paragraphs 1-6): {summary.text.strip()}'
        )
        assert "* * *" in writer, "a story with chapters is told how to mark a chapter's end"
        assert headings(screen) == [
            (f"── {title} ──", STORY[0][:20]), ("── Chapter 2 ──", store.branch(story.id)[-1].paragraph[:20]),
        ]
        assert [(t, first) for t, first, _closed in chapters_in_store(store, story.id)] == [(title, 1), ("", 7)]


async def test_a_typed_summary_ends_the_chapter_undo_takes_it_back_and_an_empty_one_changes_nothing(
    store, server, embedder
):
    story = seed_story(store, embedder, STORY)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(110, 34)) as pilot:
        notices = Notices(app)
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+t")
        await wait_for_screen(pilot, ChapterDialog)
        await pilot.press("ctrl+s")  # no summary yet
        await wait_until(pilot, lambda: notices.look() and not screen.moving, what="the refusal")
        await wait_until(pilot, lambda: notices.look() and any("this one is empty" in m for m in notices.seen.values()),
                         what="the sentence")
        assert chapters_in_store(store, story.id) == []

        await pilot.press("ctrl+t")
        await wait_for_screen(pilot, ChapterDialog)
        await pilot.press(*"Mara comes home and finds the key.")
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: chapters_in_store(store, story.id), what="the chapter to end")
        assert store.list_chapters(story.id)[0].summary == "Mara comes home and finds the key."
        assert status_text(screen).startswith("Ended the chapter")

        await chapter_change(pilot, screen, "ctrl+z")
        await wait_until(pilot, lambda: not screen.moving, what="the undo")
        assert chapters_in_store(store, story.id) == [], "the first chapter was made by the change, and goes with it"
        await chapter_change(pilot, screen, "ctrl+y")
        assert chapters_in_store(store, story.id) == [("", 1, True)]


async def test_splitting_renaming_merging_and_moving_chapters_on_the_selected_paragraph(store, server, embedder):
    story = seed_story(store, embedder, STORY)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(110, 40)) as pilot:
        notices = Notices(app)
        screen = await wait_for_screen(pilot, WritingScreen)

        # Split: a chapter begins at paragraph 4; the story gets its first chapter too.
        await select_paragraph(pilot, screen, 4)
        await chapter_change(pilot, screen, "c")
        assert chapters_in_store(store, story.id) == [("", 1, False), ("", 4, False)]
        assert headings(screen) == [("── Chapter 1 ──", STORY[0][:20]), ("── Chapter 2 ──", STORY[3][:20])]
        # Not at the first paragraph, and not where a chapter begins already.
        await select_paragraph(pilot, screen, 1)
        await chapter_change(pilot, screen, "c")
        await select_paragraph(pilot, screen, 4)
        await chapter_change(pilot, screen, "c")
        notices.look()
        assert any(m.startswith("The first paragraph always begins the first chapter") for m in notices.seen.values())
        assert any(m.startswith("Paragraph 4 already begins Chapter 2") for m in notices.seen.values())
        assert len(chapters_in_store(store, story.id)) == 2

        # Rename the second chapter; an empty title changes nothing.
        await select_paragraph(pilot, screen, 5)
        await pilot.press("t")
        dialog = await wait_for_screen(pilot, ChapterDialog)
        dialog.query_one("#chapter-title").value = "The Quay"
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: not screen.moving, what="the rename")
        assert headings(screen)[1] == ("── The Quay ──", STORY[3][:20])
        await select_paragraph(pilot, screen, 5)
        await pilot.press("t")
        dialog = await wait_for_screen(pilot, ChapterDialog)
        dialog.query_one("#chapter-title").value = "  "
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: notices.look() and any("title cannot be empty" in m for m in notices.seen.values()),
                         what="the refusal")
        assert chapters_in_store(store, story.id)[1][0] == "The Quay"

        # Move where The Quay begins: later with "[", earlier with "]" on the chapter before.
        await select_paragraph(pilot, screen, 5)
        await chapter_change(pilot, screen, "left_square_bracket")
        assert [first for _t, first, _c in chapters_in_store(store, story.id)] == [1, 5]
        await select_paragraph(pilot, screen, 3)
        await chapter_change(pilot, screen, "right_square_bracket")
        assert [first for _t, first, _c in chapters_in_store(store, story.id)] == [1, 3]
        assert headings(screen)[1] == ("── The Quay ──", STORY[2][:20])
        await chapter_change(pilot, screen, "ctrl+z")
        assert [first for _t, first, _c in chapters_in_store(store, story.id)] == [1, 5]

        # Merge chapter 1 with The Quay; the last chapter has none to merge with.
        await select_paragraph(pilot, screen, 2)
        await chapter_change(pilot, screen, "m")
        assert chapters_in_store(store, story.id) == [("", 1, False)]
        await select_paragraph(pilot, screen, 6)
        await chapter_change(pilot, screen, "m")
        notices.look()
        assert any(m.startswith("Chapter 1 is the last chapter") for m in notices.seen.values())
        await chapter_change(pilot, screen, "ctrl+z")
        assert [(t, first) for t, first, _c in chapters_in_store(store, story.id)] == [("", 1), ("The Quay", 5)]


async def test_f1_and_the_command_palette_name_the_chapter_keys(store, server, embedder):
    story = seed_story(store, embedder, STORY)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(110, 34)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f1")
        help_screen = await wait_for_screen(pilot, HelpScreen)
        rows = {(str(row.query_one(".help-key").render()), str(row.query_one(".help-what").render()))
                for row in help_screen.query(".help-row")}
        assert ("c", "Start a new chapter at the selected paragraph (in the story)") in rows
        assert ("t", "Rename the selected paragraph's chapter, or edit its summary (in the story)") in rows
        assert ("m", "Merge the selected paragraph's chapter with the chapter after it (in the story)") in rows
        assert ("[", "Move the start of the selected paragraph's chapter to it (in the story)") in rows
        assert ("]", "Move the start of the next chapter back to the selected paragraph (in the story)") in rows
        assert any(keys == "^t" and what.startswith("End the chapter here") for keys, what in rows)
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)

        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"end chapter")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for_screen(pilot, ChapterDialog)


async def test_the_demo_model_cannot_summarise_so_the_chapters_opening_sentences_stand_in(store, embedder):
    story = seed_story(store, embedder, STORY)
    app = build_app(store, demo_engine(store, embedder), story_id=story.id)
    async with app.run_test(size=(110, 34)) as pilot:
        notices = Notices(app)
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+t")
        dialog = await wait_for_screen(pilot, ChapterDialog)
        await pilot.press("ctrl+r")
        summary = dialog.query_one("#chapter-summary")
        await wait_until(pilot, lambda: notices.look() and summary.text.strip(), what="the stand-in summary")
        assert summary.text == f"{STORY[0]} {STORY[1]} {STORY[2]}", "about sixty words, whole sentences"
        await wait_until(pilot, lambda: notices.count(fallbacks.PROSE_ONLY_CHAPTER_SUMMARY) == 1, what="the notice")


@pytest.mark.parametrize("size", [(90, 30)], ids=["90x30"])
def test_the_story_outline_with_chapters(snap_compare, store, server, embedder, size):
    story = seed_story(store, embedder, STORY)
    steps = store.branch(story.id)
    first = store.add_chapter(story.id, title="Homecoming", summary="Mara comes home.", closed=True)
    store.add_chapter(story.id, title="", start_step_id=steps[3].id)
    assert first.closed
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id, now=lambda: NOW)

    async def opened(pilot):
        await wait_for_screen(pilot, WritingScreen)

    assert snap_compare(app, terminal_size=size, run_before=opened)


async def test_when_the_model_marks_a_chapters_end_the_writer_is_offered_to_end_it(store, embedder):
    from tests.scripted_server import Reply, ScriptedServer, story_responder

    def marks_the_end(request: dict) -> Reply:
        reply = story_responder(request)
        if request["_role"] == "writer":
            reply.text += "\n\n* * *"
        return reply

    story = seed_story(store, embedder, STORY)
    store.add_chapter(story.id, title="Homecoming")
    with ScriptedServer(marks_the_end) as server:
        app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
        async with app.run_test(size=(110, 34)) as pilot:
            notices = Notices(app)
            screen = await wait_for_screen(pilot, WritingScreen)
            await run_step(pilot, screen, "enter")
            await wait_until(pilot, lambda: notices.look() and any(
                m == "The model ended Homecoming with this paragraph; ^t ends it with its summary."
                for m in notices.seen.values()), what="the offer")
            assert not store.branch(story.id)[-1].paragraph.rstrip().endswith("*")
            assert chapters_in_store(store, story.id) == [("Homecoming", 1, False)], "the writer decides"

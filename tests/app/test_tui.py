"""The writers' UI as a writer uses it: Pilot presses keys on the real app, which runs the real
engine against the scripted OpenAI-compatible server, with a real SQLite file and embeddings."""

from __future__ import annotations

import html
import re
import sqlite3
import time
from contextlib import contextmanager
from typing import Callable

from longyarn.app.settings import Settings
from longyarn.app.tui import make_app
from longyarn.app.tui.app import LongyarnApp
from textual.widgets import Button

from longyarn.app.tui.screens.dialogs import (
    ConfirmDialog, KeepWritingDialog, NewStoryDialog, OutlineDialog, ParagraphEditor, PublishDialog,
    UnsavedEditDialog,
)
from longyarn.app.tui.screens.help import HelpScreen
from longyarn.app.tui.screens.library import LibraryScreen
from longyarn.app.tui.screens.settings import SettingsScreen
from longyarn.app.tui.screens.welcome import WelcomeScreen
from longyarn.app.tui.screens.writing import WritingScreen
from longyarn.recurrent_core.backends.local import LocalBackend
from longyarn.recurrent_core.engine import Engine, EngineConfig
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.local_lm.runtime import DEMO_MODEL_DIR
from longyarn.recurrent_core.replies import fallbacks
from longyarn.recurrent_core.types import NewStep, Sampling, Story
from longyarn.storage.db import open_store
from tests.conftest import make_engine
from tests.scripted_server import Reply, story_responder

# ---- helpers shared by the TUI tests ---------------------------------------------------


def build_app(store, engine=None, **kwargs) -> LongyarnApp:
    kwargs.setdefault("first_run", False)
    kwargs.setdefault("keymap", {})
    return make_app(store=store, settings=Settings(), engine=engine, **kwargs)


async def wait_until(pilot, condition: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    """Let the app run until `condition()` holds (workers, timers and messages included)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.02)


async def wait_for_screen(pilot, screen_type: type, timeout: float = 20.0):
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, screen_type), timeout, screen_type.__name__)
    await pilot.pause()
    return pilot.app.screen


async def run_step(pilot, screen: WritingScreen, *keys: str) -> None:
    """Press `keys` (which start a step) and wait until that step is over and shown."""
    before = screen.step_worker
    await pilot.press(*keys)
    await wait_until(pilot, lambda: screen.step_worker is not before, what="the step to start")
    await wait_for_step(pilot, screen)


async def wait_for_step(pilot, screen: WritingScreen) -> None:
    """Wait until the running step is over and the screen shows its outcome."""
    await wait_until(pilot, lambda: not screen.generating, what="the step to end")
    await pilot.pause()


async def history_move(pilot, screen: WritingScreen, *keys: str) -> None:
    """Press `keys` (undo, redo, a version switch) and wait until the move is stored and shown."""
    await pilot.press(*keys)
    await wait_until(pilot, lambda: not screen.moving, what="the move to be stored")
    await pilot.pause()


@contextmanager
def database_held_by_another_process(db_path):
    """Hold SQLite's write lock from another connection, as a running `longyarn batch` does."""
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def shown_paragraphs(screen: WritingScreen) -> list[str]:
    return [view.step.paragraph for view in screen.story_view.paragraph_views]


def seed_story(store, embedder, paragraphs: list[str], *, title: str = "The Salt Marsh Key",
               genre: str = "mystery", instructions=("Mara opens the locked room.",
               "Tobias tells the truth about the fire.", "A letter arrives from the mainland.")) -> Story:
    """A story with fixed paragraphs committed as steps (with real embeddings), head at the last."""
    story = store.create_story(
        title=title, premise="A woman comes home to a village that lies to her.", genre=genre,
        outline="Mara comes home, finds a key, and learns what burned the mill.",
    )
    vectors = embedder.embed(paragraphs) if paragraphs else []
    parent = None
    for number, (paragraph, vector) in enumerate(zip(paragraphs, vectors), start=1):
        step = store.commit_step(
            NewStep(
                story_id=story.id, parent_id=parent, instruction=f"Write part {number}.",
                paragraph=paragraph,
                short_term_memory=f"Mara is home; part {number} is written; the key is still a mystery.",
                memory_reason="The key drives the story.", next_instructions=tuple(instructions),
                backend="openai", model="scripted-model",
            ),
            embedding=vector, embedding_model=embedder.name,
        )
        parent = step.id
    return store.get_story(story.id)


def slow_writer(chunk_delay_s: float = 0.05):
    """Story replies, with the writer's paragraph streamed slowly in small pieces."""

    def respond(request: dict) -> Reply:
        reply = story_responder(request)
        if request.get("_role") == "writer":
            reply.chunk_chars, reply.chunk_delay_s = 4, chunk_delay_s
        return reply

    return respond


PARAGRAPHS = [
    "Mara came home on the last ferry, with the salt wind in her coat and a letter she had not opened.",
    "The village had not changed: the mill was still a black shell, and nobody looked at it.",
    "In her mother's kitchen drawer she found a brass key wrapped in a page torn from a ledger.",
]


# ---- stories: new, open, rename, delete -------------------------------------------------


async def test_a_new_story_gets_an_outline_the_writer_can_edit_then_its_first_paragraph(store, server, embedder):
    app = build_app(store, make_engine(store, server, embedder))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await wait_for_screen(pilot, NewStoryDialog)
        await pilot.press(*"fable", "enter", *"A lighthouse keeper finds a door in the sea.")
        await pilot.press("ctrl+s")
        outline = await wait_for_screen(pilot, OutlineDialog)
        proposed = outline.query_one("#outline").text
        assert proposed.strip(), "the model's outline is shown for editing"
        outline.query_one("#outline").load_text(proposed + " The door opens only at low tide.")
        await pilot.press("ctrl+s")

        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: screen.position.head is not None, what="the first paragraph")
        await wait_for_step(pilot, screen)

        story = store.list_stories()[0]
        assert story.genre == "fable"
        assert story.outline.endswith("The door opens only at low tide.")
        [first] = store.branch(story.id)
        assert shown_paragraphs(screen) == [first.paragraph]
        # The outline edit reached the model before the first paragraph was written.
        writer_request = [r for r in server.requests if r["_role"] == "writer"][-1]
        assert "The door opens only at low tide." in str(writer_request["messages"])
        candidates = [str(option.prompt) for option in screen.query_one("#instructions")._options]
        assert candidates == [f"{n}. {text}" for n, text in enumerate(first.next_instructions, 1)]


async def test_the_library_lists_stories_and_renames_and_deletes_only_after_confirming(store, embedder):
    kept = seed_story(store, embedder, PARAGRAPHS[:2], title="Kept")
    doomed = seed_story(store, embedder, PARAGRAPHS, title="Doomed")
    app = build_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("escape")  # the "no model" notice
        library = await wait_for_screen(pilot, LibraryScreen)
        table = library.query_one("#stories")
        rows = [table.get_row(story.id) for story in (kept, doomed)]
        assert rows[0][0] == "Kept" and rows[0][2] == "2 ¶"
        assert rows[1][0] == "Doomed" and rows[1][2] == "3 ¶"
        assert rows[1][3].startswith("today ")

        table.move_cursor(row=table.get_row_index(doomed.id))
        await pilot.press("r")
        await pilot.pause()
        rename = pilot.app.screen
        rename.query_one("#text").value = "Renamed"
        await pilot.press("enter")
        await wait_until(pilot, lambda: table.get_row(doomed.id)[0] == "Renamed", what="the new title")
        assert store.get_story(doomed.id).title == "Renamed"

        table.move_cursor(row=table.get_row_index(doomed.id))
        await pilot.press("d")
        await wait_for_screen(pilot, ConfirmDialog)
        await pilot.press("enter")  # the default button keeps the story
        await pilot.pause()
        assert store.get_story(doomed.id).title == "Renamed"

        await pilot.press("d")
        await wait_for_screen(pilot, ConfirmDialog)
        await pilot.click("#confirm")
        await pilot.pause()
        await wait_until(pilot, lambda: table.row_count == 1, what="the delete")
        assert [s.id for s in store.list_stories()] == [kept.id]


async def test_the_author_publishes_a_story_to_readers_and_stops_publishing_it(store, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("escape")  # the "no model" notice
        library = await wait_for_screen(pilot, LibraryScreen)
        table = library.query_one("#stories")
        assert table.get_row(story.id)[4] == ""
        await pilot.press("p")
        dialog = await wait_for_screen(pilot, PublishDialog)
        assert not dialog.query("#unpublish"), "nothing to stop yet"
        await pilot.press("space")  # the focused switch: readers may continue past the last paragraph
        await pilot.click("#publish")
        await wait_until(pilot, lambda: table.get_row(story.id)[4] == "published, extends", what="the marker")
        published = store.get_story(story.id)
        assert published.readable and published.reader_may_extend

        # The command palette offers it too; a published story can be taken back.
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"publish")
        await pilot.pause(0.3)
        await pilot.press("enter")
        dialog = await wait_for_screen(pilot, PublishDialog)
        assert dialog.query_one("#readers-may-extend").value is True
        await pilot.click("#unpublish")
        await wait_until(pilot, lambda: table.get_row(story.id)[4] == "", what="the marker to go")
        assert not store.get_story(story.id).readable
        assert [step.paragraph for step in store.branch(story.id)] == PARAGRAPHS


# ---- the step -------------------------------------------------------------------------


async def test_the_writer_picks_a_candidate_edits_it_and_the_next_step_follows_it(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        screen.query_one("#instructions").focus()
        await pilot.press("2")
        instruction = screen.query_one("#instruction")
        assert instruction.value == "Tobias tells the truth about the fire."
        assert screen.focused is instruction
        await run_step(pilot, screen, "backspace", *" in the rain.", "enter")

        branch = store.branch(story.id)
        assert len(branch) == 4
        assert branch[-1].instruction == "Tobias tells the truth about the fire in the rain."
        assert shown_paragraphs(screen)[-1] == branch[-1].paragraph
        assert instruction.value == ""
        assert "Saved" in str(screen.query_one("#status").render())


async def test_an_empty_instruction_box_says_enter_writes_from_the_highlighted_instruction(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        box = screen.instruction_input
        # What fits the box at 80 columns.
        shown = box.render_line(0).crop(0, box.scrollable_content_region.width).text
        assert "Enter: write from the highlighted instruction, or type your own" in shown, shown
        screen.query_one("#instructions").focus()
        await pilot.press("down")
        box.focus()
        await run_step(pilot, screen, "enter")
        assert store.branch(story.id)[-1].instruction == "Tobias tells the truth about the fire."


async def test_an_edited_short_term_memory_is_what_the_next_step_reads_even_if_the_database_is_busy(
    store, server, embedder, db_path
):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        edited = "Mara knows her brother burned the mill; she has not told anyone yet."
        with database_held_by_another_process(db_path):
            screen.memory_editor.load_text(edited)
            await pilot.press("ctrl+g")
            # The edit waits for the lock, and the step waits for the edit; typing does not wait.
            await pilot.press(*"the mill")
            assert screen.instruction_input.value == "the mill"
            assert screen.generating and not [r for r in server.requests if r["_role"] == "writer"]
        await wait_for_step(pilot, screen)

        branch = store.branch(story.id)
        assert branch[2].short_term_memory == edited, "the edit is stored on the step it belongs to"
        writer_request = [r for r in server.requests if r["_role"] == "writer"][-1]
        assert edited in str(writer_request["messages"])


def screen_rows(app) -> list[str]:
    """The terminal's rows as the writer sees them, laid out from the app's own SVG screenshot, whose
    cells are 12.2 units wide and whose rows are 24.4 apart, the first at 20."""
    width, height = app.size
    grid = [[" "] * width for _ in range(height)]
    for match in re.finditer(r'<text[^>]*x="([\d.]+)" y="([\d.]+)"[^>]*>([^<]*)</text>', app.export_screenshot()):
        row, column = round((float(match[2]) - 20) / 24.4), round(float(match[1]) / 12.2)
        for offset, char in enumerate(html.unescape(match[3]).replace("\xa0", " ")):
            if 0 <= row < height and column + offset < width:
                grid[row][column + offset] = char
    return ["".join(cells) for cells in grid]


async def test_the_short_term_memory_shows_every_word_on_a_wide_terminal(store, server, embedder):
    """The memory box takes its width after its text is loaded; every word must still be on screen."""
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.pause()
        box = screen.memory_editor.region
        shown = " ".join(row[box.x:box.right].strip() for row in screen_rows(app)[box.y:box.bottom])
        assert " ".join(shown.split()) == store.branch(story.id)[-1].short_term_memory


async def test_quitting_while_editing_the_short_term_memory_keeps_the_edit(store, server, embedder, db_path):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        screen.memory_editor.focus()
        await pilot.press("end", *" She hides it.")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")
    assert "She hides it." in store.branch(story.id)[-1].short_term_memory


async def test_quitting_when_a_memory_edit_cannot_be_stored_asks_again(store, server, embedder, db_path):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        screen.memory_editor.focus()
        await pilot.press("end", *" She hides it.")
        with database_held_by_another_process(db_path):
            await pilot.press("ctrl+q")
            await wait_until(pilot, lambda: any(n.title == "Not quit" for n in app._notifications),
                             timeout=60, what="the warning")
            assert app.is_running and "She hides it." in screen.memory_editor.text
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")


async def test_escape_cancels_a_step_and_nothing_is_stored_while_typing_goes_on(store, server, embedder):
    server.responder = slow_writer()
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+g")
        streaming = screen.story_view.streaming
        await wait_until(pilot, lambda: len(streaming.text) > 20, what="text to stream in")
        # The UI keeps answering while the paragraph streams.
        await pilot.press(*"next idea")
        assert screen.query_one("#instruction").value == "next idea"

        await pilot.press("escape")
        await wait_for_step(pilot, screen)
        assert store.branch(story.id)[-1].id == store.get_story(story.id).head_step_id
        assert [s.paragraph for s in store.branch(story.id)] == PARAGRAPHS
        assert store.children(story.id, store.branch(story.id)[-1].id) == [], "no step was stored"
        assert shown_paragraphs(screen) == PARAGRAPHS
        assert not streaming.display
        assert screen.query_one("#instruction").value == "next idea", "the writer's words are kept"

        # The screen is not stuck: the next step runs.
        server.responder = story_responder
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: len(store.branch(story.id)) == 4, what="the next step")


async def test_escape_while_saving_waits_for_the_save_however_long_the_database_makes_it_wait(
    store, server, embedder, db_path
):
    # A `longyarn batch` on the same file holds the write lock for 6 s: the step's save waits
    # for it (up to SQLite's 10 s), and a cancel meanwhile must not report "nothing stored".
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        with database_held_by_another_process(db_path):
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: status_text(screen).startswith("Saving"), what="the save")
            await pilot.press("escape")
            await pilot.pause(6)
        await wait_for_step(pilot, screen)
        assert len(store.branch(story.id)) == 4, "the save, once begun, finished"
        assert len(shown_paragraphs(screen)) == 4 and shown_paragraphs(screen)[:3] == PARAGRAPHS
        assert not any(n.message.startswith("Cancelled; nothing was stored") for n in app._notifications)


async def test_while_a_paragraph_streams_the_footer_offers_only_what_can_come_back(store, server, embedder):
    server.responder = slow_writer()
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: screen.story_view.streaming.text, what="text to stream in")
        shown = {b.binding.id: b.enabled for b in screen.active_bindings.values() if b.binding.show}
        assert shown["cancel"] and shown["memories"] and shown["context"]
        assert shown["undo"] is False and shown["write"] is False, "greyed until the step is over"
        # No paragraph was undone and there is one version: redo and version keys would only crowd.
        assert not {"redo", "branch-previous", "branch-next"} & shown.keys()
        await pilot.press("escape")
        await wait_for_step(pilot, screen)


async def test_a_model_error_is_one_clear_notice_and_the_screen_recovers(store, server, embedder):
    server.responder = lambda request: Reply(status=401)
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await run_step(pilot, screen, *"Mara goes to the mill", "enter")

        [notice] = [n for n in pilot.app._notifications if n.severity == "error"]
        assert notice.title == "No paragraph was written"
        assert "key" in notice.message.lower() and "Traceback" not in notice.message
        assert len(store.branch(story.id)) == 3
        assert screen.query_one("#instruction").value == "Mara goes to the mill"
        assert screen.check_action("write_next", ()) is True


# ---- keep writing ---------------------------------------------------------------------


def status_text(screen: WritingScreen) -> str:
    return str(screen.query_one("#status").render())


def slow_writer_on(slow: set[int], chunk_delay_s: float):
    """Story replies, with only the writer's paragraphs numbered in `slow` (from 1) streamed slowly."""
    calls = []

    def respond(request: dict) -> Reply:
        reply = story_responder(request)
        if request.get("_role") == "writer":
            calls.append(request)
            if len(calls) in slow:
                reply.chunk_chars, reply.chunk_delay_s = 4, chunk_delay_s
        return reply

    return respond


async def start_keep_writing(pilot, count: str | None = None) -> KeepWritingDialog:
    """Press Ctrl+O and, given `count`, type it over the dialog's 5 and press Enter."""
    await pilot.press("ctrl+o")
    dialog = await wait_for_screen(pilot, KeepWritingDialog)
    if count is not None:
        await pilot.press("backspace", *count, "enter")
    return dialog


async def test_keep_writing_writes_paragraph_after_paragraph_and_undo_takes_them_back_one_by_one(
    store, server, embedder
):
    server.responder = slow_writer_on({2}, 0.02)
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        # The writer highlights the second instruction; the dialog says the run starts from it.
        screen.query_one("#instructions").focus()
        await pilot.press("down")
        dialog = await start_keep_writing(pilot)
        said = str(dialog.query_one(".dialog-text").render())
        assert said.startswith("The first paragraph follows “Tobias tells the truth about the fire.”; "
                               "each after it follows the first of the three next instructions")
        assert dialog.query_one("#count").value == "5"

        # Out of range: one sentence, and the dialog stays.
        for wrong in ("0", "101"):
            dialog.query_one("#count").value = ""
            await pilot.press(*wrong, "enter")
            await pilot.pause()
            assert app.screen is dialog
            assert str(dialog.query_one("#count-problem").render()) == (
                "Give a whole number of paragraphs from 1 to 100."
            )
        assert not server.requests, "nothing was written"
        dialog.query_one("#count").value = ""
        await pilot.press("3", "enter")
        await wait_for_screen(pilot, WritingScreen)

        # Progress shows while it runs; each paragraph is stored as it lands. Until the status
        # says the second is saving, its commit has not begun (the phases come in order).
        stored_while_writing_the_second: list[int] = []

        def writing_the_second() -> bool:
            status = status_text(screen)
            if not status.startswith("Keep writing: paragraph 2 of 3") or "saving" in status:
                return False
            stored_while_writing_the_second.append(len(store.branch(story.id)))
            return True

        await wait_until(pilot, writing_the_second, what="the second paragraph to stream")
        assert stored_while_writing_the_second == [4], "the first is stored already"
        await wait_for_step(pilot, screen)

        branch = store.branch(story.id)
        assert len(branch) == 6 and shown_paragraphs(screen) == [s.paragraph for s in branch]
        assert branch[3].instruction == "Tobias tells the truth about the fire."
        # After the first, each follows the first instruction proposed, as batch's default does.
        assert branch[4].instruction == branch[3].next_instructions[0]
        assert branch[5].instruction == branch[4].next_instructions[0]
        assert status_text(screen) == "Kept writing: 3 paragraphs written and saved."
        assert screen.check_action("write_next", ()) is True

        # Undo goes back one paragraph at a time.
        for left in (5, 4, 3):
            await history_move(pilot, screen, "ctrl+z")
            assert shown_paragraphs(screen) == [s.paragraph for s in branch[:left]]
        assert shown_paragraphs(screen) == PARAGRAPHS


async def test_escape_stops_keep_writing_and_keeps_every_paragraph_already_written(store, server, embedder):
    server.responder = slow_writer_on({3}, 0.2)
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await start_keep_writing(pilot, "5")
        streaming = screen.story_view.streaming
        # The screen says the third has started only after it has shown the second saved: on a
        # busy machine the stored row comes first.
        await wait_until(pilot, lambda: len(store.branch(story.id)) == 5
                         and status_text(screen).startswith("Keep writing: paragraph 3 of 5")
                         and len(streaming.text) > 20,
                         timeout=60, what="the third paragraph to stream")
        await pilot.press(*"Mara takes over")  # the writer types the next instruction meanwhile
        await pilot.press("escape")
        await wait_for_step(pilot, screen)

        branch = store.branch(story.id)
        assert len(branch) == 5 and store.children(story.id, branch[-1].id) == [], "the third was not stored"
        assert shown_paragraphs(screen) == [s.paragraph for s in branch]
        said = "Keep writing stopped: 2 of 5 written and saved; the one in progress was not kept."
        assert status_text(screen) == said
        assert any(n.message == said for n in app._notifications)
        assert screen.instruction_input.value == "Mara takes over", "the writer's words are kept"
        await pilot.pause(0.5)
        assert len(store.branch(story.id)) == 5, "nothing more is written"

        # The writer takes over from there.
        server.responder = story_responder
        await run_step(pilot, screen, "enter")
        assert store.branch(story.id)[-1].instruction == "Mara takes over"


async def test_a_model_error_stops_keep_writing_and_keeps_what_was_written(store, server, embedder):
    writer_calls = []

    def fails_on_the_third_paragraph(request: dict) -> Reply:
        if request.get("_role") == "writer":
            writer_calls.append(request)
            if len(writer_calls) >= 3:
                return Reply(status=401)
        return story_responder(request)

    server.responder = fails_on_the_third_paragraph
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        before = screen.step_worker
        await start_keep_writing(pilot, "5")
        await wait_until(pilot, lambda: screen.step_worker is not before, what="the run to start")
        await wait_for_step(pilot, screen)

        [notice] = [n for n in app._notifications if n.severity == "error"]
        assert notice.title == "No paragraph was written" and "Traceback" not in notice.message
        assert status_text(screen) == "Keep writing stopped: 2 of 5 written and saved; see the notice."
        branch = store.branch(story.id)
        assert len(branch) == 5 and shown_paragraphs(screen) == [s.paragraph for s in branch]
        assert len(writer_calls) == 3, "the run stopped at the error"


# ---- history --------------------------------------------------------------------------


async def test_undo_redo_retry_and_versions_never_lose_a_paragraph(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        third = store.branch(story.id)[-1]

        await history_move(pilot, screen, "ctrl+z")
        assert shown_paragraphs(screen) == PARAGRAPHS[:2]
        assert store.get_story(story.id).head_step_id == third.parent_id
        await history_move(pilot, screen, "ctrl+y")
        assert shown_paragraphs(screen) == PARAGRAPHS

        await run_step(pilot, screen, "ctrl+r")
        retried = store.branch(story.id)[-1]
        assert retried.parent_id == third.parent_id and retried.instruction == third.instruction
        assert shown_paragraphs(screen) == PARAGRAPHS[:2] + [retried.paragraph]
        assert screen.position.version == (2, 2)
        assert "version 2 of 2" in str(screen.query_one("#story-header").render())

        await history_move(pilot, screen, "alt+left")
        assert shown_paragraphs(screen) == PARAGRAPHS
        assert str(screen.query_one("#status").render()) == "Version 1 of 2."
        await history_move(pilot, screen, "alt+right")
        assert shown_paragraphs(screen)[-1] == retried.paragraph
        assert str(screen.query_one("#status").render()) == "Version 2 of 2."

        # Undo takes back each change in the order made: the switches, then the retry itself.
        await history_move(pilot, screen, "ctrl+z")
        assert store.get_story(story.id).head_step_id == third.id
        assert str(screen.query_one("#status").render()) == "Undone: the switch to version 2 of 2; ^y redoes it."
        await history_move(pilot, screen, "ctrl+z")
        assert store.get_story(story.id).head_step_id == retried.id
        await history_move(pilot, screen, "ctrl+z")
        assert store.get_story(story.id).head_step_id == third.id, "the retry undone: the first version again"
        assert {s.id for s in store.children(story.id, third.parent_id)} == {third.id, retried.id}
        # Redo brings each back in turn, and says what it redid.
        for head in (retried.id, third.id, retried.id):
            await history_move(pilot, screen, "ctrl+y")
            assert store.get_story(story.id).head_step_id == head
        assert str(screen.query_one("#status").render()) == "Redone: the switch to version 2 of 2; ^z undoes it again."
        assert not screen.check_action("redo", ())

        # With no change of this session left, undo steps back a paragraph at a time, as before.
        for _ in range(3):
            await history_move(pilot, screen, "ctrl+z")
        await history_move(pilot, screen, "ctrl+z")
        assert shown_paragraphs(screen) == PARAGRAPHS[:2]
        await history_move(pilot, screen, "ctrl+y")
        assert shown_paragraphs(screen) == PARAGRAPHS
        assert store.get_story(story.id).head_step_id == third.id


async def test_undo_waits_for_a_busy_database_while_the_writer_keeps_typing(store, server, embedder, db_path):
    story = seed_story(store, embedder, PARAGRAPHS)
    third = store.branch(story.id)[-1]
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        edited = "Mara suspects the ferryman; she keeps the key in her boot."
        with database_held_by_another_process(db_path):
            screen.memory_editor.load_text(edited)
            await pilot.press("ctrl+z")
            await pilot.press(*"the mill at night")
            assert screen.instruction_input.value == "the mill at night"
            assert screen.moving and screen.check_action("undo", ()) is None, "no second move meanwhile"
            assert store.get_story(story.id).head_step_id == third.id
        await wait_until(pilot, lambda: not screen.moving, what="the undo to be stored")
        await pilot.pause()
        # The memory edit was the newest change: it was stored, then undone, in that order.
        assert store.get_step(third.id).short_term_memory == third.short_term_memory
        assert screen.memory_editor.text == third.short_term_memory
        assert store.get_story(story.id).head_step_id == third.id
        assert shown_paragraphs(screen) == PARAGRAPHS
        assert screen.instruction_input.value == "the mill at night"
        await history_move(pilot, screen, "ctrl+y")
        assert store.get_step(third.id).short_term_memory == edited


async def test_readers_paragraphs_are_never_offered_as_the_authors_versions(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    second, third = store.branch(story.id)[1:]
    [vector] = embedder.embed(["A reader takes the key to the harbour."])
    for parent in (third.id, second.id):  # one after the author's head, one beside it
        store.commit_step(
            NewStep(
                story_id=story.id, parent_id=parent, instruction="Take the key to the harbour.",
                paragraph="A reader takes the key to the harbour.", short_term_memory="A reader's path.",
                memory_reason="", next_instructions=("a", "b", "c"), backend="openai",
                model="scripted-model", branch_owner="r1",
            ),
            embedding=vector, embedding_model=embedder.name, move_head=False,
        )
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        assert screen.check_action("redo", ()) is False
        assert screen.check_action("next_branch", ()) is False
        assert "version" not in str(screen.query_one("#story-header").render())
        await pilot.press("ctrl+y", "alt+right")
        await pilot.pause()
        assert store.get_story(story.id).head_step_id == third.id
        assert shown_paragraphs(screen) == PARAGRAPHS

        # After an undo, redo brings back the author's paragraph, not the reader's newer one.
        await history_move(pilot, screen, "ctrl+z")
        assert [step.id for step in screen.position.children] == [third.id]
        await history_move(pilot, screen, "ctrl+y")
        assert store.get_story(story.id).head_step_id == third.id
        assert shown_paragraphs(screen) == PARAGRAPHS


# ---- paragraphs and long-term memory --------------------------------------------------


async def test_editing_a_paragraph_re_embeds_it_and_deleting_one_removes_it_from_recall(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    engine = make_engine(store, server, embedder)
    app = build_app(store, engine, story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        views = screen.story_view.paragraph_views
        screen.story_view.focus()
        await pilot.press("up")  # from the newest paragraph to the one before it
        await pilot.press("e")
        editor = await wait_for_screen(pilot, ParagraphEditor)
        new_text = "A dragon named Ysolde slept under the mill, on a bed of cold ash and silver bells."
        editor.query_one("#paragraph").load_text(new_text)
        await pilot.press("ctrl+s")
        edited_id = views[1].step.id
        await wait_until(pilot, lambda: store.get_step(edited_id).paragraph == new_text, what="the edit")
        await pilot.pause()
        assert shown_paragraphs(screen)[1] == new_text
        found = await engine.search_memories_by_meaning(story.id, "a sleeping dragon", k=1)
        assert found[0].step_id == edited_id, "the memory was re-embedded with the new text"

        await pilot.click(views[0])
        await pilot.press("delete")
        await wait_for_screen(pilot, ConfirmDialog)
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: len(shown_paragraphs(screen)) == 2, what="the delete")
        assert [s.paragraph for s in store.branch(story.id)] == [new_text, PARAGRAPHS[2]]
        assert shown_paragraphs(screen) == [new_text, PARAGRAPHS[2]]
        assert store.search_memories(story.id, "last ferry") == []
        recalled = await engine.search_memories_by_meaning(story.id, "the last ferry home", k=5)
        assert all("last ferry" not in m.text for m in recalled)


async def open_paragraph_editor(pilot, screen: WritingScreen) -> ParagraphEditor:
    """Open the editor on the newest paragraph, the cursor at its end."""
    screen.story_view.focus()
    await pilot.press("e")
    editor = await wait_for_screen(pilot, ParagraphEditor)
    area = editor.query_one("#paragraph")
    area.move_cursor(area.document.end)  # where a writer adds a sentence
    return editor


async def escape_asks(pilot) -> UnsavedEditDialog:
    """Press Escape in an editing dialog holding changed words; it asks before they are lost."""
    await pilot.press("escape")
    return await wait_for_screen(pilot, UnsavedEditDialog)


async def test_escape_in_the_paragraph_editor_asks_before_an_edit_is_lost(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    third = store.branch(story.id)[-1]
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)

        # The writing screen's F1 says what Escape does in the editor.
        await pilot.press("f1")
        help_screen = await wait_for_screen(pilot, HelpScreen)
        rows = [(str(row.query_one(".help-key").render()), str(row.query_one(".help-what").render()))
                for row in help_screen.query(".help-row")]
        in_editor = [(keys, what) for keys, what in rows if what.endswith("(in the paragraph editor)")]
        assert in_editor[-2:] == [
            ("esc", "Close; if you changed the paragraph, ask first: keep editing, save or discard "
                    "(in the paragraph editor)"),
            ("^s", "Save (in the paragraph editor)"),
        ]
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)

        # Unchanged: Escape just closes.
        await open_paragraph_editor(pilot, screen)
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)

        # Changed: Escape asks, and its Escape (the default) goes back to the words.
        editor = await open_paragraph_editor(pilot, screen)
        await pilot.press(*" It was warm.")
        await escape_asks(pilot)
        await pilot.press("escape")
        assert await wait_for_screen(pilot, ParagraphEditor) is editor
        assert editor.query_one("#paragraph").text == PARAGRAPHS[2] + " It was warm."

        # Discarding leaves the paragraph as it was.
        await escape_asks(pilot)
        await pilot.click("#discard")
        await wait_for_screen(pilot, WritingScreen)
        assert store.get_step(third.id).paragraph == PARAGRAPHS[2]
        assert shown_paragraphs(screen) == PARAGRAPHS

        # Saving from the question stores the edit and closes the editor.
        await open_paragraph_editor(pilot, screen)
        await pilot.press(*" It was warm.")
        await escape_asks(pilot)
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: shown_paragraphs(screen)[-1].endswith("It was warm."), what="the edit")
        assert store.get_step(third.id).paragraph == PARAGRAPHS[2] + " It was warm."


async def test_the_paragraph_editor_keeps_an_edit_the_database_could_not_store(store, server, embedder, db_path):
    story = seed_story(store, embedder, PARAGRAPHS)
    third = store.branch(story.id)[-1]
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        editor = await open_paragraph_editor(pilot, screen)
        await pilot.press(*" It was warm.")
        with database_held_by_another_process(db_path):
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: any(n.title == "Your edit is still in the editor"
                                                for n in app._notifications), timeout=60, what="the notice")
        await pilot.pause()
        assert app.screen is editor and editor.query_one("#paragraph").text.endswith("It was warm.")
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        assert store.get_step(third.id).paragraph == PARAGRAPHS[2] + " It was warm."


async def test_quitting_from_the_paragraph_editor_keeps_the_edit(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    third = store.branch(story.id)[-1]
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await open_paragraph_editor(pilot, screen)
        await pilot.press(*" It was warm.")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")
    assert store.get_step(third.id).paragraph == PARAGRAPHS[2] + " It was warm."


async def test_escape_in_the_outline_dialog_asks_before_an_edit_is_lost(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        # Unchanged: Escape just closes.
        await pilot.press("f4")
        await wait_for_screen(pilot, OutlineDialog)
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)

        # Changed: Escape asks, and its Escape (the default) goes back to the words.
        await pilot.press("f4")
        dialog = await wait_for_screen(pilot, OutlineDialog)
        area = dialog.query_one("#outline")
        area.focus()
        area.move_cursor(area.document.end)
        await pilot.press(*" The ferry stops running in winter.")
        await escape_asks(pilot)
        await pilot.press("escape")
        assert await wait_for_screen(pilot, OutlineDialog) is dialog
        assert area.text == story.outline + " The ferry stops running in winter."

        # Discarding leaves the outline as it was.
        await escape_asks(pilot)
        await pilot.click("#discard")
        await wait_for_screen(pilot, WritingScreen)
        assert store.get_story(story.id).outline == story.outline

        # Saving from the question stores the edit.
        await pilot.press("f4")
        dialog = await wait_for_screen(pilot, OutlineDialog)
        dialog.query_one("#title").focus()
        await pilot.press("end", *" Again")
        await escape_asks(pilot)
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: store.get_story(story.id).title == "The Salt Marsh Key Again",
                         what="the title to be saved")
        assert store.get_story(story.id).outline == story.outline
        assert "The Salt Marsh Key Again" in str(screen.query_one("#story-header").render())


async def test_escape_in_the_new_story_dialog_asks_before_the_premise_is_lost(store, server, embedder):
    app = build_app(store, make_engine(store, server, embedder))
    async with app.run_test(size=(100, 30)) as pilot:
        library = await wait_for_screen(pilot, LibraryScreen)
        # Nothing typed: Escape just closes.
        await pilot.press("n")
        await wait_for_screen(pilot, NewStoryDialog)
        await pilot.press("escape")
        await wait_for_screen(pilot, LibraryScreen)

        # Typed: Escape asks, and its Escape (the default) goes back to the words.
        await pilot.press("n")
        dialog = await wait_for_screen(pilot, NewStoryDialog)
        await pilot.press(*"fable", "enter", *"A lighthouse keeper finds a door in the sea.")
        question = await escape_asks(pilot)
        assert str(question.query_one("#save", Button).label) == "Create  ^s"
        await pilot.press("escape")
        assert await wait_for_screen(pilot, NewStoryDialog) is dialog
        assert dialog.query_one("#genre").value == "fable"
        assert dialog.query_one("#premise").text == "A lighthouse keeper finds a door in the sea."

        # Discarding closes it and no story is made.
        await escape_asks(pilot)
        await pilot.click("#discard")
        assert await wait_for_screen(pilot, LibraryScreen) is library
        assert store.list_stories() == [] and not server.requests

        # Creating from the question makes the story from the words typed.
        await pilot.press("n")
        await wait_for_screen(pilot, NewStoryDialog)
        await pilot.press(*"fable", "enter", *"A lighthouse keeper finds a door in the sea.")
        await escape_asks(pilot)
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, OutlineDialog)
        [story] = store.list_stories()
        assert story.genre == "fable" and story.premise == "A lighthouse keeper finds a door in the sea."


# ---- autosave and the first run ----------------------------------------------------------


async def test_each_step_is_saved_as_it_lands(store, server, embedder, db_path):
    story = seed_story(store, embedder, PARAGRAPHS[:1])
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await run_step(pilot, screen, "ctrl+g")
        # Another connection (as after killing the terminal) already sees the step.
        other = open_store(str(db_path))
        try:
            assert len(other.branch(story.id)) == 2
        finally:
            other.close()
        assert str(screen.query_one("#status").render()).startswith("Saved.")


async def test_with_no_usable_model_the_app_explains_and_still_reads_and_exports(store, embedder, tmp_path):
    story = seed_story(store, embedder, PARAGRAPHS)
    sentence = "The bundled local model is not part of this version yet, so no model is configured."

    def no_model(settings):
        raise LongyarnError(sentence)

    app = make_app(store=store, settings=Settings(), engine_factory=no_model, keymap={})
    async with app.run_test(size=(100, 30)) as pilot:
        welcome = await wait_for_screen(pilot, WelcomeScreen)
        assert str(welcome.query_one("#welcome-problem").render()) == sentence
        assert Settings().describe_model() in str(welcome.query_one("#welcome-model").render())
        await pilot.press("enter")  # "Open settings" is the focused button
        settings = await wait_for_screen(pilot, SettingsScreen)
        assert sentence in str(settings.query_one("#settings-problem").render())
        await pilot.press("escape")

        await wait_for_screen(pilot, LibraryScreen)
        await pilot.press("enter")
        screen = await wait_for_screen(pilot, WritingScreen)
        assert shown_paragraphs(screen) == PARAGRAPHS
        assert screen.check_action("write_next", ()) is False
        await pilot.press("enter")
        assert any("F5" in (n.title or "") for n in pilot.app._notifications)
        assert len(store.branch(story.id)) == 3

        out = tmp_path / "out.md"
        await pilot.press("f6")
        await pilot.pause()
        pilot.app.screen.query_one("#path").value = str(out)
        await pilot.press("enter")
        await wait_until(pilot, out.exists, what="the export")
        assert out.read_text().startswith("# The Salt Marsh Key")
        assert PARAGRAPHS[2] in out.read_text()


async def test_a_first_run_welcome_tells_when_the_model_it_names_turns_out_unusable(store):
    sentence = "The checkpoint /models/rwkv.pth does not exist, so no model was loaded; fix the path in the settings."

    def missing_checkpoint(settings):
        raise LongyarnError(sentence)

    app = make_app(store=store, settings=Settings(), engine_factory=missing_checkpoint, keymap={}, first_run=True)
    async with app.run_test(size=(100, 30)) as pilot:
        welcome = await wait_for_screen(pilot, WelcomeScreen)
        await wait_until(pilot, lambda: welcome.query("#welcome-problem"), what="the problem")
        assert str(welcome.query_one("#welcome-problem").render()) == sentence
        assert [type(screen) for screen in pilot.app.screen_stack].count(WelcomeScreen) == 1
        assert welcome.focused is welcome.query_one("#settings")


async def test_a_first_run_with_a_model_says_which_model_it_will_use(store, server, embedder):
    app = build_app(store, make_engine(store, server, embedder), first_run=True)
    async with app.run_test(size=(100, 30)) as pilot:
        welcome = await wait_for_screen(pilot, WelcomeScreen)
        assert str(welcome.query_one("#welcome-model").render()) == Settings().describe_model()
        assert not welcome.query("#welcome-problem")
        await pilot.press("enter")  # "Continue"
        await wait_for_screen(pilot, LibraryScreen)


def test_make_app_treats_a_missing_config_file_as_the_first_run(store, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGYARN_CONFIG", str(tmp_path / "config.toml"))
    assert make_app(store=store, settings=Settings(), keymap={}).first_run
    (tmp_path / "config.toml").write_text('model = "x"\n')
    assert not make_app(store=store, settings=Settings(), keymap={}).first_run


# ---- the bundled demo model, which writes story prose only -----------------------------


def demo_engine(store, embedder) -> Engine:
    """What `longyarn write` uses with no key: the bundled demo model, which writes prose only
    (its memory and instructions come from the paragraph). Short paragraphs, for speed."""
    backend = LocalBackend.load(DEMO_MODEL_DIR, jrt_repeats=1)
    assert backend.info.prose_only
    return Engine(store, backend, embedder, EngineConfig(sampling={"writer": Sampling(max_tokens=24, seed=1)}))


class Notices:
    """Every notice the app has shown, however briefly: pass `look` to `wait_until` (which
    looks every 20 ms, far more often than a notice lasts) and none is missed."""

    def __init__(self, app: LongyarnApp) -> None:
        self.app = app
        self.seen: dict[str, str] = {}

    def look(self) -> bool:
        for notice in self.app._notifications:
            self.seen.setdefault(notice.identity, notice.message)
        return True

    def count(self, message: str) -> int:
        self.look()
        return list(self.seen.values()).count(message)


async def test_with_the_demo_model_a_new_story_does_not_say_the_model_writes_its_title(store, embedder):
    app = build_app(store, demo_engine(store, embedder))
    async with app.run_test(size=(100, 30)) as pilot:
        notices = Notices(app)
        await pilot.press("n")
        await wait_for_screen(pilot, NewStoryDialog)
        await pilot.press(*"fable", "enter", *"A fox learns to read and opens a library in the forest.")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: notices.look() and isinstance(app.screen, OutlineDialog),
                         what="the title and outline to edit")
        outline = app.screen
        assert outline.query_one("#outline").text == "A fox learns to read and opens a library in the forest."
        # Said once, and true: the premise gave the title and outline; no model wrote them.
        assert notices.count(fallbacks.PROSE_ONLY_OPENING) == 1
        assert notices.count("The model is writing a title and an outline…") == 0


async def test_with_the_demo_model_its_prose_only_notice_comes_once_not_after_every_paragraph(store, embedder):
    story = seed_story(store, embedder, PARAGRAPHS[:1])
    app = build_app(store, demo_engine(store, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        notices = Notices(app)
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.press("enter")
        await wait_until(pilot, lambda: notices.look() and len(screen.story_view.steps) == 2,
                         what="the second paragraph")
        await wait_until(pilot, lambda: notices.look() and not screen.generating, what="the step to end")

        # Keep writing names the instructions as the screen shows them: this model proposes none.
        dialog = await start_keep_writing(pilot)
        said = str(dialog.query_one(".dialog-text").render())
        assert "each after it follows the first of the three next instructions" in said
        assert "the model proposes" not in said
        await pilot.press("backspace", "2", "enter")
        # The run may be over by the time the keys are taken: wait for what it leaves.
        await wait_until(
            pilot, lambda: notices.look() and len(store.branch(story.id)) == 4 and not screen.generating,
            what="keep writing to write two paragraphs",
        )
        await pilot.pause()

        branch = store.branch(story.id)
        assert len(branch) == 4 and shown_paragraphs(screen) == [s.paragraph for s in branch]
        assert all(fallbacks.PROSE_ONLY_OUTPUTS in step.fallbacks for step in branch[1:])
        # Three paragraphs, each with the same fallback: the writer is told once.
        assert notices.count(fallbacks.PROSE_ONLY_OUTPUTS) == 1
        assert status_text(screen) == "Kept writing: 2 paragraphs written and saved."

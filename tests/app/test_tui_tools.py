"""The writers' UI around the step: memory browser, context viewer, settings, export, key
bindings, the command palette and long stories."""

from __future__ import annotations

import threading
import tomllib

from longyarn.app.settings import Settings, config_path
from longyarn.app.tui import load_keymap, make_app
from longyarn.app.ui.formatting import mask_key
from longyarn.app.tui.screens.context import NOT_RECORDED, ContextScreen
from longyarn.app.tui.screens.dialogs import ExportDialog, KeepWritingDialog
from longyarn.app.tui.screens.library import LibraryScreen
from longyarn.app.tui.screens.memory import MemoryScreen
from longyarn.app.tui.screens.settings import SettingsScreen
from longyarn.app.tui.screens.writing import WritingScreen
from longyarn.app.ui.widgets import PAGE_SIZE
from tests.app.test_tui import (
    PARAGRAPHS,
    build_app,
    history_move,
    run_step,
    seed_story,
    shown_paragraphs,
    slow_writer,
    slow_writer_on,
    start_keep_writing,
    wait_for_screen,
    wait_for_step,
    wait_until,
)
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.storage.db import open_store
from tests.conftest import make_engine
from tests.scripted_server import story_responder

MEMORIES = [
    "Far below the castle, the old dragon Ysolde guarded a hoard of silver bells.",
    "In the village bakery, Tomas kneaded rye dough before dawn and sang to the ovens.",
    "The storm tore the sails from the fishing boats and the harbour flooded.",
    "At the market, merchants argued over the price of saffron and wool.",
]


def table_rows(screen) -> list[dict[str, str]]:
    """The memory table's rows, each cell under its column's key (score, flag, from, memory...)."""
    table = screen.query_one("#memory-table")
    keys = [key.value for key in table.columns]
    return [dict(zip(keys, map(str, table.get_row_at(i)))) for i in range(table.row_count)]


def caption(screen) -> str:
    return str(screen.query_one("#memory-caption").render())


async def open_memory_browser(pilot) -> MemoryScreen:
    """Press F2 and wait until the browser shows what it read from the store."""
    await pilot.press("f2")
    browser = await wait_for_screen(pilot, MemoryScreen)
    await wait_until(pilot, lambda: caption(browser) and not caption(browser).startswith("Reading"),
                     what="the memories to load")
    await pilot.pause()
    return browser


async def test_the_memory_browser_searches_by_words_and_meaning_and_pins_and_excludes(store, server, embedder):
    story = seed_story(store, embedder, MEMORIES)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        browser = await open_memory_browser(pilot)
        # The newest paragraph was stored without its context: a notice, and every memory listed.
        assert str(browser.query_one("#memory-notice").render()) == NOT_RECORDED
        assert [row["from"] for row in table_rows(browser)] == ["1", "2", "3", "4"]

        browser.query_one("#memory-query").value = "saffron"
        browser.query_one("#memory-query").focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(table_rows(browser)) == 1, what="the word search")
        assert "saffron" in table_rows(browser)[0]["memory"]
        assert not browser.query_one("#memory-notice").display, "the notice was about the paragraph"

        await pilot.click("#meaning")
        browser.query_one("#memory-query").value = "a sleeping dragon and its treasure"
        browser.query_one("#memory-query").focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: table_rows(browser)[0]["score"] != "—", what="the meaning search")
        rows = table_rows(browser)
        assert "dragon" in rows[0]["memory"] and rows[0]["from"] == "1"
        scores = [float(row["score"]) for row in rows]
        assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]

        dragon = store.search_memories(story.id, "dragon")[0]
        await pilot.press("p")  # pin the dragon
        await wait_until(pilot, lambda: table_rows(browser)[0]["flag"] == "★ pinned", what="the pin")
        assert store.search_memories(story.id, "dragon")[0].pinned
        browser.query_one("#memory-table").move_cursor(row=1)
        excluded_text = browser.selected_row().text  # the table shows an excerpt; this is the whole
        await pilot.press("x")
        await wait_until(pilot, lambda: table_rows(browser)[1]["flag"] == "excluded", what="the exclusion")
        [excluded] = [m for m in store.search_memories(story.id, "") if m.text == excluded_text]
        assert excluded.excluded

        # The next step recalls the pinned memory whatever its score, and never the excluded one.
        await pilot.press("escape")
        screen = await wait_for_screen(pilot, WritingScreen)
        await run_step(pilot, screen, *"The market closes for the winter.", "enter")
        recalled = {m.memory_id: m for m in screen.last_started.recalled}
        assert recalled[dragon.id].pinned
        assert excluded.id not in recalled

        # F2 now opens on what the new paragraph (the fifth) recalled.
        browser = await open_memory_browser(pilot)
        assert caption(browser).startswith(f"Paragraph 5 recalled {len(recalled)} memor")
        # Keyed by memory: the table shows excerpts cut to its width.
        shown = {row.memory_id: cells for row, cells in zip(browser.rows, table_rows(browser))}
        assert len(shown) == len(recalled)
        for memory in recalled.values():
            assert shown[memory.memory_id]["score"] == f"{memory.score:.2f}"
            assert shown[memory.memory_id]["recall"] == ("★ pinned" if memory.pinned else "by score")


def assert_browser_shows_recall(browser: MemoryScreen, recalled, store, branch: list[str]) -> None:
    """The browser lists exactly `recalled`, in order: score, whether it was pinned, the number
    of the paragraph it came from and an excerpt of that paragraph."""
    rows = table_rows(browser)
    assert len(rows) == len(recalled)
    for row, memory in zip(rows, recalled):
        assert row["score"] == f"{memory.score:.2f}"
        assert row["recall"] == ("★ pinned" if memory.pinned else "by score")
        assert row["from"] == str(branch.index(memory.step_id) + 1)
        paragraph = " ".join(store.get_step(memory.step_id).paragraph.split())
        excerpt = row["memory"]
        assert excerpt == paragraph or (excerpt.endswith("…") and paragraph.startswith(excerpt[:-1]))
        assert len(excerpt) <= 120


async def test_the_memory_browser_shows_what_the_selected_paragraph_recalled_after_a_restart(
    store, server, embedder, db_path
):
    story = seed_story(store, embedder, PARAGRAPHS)
    first_memory = store.memory_for_step(store.branch(story.id)[0].id)
    store.set_memory_flags(first_memory.id, pinned=True)
    engine = make_engine(store, server, embedder)
    async with build_app(store, engine, story_id=story.id).run_test(size=(110, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        for instruction in ("Mara goes down to the harbour at dawn.", "The ferryman refuses the brass key."):
            await run_step(pilot, screen, *instruction, "enter")

        # While a paragraph is being written, F2 shows what its writer was given to recall.
        server.responder = slow_writer(0.02)
        await pilot.press(*"Tobias burns the ledger.", "enter")
        await wait_until(pilot, lambda: screen.story_view.streaming.text, what="text to stream in")
        browser = await open_memory_browser(pilot)
        started = screen.last_started
        assert caption(browser).startswith(f"The paragraph being written recalled {len(started.recalled)} ")
        assert [row["score"] for row in table_rows(browser)] == [f"{m.score:.2f}" for m in started.recalled]
        await pilot.press("escape")
        await wait_for_step(pilot, screen)

    branch = store.branch_step_ids(story.id)
    assert len(branch) == 6
    reopened = open_store(str(db_path))
    try:
        async with build_app(reopened, story_id=story.id).run_test(size=(110, 40)) as pilot:
            await pilot.press("escape")  # the "no model" notice
            screen = await wait_for_screen(pilot, WritingScreen)
            screen.story_view.focus()
            await pilot.press("up")  # from the newest paragraph to the fifth
            browser = await open_memory_browser(pilot)
            recalled = reopened.step_context(branch[4]).recalled
            assert recalled and any(m.pinned for m in recalled) and any(not m.pinned for m in recalled)
            assert caption(browser).startswith(f"Paragraph 5 recalled {len(recalled)} memories")
            assert_browser_shows_recall(browser, recalled, reopened, branch)

            # Unpin the first paragraph's memory from here: it was pinned then, and is not now.
            pinned_row = next(i for i, m in enumerate(recalled) if m.memory_id == first_memory.id)
            assert table_rows(browser)[pinned_row]["flag"] == "★ pinned"
            browser.query_one("#memory-table").move_cursor(row=pinned_row)
            await pilot.press("p")
            await wait_until(pilot, lambda: table_rows(browser)[pinned_row]["flag"] == "", what="the unpin")
            assert table_rows(browser)[pinned_row]["recall"] == "★ pinned"
            assert not reopened.memory_for_step(branch[0]).pinned

            # A search replaces the list; r brings the paragraph's recall back, flags as they are now.
            browser.query_one("#memory-query").value = "ledger"
            browser.query_one("#memory-query").focus()
            await pilot.press("enter")
            await wait_until(pilot, lambda: "recall" not in (table_rows(browser) or [{}])[0], what="the search")
            browser.query_one("#memory-table").focus()
            await pilot.press("r")
            await pilot.pause()
            assert_browser_shows_recall(browser, recalled, reopened, branch)
            assert table_rows(browser)[pinned_row]["flag"] == ""

            # Another paragraph shows its own recall.
            await pilot.press("escape", "down")
            browser = await open_memory_browser(pilot)
            recalled_sixth = reopened.step_context(branch[5]).recalled
            assert caption(browser).startswith(f"Paragraph 6 recalled {len(recalled_sixth)} memor")
            assert_browser_shows_recall(browser, recalled_sixth, reopened, branch)
            assert any(row["memory"].endswith("…") for row in table_rows(browser)), "long ones are cut"

            # A paragraph written before step contexts were recorded says so, and lists every memory.
            await pilot.press("escape", "up", "up", "up", "up")
            browser = await open_memory_browser(pilot)
            notice = browser.query_one("#memory-notice")
            assert notice.display and str(notice.render()) == NOT_RECORDED
            assert len(table_rows(browser)) == 6 and "recall" not in table_rows(browser)[0]
            assert str(browser.query_one(".screen-title").render()) == "Long-term memory · paragraph 2"
    finally:
        reopened.close()


async def test_the_memory_browser_fits_its_width_and_shows_the_whole_memory_below(store, server, embedder):
    long_memory = " ".join(["The ferryman counted the bells of the drowned chapel, one for every year."] * 3)
    story = seed_story(store, embedder, [*PARAGRAPHS, long_memory])
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        for size in ((80, 24), (100, 30), (160, 50)):
            await pilot.resize_terminal(*size)
            browser = await open_memory_browser(pilot)
            await pilot.pause()
            table = browser.query_one("#memory-table")
            # No sideways scrolling: every column, the memory's excerpt too, is in view.
            assert table.virtual_size.width <= table.scrollable_content_region.width, size
            assert table.max_scroll_x == 0, size
            table.move_cursor(row=3)
            await pilot.pause()
            excerpt = table_rows(browser)[3]["memory"]
            assert excerpt.endswith("…") and long_memory.startswith(excerpt[:-1].rstrip()), size
            assert long_memory in " ".join(str(browser.query_one("#memory-text").render()).split())
            await pilot.press("escape")
            await pilot.pause()


async def open_context_viewer(pilot) -> ContextScreen:
    """Press F3 and wait until the viewer shows what it read from the store."""
    await pilot.press("f3")
    viewer = await wait_for_screen(pilot, ContextScreen)
    await wait_until(pilot, lambda: not viewer.query("#context-loading"), what="the context to load")
    await pilot.pause()
    return viewer


def assert_viewer_shows(viewer: ContextScreen, started) -> None:
    """The viewer shows exactly what the step's writer was given: instruction, recall, sections."""
    titles = [str(label.render()) for label in viewer.query(".section-title")]
    texts = [str(text.render()) for text in viewer.query(".section-text")]
    assert titles[0] == "Instruction" and texts[0] == started.instruction
    assert len(titles) == len(started.context) + 1
    for section, title, text in zip(started.context, titles[1:], texts[1:]):
        assert title.startswith(f"{section.name} · {section.tokens:,} tokens")
        assert ("trimmed" in title) == bool(section.trimmed_chars)
        assert "edited since" not in title
        assert text == (section.text or "(empty)")
    recalled = [str(line.render()) for line in viewer.query(".recalled-memory")]
    assert len(recalled) == len(started.recalled)
    for line, memory in zip(recalled, started.recalled):
        assert line.split()[0] == f"{memory.score:.2f}"
    summary = str(viewer.query_one("#context-summary").render())
    assert f"{sum(s.tokens for s in started.context):,} tokens" in summary


async def test_the_context_viewer_shows_each_section_its_tokens_and_what_was_trimmed(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    engine = make_engine(store, server, embedder, context_budget_tokens=620)
    app = build_app(store, engine, story_id=story.id)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        viewer = await open_context_viewer(pilot)
        # Paragraphs stored without a recorded context (as before version 0.2) say so in one line.
        assert str(viewer.query_one(".screen-title").render()) == "Context of paragraph 3"
        notice = str(viewer.query_one("#context-not-recorded").render())
        assert notice.startswith("Not recorded for paragraphs written before longyarn 0.2")
        await pilot.press("escape")

        await run_step(pilot, screen, "ctrl+g")
        sections = screen.last_started.context
        assert any(section.trimmed_chars for section in sections), "the small budget forces a trim"
        viewer = await open_context_viewer(pilot)
        assert str(viewer.query_one(".screen-title").render()) == "Context of paragraph 4"
        assert_viewer_shows(viewer, screen.last_started)
        assert "trimmed to fit" in str(viewer.query_one("#context-summary").render())
        await pilot.press("escape")

        # While a paragraph is being written, F3 shows what its writer is being given.
        server.responder = slow_writer(0.02)
        await pilot.press(*"The ferry is late.", "enter")
        await wait_until(pilot, lambda: screen.story_view.streaming.text, what="text to stream in")
        viewer = await open_context_viewer(pilot)
        assert str(viewer.query_one(".screen-title").render()) == "Context of the paragraph being written"
        assert_viewer_shows(viewer, screen.last_started)
        assert screen.last_started.instruction == "The ferry is late."
        await pilot.press("escape")
        await wait_for_step(pilot, screen)
        assert len(store.branch(story.id)) == 5


async def test_the_context_of_any_paragraph_shows_after_a_restart_without_a_model(store, server, embedder, db_path):
    story = seed_story(store, embedder, PARAGRAPHS)
    engine = make_engine(store, server, embedder, context_budget_tokens=900)
    started_by_step = {}
    async with build_app(store, engine, story_id=story.id).run_test(size=(100, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        for instruction in ("Mara goes down to the harbour at dawn.", "The ferryman refuses the brass key."):
            await run_step(pilot, screen, *instruction, "enter")
            started_by_step[screen.position.head.id] = screen.last_started
    fourth, fifth = started_by_step
    assert started_by_step[fifth].recalled, "the later step recalled memories"

    reopened = open_store(str(db_path))
    try:
        async with build_app(reopened, story_id=story.id).run_test(size=(100, 40)) as pilot:
            await pilot.press("escape")  # the "no model" notice
            screen = await wait_for_screen(pilot, WritingScreen)
            screen.story_view.focus()
            await pilot.press("up")  # from the newest paragraph to the one before it
            viewer = await open_context_viewer(pilot)
            assert str(viewer.query_one(".screen-title").render()) == "Context of paragraph 4"
            assert_viewer_shows(viewer, started_by_step[fourth])

            await pilot.press("escape", "down")
            viewer = await open_context_viewer(pilot)
            assert str(viewer.query_one(".screen-title").render()) == "Context of paragraph 5"
            assert_viewer_shows(viewer, started_by_step[fifth])

            await pilot.press("escape", "up", "up")
            viewer = await open_context_viewer(pilot)
            assert str(viewer.query_one(".screen-title").render()) == "Context of paragraph 3"
            assert viewer.query("#context-not-recorded") and not viewer.query(".section-title")
    finally:
        reopened.close()


async def test_settings_are_saved_to_the_config_file_and_the_key_only_when_asked(store, server, embedder):
    engine = make_engine(store, server, embedder)
    app = build_app(store, engine)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("f5")
        form = await wait_for_screen(pilot, SettingsScreen)
        form.query_one("#backend").value = "openai"
        form.query_one("#model").value = "my-model"
        form.query_one("#base-url").value = "http://127.0.0.1:9/v1"
        form.query_one("#api-key").value = "sk-test-1234567890abcd"
        form.query_one("#recall-k").value = "5"
        form.query_one("#writer-temperature").value = "0.4"
        form.query_one("#jrt").value = False
        await pilot.press("ctrl+s")
        await pilot.pause()

        saved = tomllib.loads(config_path().read_text())
        assert saved["model"] == "my-model" and saved["base_url"] == "http://127.0.0.1:9/v1"
        assert saved["recall_k"] == 5
        assert "jrt_repeats" not in saved and "jrt_server" not in saved, "JRT stays off for servers: the default"
        assert saved["sampling"]["writer"]["temperature"] == 0.4
        assert "api_key" not in saved, "the key stays in this session unless asked"
        assert "sk-test-1234567890abcd" not in config_path().read_text()
        assert pilot.app.settings.api_key.get_secret_value() == "sk-test-1234567890abcd"
        assert engine.config.recall_k == 5 and engine.config.sampling["writer"].temperature == 0.4
        assert Settings().model == "my-model", "a restart reads the saved settings"

        await pilot.press("f5")
        form = await wait_for_screen(pilot, SettingsScreen)
        key_input = form.query_one("#api-key")
        assert key_input.value == "" and key_input.placeholder.startswith("kept: sk-…abcd")
        assert "1234567890" not in key_input.placeholder
        await pilot.click("#save-key")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert tomllib.loads(config_path().read_text())["api_key"] == "sk-test-1234567890abcd"

        await pilot.press("f5")
        form = await wait_for_screen(pilot, SettingsScreen)
        form.query_one("#recall-k").value = "500"
        await pilot.press("ctrl+s")
        await pilot.pause()
        [error] = [n for n in pilot.app._notifications if n.severity == "error"]
        assert "recall_k" in error.message and "nothing was saved" in error.message
        assert tomllib.loads(config_path().read_text())["recall_k"] == 5


def test_a_key_is_shown_only_by_its_prefix_and_last_four_characters():
    assert mask_key("sk-proj-abcdefghijklmnop") == "sk-…mnop"
    assert "abcdefgh" not in mask_key("abcdefghijklmnop")
    assert mask_key(None) == ""


async def test_f6_exports_even_while_the_short_term_memory_is_being_edited(store, embedder, server):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        screen.memory_editor.focus()
        await pilot.pause()
        await pilot.press("f6")
        await wait_for_screen(pilot, ExportDialog)


async def test_export_writes_markdown_or_plain_text_to_the_chosen_path(store, embedder, server, tmp_path):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f6")
        await pilot.pause()
        dialog = pilot.app.screen
        assert dialog.query_one("#path").value.endswith("the-salt-marsh-key.md")
        await pilot.click("#txt")
        assert dialog.query_one("#path").value.endswith("the-salt-marsh-key.txt")
        target = tmp_path / "exports" / "marsh.txt"
        dialog.query_one("#path").value = str(target)
        dialog.query_one("#path").focus()
        await pilot.press("enter")
        await wait_until(pilot, target.exists, what="the export")
        text = target.read_text()
        assert text.startswith("THE SALT MARSH KEY\n")
        assert "brass key wrapped in a page torn" in text

        # A path that cannot be written: a notice, and nothing is left behind.
        await pilot.press("f6")
        dialog = await wait_for_screen(pilot, ExportDialog)
        dialog.query_one("#path").value = str(target / "inside-a-file.txt")
        dialog.query_one("#path").focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(n.title == "Not exported" for n in pilot.app._notifications),
                         what="the notice")
        assert target.read_text() == text


async def test_key_bindings_follow_the_keymap_and_the_footer_shows_them(store, server, embedder, tmp_path):
    # The [keymap] table of a config file (read on its own: see load_keymap).
    config = tmp_path / "config.toml"
    config.write_text('model = "m"\n\n[keymap]\nundo = "ctrl+b"\nmemories = "f9"\n')
    keymap = load_keymap(config)
    assert keymap == {"undo": "ctrl+b", "memories": "f9"}
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id, keymap=keymap)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        footer_keys = {b.binding.id: b.binding.key for b in screen.active_bindings.values() if b.binding.id}
        assert footer_keys["undo"] == "ctrl+b" and footer_keys["memories"] == "f9"
        await history_move(pilot, screen, "ctrl+b")
        assert shown_paragraphs(screen) == PARAGRAPHS[:2]
        await pilot.press("f9")
        await wait_for_screen(pilot, MemoryScreen)


async def test_the_command_palette_runs_any_action_that_can_run_now(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"undo")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(shown_paragraphs(screen)) == 2, what="undo from the palette")
        assert store.get_story(story.id).head_step_id == store.branch(story.id)[-1].id

        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"context")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for_screen(pilot, ContextScreen)
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)

        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"keep writing")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for_screen(pilot, KeepWritingDialog)


async def test_f1_shows_every_key_even_those_the_footer_has_no_room_for(store, server, embedder):
    from longyarn.app.tui.screens.help import HelpScreen

    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id, keymap={"undo": "ctrl+b"})
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        footer = screen.query_one("KeysFooter")
        help_key = next(key for key in footer.query("FooterKey") if key.action == "help")
        # Under load the screen can be shown a frame before its footer is laid out.
        await wait_until(pilot, lambda: help_key.region.width > 0, what="the footer's layout")
        # Docked at the right edge: a narrow terminal cuts other keys, never this one.
        assert help_key.region.right == 80 and help_key.region.y == 23
        # A key with no room is hidden whole, never shown in part beside F1.
        shown = [key for key in footer.query("FooterKey") if key.display and key is not help_key]
        assert all(key.region.right <= help_key.region.x for key in shown)
        assert "keep_writing" not in {key.action for key in shown}, "at 80 columns it gives way to the others"
        await pilot.press("f1")
        help_screen = await wait_for_screen(pilot, HelpScreen)
        rows = dict(
            (str(row.query_one(".help-key").render()), str(row.query_one(".help-what").render()))
            for row in help_screen.query(".help-row")
        )
        assert rows["^b"] == "Undo", "the writer's keymap"
        assert rows["f4"] == "Outline" and rows["f6"] == "Export", "keys the footer does not show"
        assert rows["^o"] == "Keep writing: several paragraphs one after another; Escape stops"
        assert rows["e"] == "Edit paragraph (in the story)"
        assert rows["2"] == "Take the second instruction (in the instructions)"
        assert "^p" in rows and "^q" in rows
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)


async def test_the_command_palette_lists_the_writers_commands_not_text_editing_keys(store, server, embedder):
    from textual.command import CommandList

    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        assert app.focused is screen.instruction_input
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: app.screen.query(CommandList) and app.screen.query_one(CommandList).option_count,
                         what="the palette's commands")
        await pilot.pause(0.3)
        commands = app.screen.query_one(CommandList)
        titles = [str(commands.get_option_at_index(i).prompt).split("\n")[0] for i in range(commands.option_count)]
        assert {"Write", "Keep writing", "Undo", "Memory", "Context", "Outline", "Export", "Library"} <= set(titles)
        assert not [title for title in titles if "character" in title or "selected text" in title], titles


async def test_a_long_story_opens_with_its_last_page_and_loads_earlier_paragraphs_on_scrolling_up(store, embedder):
    count = PAGE_SIZE * 2 + 10
    paragraphs = [f"Paragraph {n}: the tide came in and went out again, as it always had." for n in range(count)]
    story = seed_story(store, embedder, paragraphs)
    app = build_app(store, story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("escape")  # the "no model" notice
        screen = await wait_for_screen(pilot, WritingScreen)
        view = screen.story_view
        assert shown_paragraphs(screen) == paragraphs[-PAGE_SIZE:]
        assert view.max_scroll_y > 0 and view.scroll_y == view.max_scroll_y, "it opens at the end"
        assert str(view.earlier.render()).startswith(f"▲ {count - PAGE_SIZE} paragraphs before this")

        view.scroll_home(animate=False)
        await wait_until(pilot, lambda: len(view.paragraph_views) == 2 * PAGE_SIZE, what="the earlier page")
        await pilot.pause()
        assert view.scroll_y > 0, "the view stays on the paragraph the writer was reading"
        view.scroll_home(animate=False)
        await wait_until(pilot, lambda: len(view.paragraph_views) == count, what="the first page")
        assert shown_paragraphs(screen) == paragraphs
        assert not view.earlier.display


def app_switching_models(store, server, embedder, story_id: str, refused: dict[str, str] | None = None):
    """An app on the scripted server's "first-model" that builds a real engine for whatever
    model the settings name, refusing the models in `refused` with their sentences."""
    from longyarn.app.models import make_backend
    from longyarn.recurrent_core.engine import Engine

    def build_engine(settings: Settings) -> Engine:
        if settings.model in (refused or {}):
            raise LongyarnError(refused[settings.model])
        return Engine(store, make_backend(settings), embedder, settings.engine_config())

    settings = Settings(base_url=server.base_url, model="first-model")
    return make_app(store=store, settings=settings, engine_factory=build_engine, story_id=story_id,
                    keymap={}, first_run=False)


async def save_model_in_settings(pilot, model: str) -> SettingsScreen:
    """Open the settings (F5), name `model` and save; returns the settings screen."""
    await pilot.press("f5")
    form = await wait_for_screen(pilot, SettingsScreen)
    form.query_one("#model").value = model
    await pilot.press("ctrl+s")
    return form


async def test_saved_settings_rebuild_the_engine_so_the_next_step_uses_the_new_model(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    sentence = "No model named 'missing-model' on the server; nothing was written; pick another model."
    app = app_switching_models(store, server, embedder, story.id, refused={"missing-model": sentence})
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: pilot.app.engine is not None, what="the first model")
        first_engine = pilot.app.engine
        await save_model_in_settings(pilot, "second-model")
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: screen.check_action("write_next", ()), what="the new model")
        assert pilot.app.engine is not first_engine
        await run_step(pilot, screen, "ctrl+g")
        assert server.requests[-1]["model"] == "second-model"
        assert store.branch(story.id)[-1].model == "second-model"

        # A model that cannot be used: one clear notice, and the settings stay open to fix it.
        form = await save_model_in_settings(pilot, "missing-model")
        await wait_until(pilot, lambda: form.query("#settings-problem"), what="the problem")
        assert str(form.query_one("#settings-problem").render()) == sentence
        assert any(n.message == sentence and "F5" in (n.title or "") for n in pilot.app._notifications)
        assert pilot.app.screen is form and pilot.app.engine is None


async def test_the_model_loads_in_the_background_while_the_stories_stay_usable(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    weights_read = threading.Event()

    def slow_engine(settings: Settings):
        weights_read.wait(10)  # as when a local checkpoint is read from a slow disk
        return make_engine(store, server, embedder)

    app = make_app(store=store, settings=Settings(), engine_factory=slow_engine, keymap={}, first_run=False)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            library = await wait_for_screen(pilot, LibraryScreen)
            assert str(library.query_one("#library-model").render()).startswith("Loading the model…")
            await pilot.press("n")  # too early to write: said so, nothing breaks
            assert any(n.title == "Loading the model…" for n in pilot.app._notifications)
            await pilot.press("enter")
            screen = await wait_for_screen(pilot, WritingScreen)
            assert shown_paragraphs(screen) == PARAGRAPHS
            assert not screen.check_action("write_next", ())

            weights_read.set()
            await wait_until(pilot, lambda: screen.check_action("write_next", ()), what="the model")
            await run_step(pilot, screen, "ctrl+g")
            assert len(store.branch(story.id)) == 4
            await pilot.press("ctrl+l")
            library = await wait_for_screen(pilot, LibraryScreen)
            assert str(library.query_one("#library-model").render()) == Settings().describe_model()
    finally:
        weights_read.set()


async def test_settings_saved_while_a_paragraph_streams_apply_from_the_next_step(store, server, embedder):
    server.responder = slow_writer()
    story = seed_story(store, embedder, PARAGRAPHS)
    app = app_switching_models(store, server, embedder, story.id)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: pilot.app.engine is not None, what="the first model")
        first_engine = pilot.app.engine
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: len(screen.story_view.streaming.text) > 20, what="text to stream in")

        await save_model_in_settings(pilot, "second-model")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: pilot.app.engine not in (None, first_engine), what="the new model")
        assert screen.generating, "the paragraph is still being written"
        assert not first_engine.backend._client.is_closed(), "the step's connection stays open"
        [notice] = [n for n in pilot.app._notifications if n.title == "Settings apply from the next paragraph"]
        assert "first-model" in notice.message

        await wait_for_step(pilot, screen)
        branch = store.branch(story.id)
        assert len(branch) == 4 and shown_paragraphs(screen) == [s.paragraph for s in branch]
        assert branch[-1].model == "first-model"
        assert {r["model"] for r in server.requests} == {"first-model"}, "memory and plans too"
        assert not [n for n in pilot.app._notifications if n.severity == "error"]
        assert first_engine.backend._client.is_closed(), "the old model's client is closed once unused"

        server.responder = story_responder
        await run_step(pilot, screen, "ctrl+g")
        assert store.branch(story.id)[-1].model == "second-model"
        assert server.requests[-1]["model"] == "second-model"


async def test_sampling_saved_mid_step_leaves_that_step_as_it_began(store, server, embedder):
    server.responder = slow_writer()
    story = seed_story(store, embedder, PARAGRAPHS)
    engine = make_engine(store, server, embedder)
    app = build_app(store, engine, story_id=story.id)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: len(screen.story_view.streaming.text) > 20, what="text to stream in")
        await pilot.press("f5")
        form = await wait_for_screen(pilot, SettingsScreen)
        form.query_one("#memory-temperature").value = "0.05"
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        await wait_for_step(pilot, screen)
        assert len(store.branch(story.id)) == 4
        memory_requests = [r for r in server.requests if r["_role"] == "memory"]
        assert [r["temperature"] for r in memory_requests] == [0.3], "the running step kept its sampling"

        server.responder = story_responder
        await run_step(pilot, screen, "ctrl+g")
        assert [r for r in server.requests if r["_role"] == "memory"][-1]["temperature"] == 0.05


async def test_settings_saved_while_keeping_writing_apply_from_the_next_paragraph(store, server, embedder):
    server.responder = slow_writer_on({1}, 0.05)
    story = seed_story(store, embedder, PARAGRAPHS)
    app = app_switching_models(store, server, embedder, story.id)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: pilot.app.engine is not None, what="the first model")
        await start_keep_writing(pilot, "3")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: len(screen.story_view.streaming.text) > 20, what="text to stream in")

        await save_model_in_settings(pilot, "second-model")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: len(store.branch(story.id)) == 6, timeout=60, what="the whole run")
        await wait_for_step(pilot, screen)
        assert [s.model for s in store.branch(story.id)[3:]] == ["first-model", "second-model", "second-model"]
        assert str(screen.query_one("#status").render()) == "Kept writing: 3 paragraphs written and saved."
        assert not [n for n in pilot.app._notifications if n.severity == "error"]

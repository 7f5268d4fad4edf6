"""Defects found using the writers' desk (issue 13): each test failed before its fix.

Pilot drives the real app against the scripted server, whose log says what each prompt held.
"""

from __future__ import annotations

import tomllib

from longyarn.app.settings import Settings, config_path
from longyarn.app.tui import make_app
from longyarn.app.tui.screens.settings import SettingsScreen
from longyarn.app.tui.screens.writing import WritingScreen
from tests.app.test_tui import (
    PARAGRAPHS, build_app, history_move, run_step, seed_story, shown_paragraphs, wait_for_screen, wait_until,
)
from tests.app.test_tui_tools import app_switching_models
from tests.conftest import make_engine
from tests.scripted_server import Reply, ScriptedServer, prompt_tokens


def writer_prompts(server) -> list[str]:
    return [r["messages"][-1]["content"] for r in server.requests if r["_role"] == "writer"]


# ---- 1. JRT belongs to recurrent models: saving settings never turns it on for a server ----


async def test_saving_settings_untouched_keeps_a_server_prompt_read_once(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = app_switching_models(store, server, embedder, story.id)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: pilot.app.engine is not None, what="the model")
        await run_step(pilot, screen, "ctrl+g")
        before = writer_prompts(server)[-1]
        assert before.count("## Short-term memory") == 1

        await pilot.press("f5")
        form = await wait_for_screen(pilot, SettingsScreen)
        assert form.query_one("#jrt").value is False, "the switch shows the value in force: off for a server"
        await pilot.press("ctrl+s")
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: screen.check_action("write_next", ()), what="the model again")
        saved = tomllib.loads(config_path().read_text())
        assert not saved.get("jrt_server") and saved.get("jrt_repeats") in (None, 1)

        await run_step(pilot, screen, "ctrl+g")
        after = writer_prompts(server)[-1]
        assert after.count("## Short-term memory") == 1, "the context is sent once, as before saving"
        assert len(after) < 1.5 * len(before)


async def test_the_jrt_switch_is_per_kind_of_model_on_for_local_and_off_for_servers(store, server):
    app = make_app(store=store, settings=Settings(backend="local"), engine=None, keymap={}, first_run=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("escape")  # the "no model" notice
        await pilot.press("f5")
        form = await wait_for_screen(pilot, SettingsScreen)
        switch = form.query_one("#jrt")
        assert switch.value is True, "a local recurrent model reads its context twice by default"
        form.query_one("#backend").value = "openai"
        await pilot.pause()
        assert switch.value is False, "a server does not, unless the writer turns it on"
        switch.value = True  # the writer turns it on for servers
        form.query_one("#base-url").value = server.base_url
        await pilot.press("ctrl+s")
        await pilot.pause()
        saved = tomllib.loads(config_path().read_text())
        assert saved["jrt_server"] is True and "jrt_local" not in saved
        settings = Settings()
        assert settings.jrt_repeats_for("openai") == 2 and settings.jrt_repeats_for("local") == 2


def test_a_config_saved_with_jrt_repeats_by_an_earlier_version_no_longer_doubles_a_servers_prompts():
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('base_url = "http://127.0.0.1:9/v1"\njrt_repeats = 2\n')  # what the old Save wrote
    settings = Settings()
    assert settings.jrt_repeats_for("openai") == 1 and settings.jrt_repeats_for("local") == 2
    path.write_text("jrt_repeats = 1\n")  # a writer who had turned it off for the local model
    assert Settings().jrt_repeats_for("local") == 1


# ---- 2. The context budget: a long premise never crowds the outline out; trims are shown ----

LONG_PREMISE = "A lighthouse keeper finds a door in the sea, and behind it a drowned city. " * 1400


async def test_a_long_premise_leaves_the_outline_in_the_prompt_and_the_viewer_shows_the_trim(store, embedder):
    from longyarn.app.tui.screens.context import ContextScreen
    from longyarn.app.tui.screens.dialogs import OutlineDialog

    async with ScriptedServer(context_tokens=3000 + 900) as server:
        story = seed_story(store, embedder, PARAGRAPHS)
        store.update_story(story.id, premise=LONG_PREMISE)
        app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
        async with app.run_test(size=(100, 40)) as pilot:
            screen = await wait_for_screen(pilot, WritingScreen)
            await pilot.press("f4")
            outline = await wait_for_screen(pilot, OutlineDialog)
            outline.query_one("#outline").load_text("The door opens only at the lowest tide of the year.")
            await pilot.press("ctrl+s")
            screen = await wait_for_screen(pilot, WritingScreen)
            await wait_until(pilot, lambda: "only at the lowest tide" in store.get_story(story.id).outline,
                             what="the outline")
            await run_step(pilot, screen, "ctrl+g")
            writer = [r for r in server.requests if r["_role"] == "writer"][-1]
            assert "## Outline\nThe door opens only at the lowest tide of the year." in writer["messages"][-1]["content"]
            assert server.over_context == 0
            assert all(prompt_tokens(r) <= 3000 for r in server.requests)

            await pilot.press("f3")
            viewer = await wait_for_screen(pilot, ContextScreen)
            await wait_until(pilot, lambda: not viewer.query("#context-loading"), what="the context")
            titles = [str(label.render()) for label in viewer.query(".section-title")]
            assert any(t.startswith("Story frame") and "trimmed" in t for t in titles), titles
            assert not any(t.startswith("Outline") and "trimmed" in t for t in titles), titles
            summary = str(viewer.query_one("#context-summary").render())
            assert "of the 3,000-token budget" in summary and "trimmed to fit" in summary
            elsewhere = str(viewer.query_one("#context-trimmed-elsewhere").render())
            assert "the planner's story frame by" in elsewhere, elsewhere


async def test_a_long_outline_is_met_with_a_warning_and_can_be_summarised(store, server, embedder):
    from longyarn.app.tui.screens.dialogs import OutlineDialog
    from longyarn.app.tui.screens.long_note import LongNoteDialog

    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    long_outline = "Part one: Mara comes home to the salt marsh and the village that lies to her. " * 120
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f4")
        dialog = await wait_for_screen(pilot, OutlineDialog)
        dialog.query_one("#outline").load_text(long_outline)
        await pilot.press("ctrl+s")
        warning = await wait_for_screen(pilot, LongNoteDialog)
        assert "room for about 750 tokens" in str(warning.query_one("#long-note-warning").render())
        server.enqueue(Reply("Mara comes home to a village that lies to her, finds a key, and learns who burned the mill."))
        await pilot.press("ctrl+s")  # summarise
        await wait_until(pilot, lambda: dialog.query_one("#outline").text.startswith("Mara comes home"),
                         what="the summary in the editor")
        summary_request = [r for r in server.requests if r["_role"] == "summary"][-1]
        assert "Part one: Mara comes home" in summary_request["messages"][-1]["content"]
        assert store.get_story(story.id).outline != dialog.query_one("#outline").text, "nothing saved yet"
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: store.get_story(story.id).outline.startswith("Mara comes home"),
                         what="the summary saved")


async def test_a_long_premise_is_met_with_a_warning_and_the_story_starts_from_its_summary(store, server, embedder):
    from longyarn.app.tui.screens.dialogs import NewStoryDialog, OutlineDialog
    from longyarn.app.tui.screens.long_note import LongNoteDialog

    long_premise = "A lighthouse keeper finds a door in the sea, and behind it a drowned city. " * 100
    summary = "A lighthouse keeper finds a door in the sea that leads to a drowned city which remembers her."
    app = build_app(store, make_engine(store, server, embedder))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("n")
        dialog = await wait_for_screen(pilot, NewStoryDialog)
        dialog.query_one("#genre").value = "fable"
        dialog.query_one("#premise").load_text(long_premise)
        await pilot.press("ctrl+s")
        warning = await wait_for_screen(pilot, LongNoteDialog)
        said = str(warning.query_one("#long-note-warning").render())
        assert said.startswith("This premise is about 1,500 words") and "room for about 750 tokens" in said
        assert not [r for r in server.requests if r["_role"] == "opening"], "nothing is started before the answer"

        server.enqueue(Reply(summary))
        await pilot.press("ctrl+s")  # summarise
        await wait_until(pilot, lambda: dialog.query_one("#premise").text == summary, what="the summary in the editor")
        [asked] = [r for r in server.requests if r["_role"] == "summary"]
        assert long_premise.strip() in asked["messages"][-1]["content"], "the whole premise fits one request"
        assert store.list_stories() == [], "nothing is created until the writer says so"

        await pilot.press("ctrl+s")  # create, from the summary
        await wait_for_screen(pilot, OutlineDialog)
        [story] = store.list_stories()
        assert story.premise == summary
        opening = [r for r in server.requests if r["_role"] == "opening"][-1]["messages"][-1]["content"]
        assert summary in opening and "behind it a drowned city. A lighthouse" not in opening


# ---- 3. Every change is an undoable step of the history, in the order made ----

FOUR = PARAGRAPHS + ["At dawn Mara took the key down to the harbour, where the ferryman was waiting."]


def head_id(store, story_id):
    return store.get_story(story_id).head_step_id


async def test_delete_then_undo_brings_back_that_paragraph_not_the_newest(store, server, embedder):
    from longyarn.app.tui.screens.dialogs import ConfirmDialog

    story = seed_story(store, embedder, FOUR)
    fourth = store.branch(story.id)[-1]
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.click(screen.story_view.paragraph_views[1])
        await pilot.press("delete")
        await wait_for_screen(pilot, ConfirmDialog)
        await pilot.click("#confirm")
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: len(shown_paragraphs(screen)) == 3 and not screen.moving, what="the delete")
        assert store.search_memories(story.id, "had not changed") == []

        await history_move(pilot, screen, "ctrl+z")
        assert shown_paragraphs(screen) == FOUR, "the deleted paragraph is back, and the newest stays"
        assert head_id(store, story.id) == fourth.id
        assert [s.paragraph for s in store.branch(story.id)] == FOUR
        assert store.search_memories(story.id, "had not changed"), "its memory is recalled again"
        assert str(screen.query_one("#status").render()).startswith("Undone: the deletion of paragraph 2")

        await history_move(pilot, screen, "ctrl+y")
        assert shown_paragraphs(screen) == FOUR[:1] + FOUR[2:]
        assert str(screen.query_one("#status").render()).startswith("Redone: the deletion of paragraph 2")


async def test_edit_outline_memory_and_pin_are_undone_newest_first_and_redone(store, server, embedder):
    from longyarn.app.tui.screens.dialogs import OutlineDialog, ParagraphEditor
    from longyarn.app.tui.screens.memory import MemoryScreen

    story = seed_story(store, embedder, PARAGRAPHS)
    third = store.branch(story.id)[-1]
    engine = make_engine(store, server, embedder)
    app = build_app(store, engine, story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        # 1. a paragraph edit
        screen.story_view.focus()
        await pilot.press("e")
        editor = await wait_for_screen(pilot, ParagraphEditor)
        edited = "A dragon named Ysolde slept under the mill, on a bed of cold ash and silver bells."
        editor.query_one("#paragraph").load_text(edited)
        await pilot.press("ctrl+s")
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: store.get_step(third.id).paragraph == edited, what="the edit")
        # 2. the outline
        await pilot.press("f4")
        outline = await wait_for_screen(pilot, OutlineDialog)
        outline.query_one("#outline").load_text("Mara learns that the mill burned for a dragon.")
        await pilot.press("ctrl+s")
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: "dragon" in store.get_story(story.id).outline, what="the outline")
        # 3. the short-term memory
        screen.memory_editor.focus()
        screen.memory_editor.load_text("Mara knows about the dragon.")
        screen.instruction_input.focus()  # leaving the panel stores the edit
        await wait_until(pilot, lambda: store.get_step(third.id).short_term_memory == "Mara knows about the dragon.",
                         what="the memory edit")
        # 4. a long-term memory pinned
        await pilot.press("f2")
        browser = await wait_for_screen(pilot, MemoryScreen)
        await wait_until(pilot, lambda: browser.rows, what="the memories")
        await pilot.pause()
        await pilot.press("p")
        await wait_until(pilot, lambda: any(m.pinned for m in store.search_memories(story.id, "")), what="the pin")
        await pilot.press("escape")
        screen = await wait_for_screen(pilot, WritingScreen)

        await history_move(pilot, screen, "ctrl+z")
        assert not any(m.pinned for m in store.search_memories(story.id, ""))
        await history_move(pilot, screen, "ctrl+z")
        assert store.get_step(third.id).short_term_memory == third.short_term_memory
        assert screen.memory_editor.text == third.short_term_memory
        await history_move(pilot, screen, "ctrl+z")
        assert store.get_story(story.id).outline == story.outline
        await history_move(pilot, screen, "ctrl+z")
        assert store.get_step(third.id).paragraph == third.paragraph
        assert shown_paragraphs(screen) == PARAGRAPHS
        assert store.memory_for_step(third.id).text == third.paragraph, "long-term memory follows the undo"
        assert str(screen.query_one("#status").render()).startswith("Undone: the edit of paragraph 3")

        for _ in range(4):
            await history_move(pilot, screen, "ctrl+y")
        assert store.get_step(third.id).paragraph == edited
        assert "dragon" in store.get_story(story.id).outline
        assert store.get_step(third.id).short_term_memory == "Mara knows about the dragon."
        assert any(m.pinned for m in store.search_memories(story.id, ""))
        assert not screen.check_action("redo", ())


# ---- 4. The reader's export in a terminal: the downloads folder, else here; the path or the reason ----


async def test_the_readers_export_in_a_terminal_writes_where_it_can_and_names_the_path(
    store, embedder, tmp_path, monkeypatch
):
    from tests.app.test_reader import enter_as, open_first_story, readable_story, reader_app

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a server account: no ~/Downloads
    (tmp_path / "home").mkdir()
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    readable_story(store, embedder, may_extend=False)
    app = reader_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await enter_as(pilot)
        await open_first_story(pilot)
        await pilot.press("x")
        written = here / "the-salt-marsh-key.md"
        await wait_until(pilot, written.exists, what="the export")
        await wait_until(pilot, lambda: any(n.title == "Exported" for n in app._notifications), what="the notice")
        assert PARAGRAPHS[0] in written.read_text()
        [notice] = [n for n in app._notifications if n.title == "Exported"]
        assert str(written) in notice.message

        # Where nothing can be written: the real reason, never "please try again".
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        monkeypatch.setattr("longyarn.app.reader.screens.downloads_folder", lambda: blocker / "inside")
        await pilot.press("x")
        await wait_until(pilot, lambda: any(n.title == "Not exported" for n in app._notifications), what="the failure")
        [failure] = [n for n in app._notifications if n.title == "Not exported"]
        assert "Not a directory" in failure.message and "try again" not in failure.message


# ---- 5. Smaller things ----


def test_export_reads_a_database_it_may_not_write(tmp_path):
    """Commands that only read open the database read-only: its file and folder may be read-only."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import pytest

    from tests.app.test_batch import ROOT
    from tests.app.test_export import write_story

    db, story_id = write_story(tmp_path, paragraphs=1)
    folder = Path(tempfile.mkdtemp(prefix="read-only-", dir="/tmp"))
    try:
        shutil.copy(db, folder / "stories.db")
        (folder / "stories.db").chmod(0o444)
        folder.chmod(0o555)
        as_reader: list[str] = []
        if os.geteuid() == 0:  # root may write anything: run the command as nobody
            if shutil.which("setpriv") is None:
                pytest.skip("runs as root without setpriv, so nothing can be made read-only for it")
            as_reader = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = {**os.environ, "LONGYARN_CONFIG": str(folder / "no-config.toml")}
        result = subprocess.run(
            [*as_reader, sys.executable, "-m", "longyarn.app.cli", "export", story_id,
             "--db", str(folder / "stories.db"), "--format", "txt"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("A ") or result.stdout.strip(), result.stdout
        assert sorted(p.name for p in folder.iterdir()) == ["stories.db"], "nothing was written beside it"
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def run_batch_on_a_terminal(server, *args: str) -> tuple[int, str, str]:
    """`longyarn batch` with its stdout on a pseudo-terminal, as in a terminal window: what the
    terminal showed, and stderr."""
    import os
    import pty
    import re
    import subprocess
    import sys

    from tests.app.test_batch import ROOT

    leader, follower = pty.openpty()
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "TERM": "xterm-256color", "COLUMNS": "160"}
    process = subprocess.Popen(
        [sys.executable, "-m", "longyarn.app.cli", "batch", *args],
        cwd=ROOT, env=env, stdout=follower, stderr=subprocess.PIPE, text=True,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    stderr = process.stderr.read()
    # What the terminal shows, without its control sequences.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode("utf-8", "replace")).replace("\r", "")
    return process.wait(timeout=120), text, stderr


def test_batch_on_a_terminal_shows_a_progress_display_and_plain_lines_otherwise(tmp_path):
    import re

    from tests.app.test_batch import run

    with ScriptedServer() as server:
        code, shown, stderr = run_batch_on_a_terminal(
            server, "--db", str(tmp_path / "a.db"), "--premise", "A keeper of bells.", "--paragraphs", "3",
            "--model", "scripted-model",
        )
        assert code == 0, stderr
        assert re.search(r"^story [0-9a-f]{12}$", shown, re.MULTILINE), shown
        assert "3/3 ¶" in shown and "words" in shown and "¶/min" in shown and "fallbacks" in shown
        assert "ETA" in shown
        assert "paragraph 1/3 saved" not in shown + stderr, "no line per paragraph under the bar"

        code, shown, stderr = run_batch_on_a_terminal(
            server, "--db", str(tmp_path / "b.db"), "--premise", "A keeper of bells.", "--paragraphs", "2",
            "--model", "scripted-model", "--quiet",
        )
        assert code == 0 and "¶/min" not in shown and re.fullmatch(r"story [0-9a-f]{12}", shown.strip())

        code, stdout, stderr = run(
            "batch", "--db", str(tmp_path / "c.db"), "--premise", "A keeper of bells.", "--paragraphs", "2",
            "--model", "scripted-model", server=server,
        )
        assert code == 0 and stdout.startswith("story ") and "¶/min" not in stdout + stderr
        assert "paragraph 2/2 saved" in stderr, "piped: today's plain lines"


async def test_escape_in_settings_asks_before_dropping_edits_and_nothing_says_saved_before_saving(store, server):
    from longyarn.app.tui.screens.dialogs import UnsavedEditDialog
    from longyarn.app.tui.screens.library import LibraryScreen

    app = make_app(store=store, settings=Settings(base_url=server.base_url), engine=None, keymap={}, first_run=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("escape")  # the "no model" notice
        await pilot.press("f5")
        form = await wait_for_screen(pilot, SettingsScreen)
        hints = [str(hint.render()) for hint in form.query(".hint")]
        assert not any(hint.startswith("Saved") for hint in hints), hints
        await pilot.press("escape")
        await wait_for_screen(pilot, LibraryScreen)  # nothing changed: it just closes

        await pilot.press("f5")
        form = await wait_for_screen(pilot, SettingsScreen)
        form.query_one("#recall-k").value = "7"
        await pilot.press("escape")
        await wait_for_screen(pilot, UnsavedEditDialog)
        await pilot.press("escape")  # keep editing, the default
        form = await wait_for_screen(pilot, SettingsScreen)
        assert form.query_one("#recall-k").value == "7"
        await pilot.press("escape")
        await wait_for_screen(pilot, UnsavedEditDialog)
        await pilot.click("#discard")
        await wait_for_screen(pilot, LibraryScreen)
        assert not config_path().exists(), "discarded: nothing was saved"


async def test_the_readers_library_and_action_box_name_their_keys(store, embedder):
    from textual.widgets._footer import FooterKey

    from tests.app.test_reader import enter_as, open_first_story, readable_story, reader_app

    readable_story(store, embedder, may_extend=True)
    app = reader_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await enter_as(pilot)

        def footer() -> set[str]:
            return {str(key.description) for key in pilot.app.screen.query(FooterKey) if key.display}

        await pilot.pause()
        assert "Read" in footer()
        screen = await open_first_story(pilot)
        screen.action_input.focus()
        await pilot.pause()
        assert "Act" in footer()


def test_a_model_title_that_runs_on_is_cut_to_a_title():
    from longyarn.recurrent_core.replies.opening import parse_opening

    rambling = ("The Keeper of the Farrow Light, in which a woman who has kept the lamp for thirty years "
                "finds a door in the sea and learns that " + "the drowned remember everything " * 20)
    parsed = parse_opening(f'{{"title": "{rambling}", "outline": "A keeper finds a door."}}')
    assert parsed.title == "The Keeper of the Farrow Light"
    endless = parse_opening('{"title": "' + "word " * 200 + '", "outline": "x y z"}').title
    assert len(endless) <= 90 and len(endless.split()) <= 12
    assert parse_opening('{"title": "The Salt Marsh Key", "outline": "x y z"}').title == "The Salt Marsh Key"

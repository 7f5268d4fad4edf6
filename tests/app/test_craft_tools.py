"""The craft tools writers expect (issue 13): alternatives at once, co-writing in the text, the
author's note and one's own prompts, sampling presets, goals and counts, and .docx export.

Pilot drives the real app against the scripted server, whose log says what each prompt held.
"""

from __future__ import annotations

import io

import docx

from longyarn.app.export import render_docx
from longyarn.app.tui.screens.dialogs import ExportDialog
from longyarn.app.tui.screens.writing import WritingScreen
from tests.app.test_batch import run
from tests.app.test_export import LINES, write_story
from tests.app.test_tui import PARAGRAPHS, build_app, seed_story, wait_for_screen, wait_until
from tests.conftest import make_engine


def docx_paragraphs(data: bytes) -> list[tuple[str, str]]:
    """(style, text) of each paragraph of a .docx, as Word reads it."""
    document = docx.Document(io.BytesIO(data))
    return [(p.style.name, p.text) for p in document.paragraphs]


# ---- .docx export ----


def test_docx_holds_the_title_each_paragraph_with_its_lines_and_chapter_headings(store, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    branch = store.branch(story.id)
    paragraphs = docx_paragraphs(render_docx(story, branch))
    assert paragraphs[0] == ("Title", "The Salt Marsh Key")
    assert paragraphs[1] == ("Subtitle", "mystery")
    assert [text for _, text in paragraphs[2:]] == PARAGRAPHS

    with_chapters = docx_paragraphs(render_docx(story, branch, chapters=[("The Return", 0), ("The Key", 2)]))
    assert [text for style, text in with_chapters if style == "Heading 1"] == ["The Return", "The Key"]
    assert [text for _, text in with_chapters].index("The Key") == [t for _, t in with_chapters].index(PARAGRAPHS[2]) - 1


def test_longyarn_export_writes_a_docx_that_keeps_each_line(tmp_path):
    db, story_id = write_story(tmp_path, paragraphs=1)
    out = tmp_path / "story.docx"
    code, _, stderr = run("export", story_id, "--db", str(db), "--format", "docx", "--out", str(out))
    assert code == 0, stderr
    [body] = [p for p in docx.Document(str(out)).paragraphs if p.style.name == "Normal"]
    assert body.text == "\n".join(LINES), "the model's line breaks stay breaks within the paragraph"


async def test_the_writers_export_dialog_writes_a_docx(store, server, embedder, tmp_path):
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f6")
        dialog = await wait_for_screen(pilot, ExportDialog)
        await pilot.click("#docx")
        assert dialog.query_one("#path").value.endswith("the-salt-marsh-key.docx")
        target = tmp_path / "marsh.docx"
        dialog.query_one("#path").value = str(target)
        dialog.query_one("#path").focus()
        await pilot.press("enter")
        await wait_until(pilot, target.exists, what="the export")
        assert [text for _, text in docx_paragraphs(target.read_bytes())][2:] == PARAGRAPHS


# ---- the author's note ----


def user_text(request: dict) -> str:
    return request["messages"][-1]["content"]


async def test_the_authors_note_reaches_the_writer_at_its_depth_and_the_planner(store, server, embedder):
    from longyarn.app.tui.screens.craft_dialogs import AuthorsNoteDialog
    from tests.app.test_tui import history_move, run_step

    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    note = "Present tense, close third person on Mara; short sentences; no adverbs."
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f7")
        dialog = await wait_for_screen(pilot, AuthorsNoteDialog)
        dialog.query_one("#note").load_text(note)
        await pilot.press("ctrl+s")
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: store.get_story(story.id).settings.get("authors_note"), what="the note")
        await run_step(pilot, screen, "ctrl+g")
        writer = user_text([r for r in server.requests if r["_role"] == "writer"][-1])
        assert f"## Author's note\n{note}" in writer
        assert writer.index("## Previous paragraph") < writer.index("## Author's note") < writer.index("Write the next paragraph")
        planner = user_text([r for r in server.requests if r["_role"] == "planner"][-1])
        assert note in planner

        await pilot.press("f7")
        dialog = await wait_for_screen(pilot, AuthorsNoteDialog)
        dialog.query_one("#depth").value = "1"
        await pilot.press("ctrl+s")
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: store.get_story(story.id).settings["authors_note"]["depth"] == 1, what="depth")
        await run_step(pilot, screen, "ctrl+g")
        writer = user_text([r for r in server.requests if r["_role"] == "writer"][-1])
        assert writer.index("## Author's note") < writer.index("## Previous paragraph")

        await history_move(pilot, screen, "ctrl+z")  # the paragraph
        await history_move(pilot, screen, "ctrl+z")  # the note's new depth
        assert store.get_story(story.id).settings["authors_note"]["depth"] == 0


# ---- goals and counts ----


async def test_goals_and_word_counts_show_in_the_status_line(store, server, embedder):
    from longyarn.app.tui.screens.craft_dialogs import GoalsDialog
    from tests.app.test_tui import run_step

    story = seed_story(store, embedder, PARAGRAPHS)
    words = sum(len(p.split()) for p in PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)

        def counts() -> str:
            return str(screen.query_one("#counts").render())

        assert counts() == f"{words} words · today {words} · session 0"
        await pilot.press("f8")
        dialog = await wait_for_screen(pilot, GoalsDialog)
        dialog.query_one("#story-goal").value = "1000"
        dialog.query_one("#session-goal").value = "50"
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: "of 1,000" in counts(), what="the goals")
        assert counts() == f"{words} words ({words * 100 // 1000}% of 1,000) · today {words} · session 0/50"
        assert store.get_story(story.id).settings["word_goal"] == 1000

        await run_step(pilot, screen, "ctrl+g")
        written = len(store.branch(story.id)[-1].paragraph.split())
        total = words + written
        assert counts() == f"{total} words ({total * 100 // 1000}% of 1,000) · today {total} · session {written}/50 ✓"
        assert any(n.title == "Goal" for n in app._notifications)


# ---- your own prompts ----


async def test_a_storys_own_writer_template_is_used_and_the_viewer_names_it(store, server, embedder):
    from longyarn.app.prompt_overrides import start_own
    from longyarn.app.settings import prompts_folder
    from tests.app.test_tui import run_step
    from tests.app.test_tui_tools import open_context_viewer

    story = seed_story(store, embedder, PARAGRAPHS)
    other = seed_story(store, embedder, PARAGRAPHS, title="Another")
    own = start_own("writer", story.id)
    own.write_text(own.read_text().replace("You are a novelist", "You are a terse noir novelist"))
    engine = make_engine(store, server, embedder, prompt_folder=prompts_folder())
    app = build_app(store, engine, story_id=story.id)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await run_step(pilot, screen, "ctrl+g")
        system = [r for r in server.requests if r["_role"] == "writer"][-1]["messages"][0]["content"]
        assert system.startswith("You are a terse noir novelist")
        viewer = await open_context_viewer(pilot)
        assert str(viewer.query_one("#context-template").render()) == f"Written with your own writer template: {own}"
        await engine.run_step(other.id)
        system = [r for r in server.requests if r["_role"] == "writer"][-1]["messages"][0]["content"]
        assert system.startswith("You are a novelist"), "another story keeps the shipped template"


def test_longyarn_prompts_diff_shows_your_changes_and_reset_sets_them_aside(tmp_path):
    from longyarn.app.prompt_overrides import own_folder

    code, path, stderr = run("prompts", "edit", "planner")
    assert code == 0, stderr
    own = own_folder() / "planner.md"
    assert path.strip() == str(own)
    own.write_text(own.read_text().replace("three different directions", "three daring directions"))
    code, diff, _ = run("prompts", "diff")
    assert code == 0
    assert "-Propose three different directions" in diff and "+Propose three daring directions" in diff
    code, _, stderr = run("prompts", "reset", "planner")
    assert code == 0 and "set planner.md" in stderr.lower()
    assert not own.exists() and list(own.parent.glob("planner.md.*.bak")), "your words are kept aside"
    code, diff, _ = run("prompts", "diff")
    assert code == 0 and diff == ""


def test_a_broken_template_of_your_own_is_named_with_its_file(tmp_path):
    from longyarn.app.prompt_overrides import own_folder

    run("prompts", "edit", "memory")
    own = own_folder() / "memory.md"
    own.write_text("## system\nKeep notes.\n## tusk\nOops.\n")
    code, _, stderr = run("prompts", "list")
    assert code == 0 and str(own) in stderr and "unknown section" in stderr


# ---- sampling presets ----


async def test_sampling_presets_per_role_reach_the_server_and_a_refused_setting_is_dropped_and_said(
    store, embedder
):
    import tomllib

    from longyarn.app.settings import Settings, config_path
    from longyarn.app.tui.screens.sampling import SamplingScreen
    from tests.app.test_tui import run_step
    from tests.app.test_tui_tools import app_switching_models
    from tests.scripted_server import ScriptedServer

    async with ScriptedServer(rejected_parameters=("repetition_penalty",)) as server:
        story = seed_story(store, embedder, PARAGRAPHS)
        app = app_switching_models(store, server, embedder, story.id)
        async with app.run_test(size=(110, 40)) as pilot:
            screen = await wait_for_screen(pilot, WritingScreen)
            await wait_until(pilot, lambda: pilot.app.engine is not None, what="the model")
            await pilot.press("f9")
            form = await wait_for_screen(pilot, SamplingScreen)
            form.query_one("#preset").value = "creative"
            await pilot.pause()
            assert form.query_one("#field-min_p").value == "0.05"
            form.query_one("#stop").load_text("THE END")
            form.query_one("#role").value = "planner"
            await pilot.pause()
            form.query_one("#field-temperature").value = "0.35"
            form.query_one("#preset-name").value = "Calm Planner"
            await pilot.click("#save-preset")
            await pilot.press("ctrl+s")
            screen = await wait_for_screen(pilot, WritingScreen)
            await wait_until(pilot, lambda: screen.check_action("write_next", ()), what="the model again")

            saved = tomllib.loads(config_path().read_text())
            assert saved["role_presets"] == {"planner": "calm planner"}
            assert saved["sampling"]["writer"]["stop"] == ["THE END"]
            assert saved["sampling_presets"]["calm planner"]["temperature"] == 0.35
            assert Settings().engine_config().sampling["planner"].temperature == 0.35, "a restart reads them"

            await run_step(pilot, screen, "ctrl+g")
            writers = [r for r in server.requests if r["_role"] == "writer"]
            assert writers[-1]["temperature"] == 1.1 and writers[-1]["min_p"] == 0.05
            assert writers[-1]["stop"] == ["THE END"]
            assert writers[0]["repetition_penalty"] == 1.1, "asked for first"
            assert "repetition_penalty" not in writers[-1], "refused once, then left out"
            assert [r for r in server.requests if r["_role"] == "planner"][-1]["temperature"] == 0.35
            assert any("repetition_penalty" in n.message for n in pilot.app._notifications), "said, once"


# ---- versions at once ----


def numbered_writer():
    """Story replies whose writer paragraphs differ per request (as a sampling server's do)."""
    from tests.scripted_server import story_responder

    calls = []

    def respond(request: dict):
        reply = story_responder(request)
        if request.get("_role") == "writer":
            calls.append(request)
            reply.text = f"Version {len(calls)}: {reply.text}"
            reply.delay_s = 0.2  # so that the versions are seen being written together
        return reply

    return respond


async def test_versions_at_once_are_written_together_picked_and_the_others_kept(store, server, embedder):
    from longyarn.app.tui.screens.alternatives import AlternativesScreen
    from tests.app.test_tui import history_move, shown_paragraphs

    server.responder = numbered_writer()
    story = seed_story(store, embedder, PARAGRAPHS)
    head = store.branch(story.id)[-1]
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        await pilot.press(*"Mara rows out to the door.")
        await pilot.press("ctrl+n")
        versions = await wait_for_screen(pilot, AlternativesScreen)
        await wait_until(pilot, lambda: versions.drafts is not None, what="the versions")
        texts = [str(t.render()) for t in versions.query(".version-text")]
        assert len(texts) == 3 and len(set(texts)) == 3
        writers = [r for r in server.requests if r["_role"] == "writer"]
        assert len(writers) == 3 and len({str(r["messages"]) for r in writers}) == 1, "one prompt, three replies"
        assert server.max_concurrent >= 2, "asked at once, not one after another"
        assert store.children(story.id, head.id) == [], "nothing is stored before a pick"

        await pilot.press("2")
        screen = await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: len(store.children(story.id, head.id)) == 3, what="the versions stored")
        await wait_until(pilot, lambda: str(screen.query_one("#status").render()).startswith("Kept version"),
                         what="the status")
        chosen = store.branch(story.id)[-1]
        assert chosen.paragraph == versions.drafts.paragraphs[1]
        assert shown_paragraphs(screen)[-1] == chosen.paragraph
        assert {s.paragraph for s in store.children(story.id, head.id)} == set(versions.drafts.paragraphs)
        assert all(s.instruction == "Mara rows out to the door." for s in store.children(story.id, head.id))
        assert len([r for r in server.requests if r["_role"] == "memory"]) == 3, "each version remembered"

        await history_move(pilot, screen, "alt+left")
        assert shown_paragraphs(screen)[-1] != chosen.paragraph, "another version is one key away"
        await history_move(pilot, screen, "ctrl+z")
        await history_move(pilot, screen, "ctrl+z")
        assert store.get_story(story.id).head_step_id == head.id, "the choice is undone as one change"


async def test_escape_leaves_the_versions_with_nothing_stored(store, server, embedder):
    from longyarn.app.tui.screens.alternatives import AlternativesScreen

    story = seed_story(store, embedder, PARAGRAPHS)
    head = store.branch(story.id)[-1]
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+n")
        versions = await wait_for_screen(pilot, AlternativesScreen)
        await wait_until(pilot, lambda: versions.drafts is not None, what="the versions")
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)
        assert store.children(story.id, head.id) == [] and store.get_story(story.id).head_step_id == head.id


async def test_versions_at_once_on_the_local_model_read_the_prompt_once(store, embedder):
    from longyarn.app.tui.screens.alternatives import AlternativesScreen
    from tests.app.test_tui import demo_engine

    story = seed_story(store, embedder, PARAGRAPHS)
    head = store.branch(story.id)[-1]
    engine = demo_engine(store, embedder)  # seeded: each version gets seed, seed + 1, ...
    app = build_app(store, engine, story_id=story.id)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        before = engine.backend.stats
        await pilot.press("ctrl+n")
        versions = await wait_for_screen(pilot, AlternativesScreen)
        await wait_until(pilot, lambda: versions.drafts is not None, timeout=60, what="the versions")
        after = engine.backend.stats
        assert after.requests - before.requests == 1, "one generation for all three"
        prompt = engine.backend.prompt_tokens(versions.drafts.plan.prompt)
        assert after.prompt_tokens - before.prompt_tokens == prompt, "the prompt is read once, not three times"
        assert len(set(versions.drafts.paragraphs)) == len(versions.drafts.paragraphs) >= 2
        await pilot.press("1")
        await wait_for_screen(pilot, WritingScreen)
        await wait_until(pilot, lambda: len(store.children(story.id, head.id)) == len(versions.drafts.paragraphs),
                         what="the versions stored")
        assert store.branch(story.id)[-1].paragraph == versions.drafts.paragraphs[0]


# ---- co-writing inside the text ----


async def open_editor_on_the_newest(pilot, screen):
    from longyarn.app.tui.screens.cowriting import CoWritingEditor

    screen.story_view.focus()
    await pilot.press("e")
    return await wait_for_screen(pilot, CoWritingEditor)


async def test_a_rewritten_passage_is_shown_as_a_diff_and_accepted_into_the_paragraph_and_memory(
    store, server, embedder
):
    from longyarn.app.tui.screens.cowriting import PassageTaskDialog
    from longyarn.app.tui.screens.craft_dialogs import ProposedChangeDialog, deleted_and_inserted
    from tests.app.test_tui import history_move, shown_paragraphs
    from tests.scripted_server import Reply

    story = seed_story(store, embedder, PARAGRAPHS)
    third = store.branch(story.id)[-1]
    engine = make_engine(store, server, embedder)
    app = build_app(store, engine, story_id=story.id)
    async with app.run_test(size=(110, 36)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        editor = await open_editor_on_the_newest(pilot, screen)
        area = editor.query_one("#paragraph")
        start = third.paragraph.index("a brass key")
        area.selection = type(area.selection)(
            area.document.get_location_from_index(start),
            area.document.get_location_from_index(start + len("a brass key")),
        )
        await pilot.press("ctrl+r")
        task = await wait_for_screen(pilot, PassageTaskDialog)
        await pilot.click("#describe")
        task.query_one("#wish").value = "make it old and cold"
        server.enqueue(Reply("an old iron key, cold as river water"))
        await pilot.press("ctrl+s")
        proposal = await wait_for_screen(pilot, ProposedChangeDialog)
        passage = [r for r in server.requests if r["_role"] == "passage"][-1]["messages"][-1]["content"]
        assert "<<<a brass key>>>" in passage and "make it old and cold" in passage
        assert "## Text before the passage" in passage and PARAGRAPHS[1] in passage
        struck, underlined = deleted_and_inserted(proposal.query_one("#change-text").render())
        assert "a brass" in struck and "an old iron key, cold as river water" in underlined

        await pilot.press("ctrl+s")  # accept
        await wait_until(pilot, lambda: "old iron key" in store.get_step(third.id).paragraph, what="the saved change")
        assert store.get_step(third.id).paragraph == third.paragraph.replace(
            "a brass key", "an old iron key, cold as river water")
        assert "old iron key" in store.memory_for_step(third.id).text, "long-term memory follows"
        found = await engine.search_memories_by_meaning(story.id, "a cold iron key", k=1)
        assert found[0].step_id == third.id
        await pilot.press("escape")
        screen = await wait_for_screen(pilot, WritingScreen)
        await history_move(pilot, screen, "ctrl+z")
        assert shown_paragraphs(screen)[-1] == third.paragraph, "the accepted change is one undoable edit"


async def test_the_model_continues_from_the_cursor_and_a_rejected_proposal_changes_nothing(store, server, embedder):
    from longyarn.app.tui.screens.craft_dialogs import ProposedChangeDialog
    from tests.scripted_server import Reply

    story = seed_story(store, embedder, PARAGRAPHS)
    third = store.branch(story.id)[-1]
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(110, 36)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        editor = await open_editor_on_the_newest(pilot, screen)
        area = editor.query_one("#paragraph")
        area.move_cursor(area.document.end)
        await pilot.press(*" She held it up")

        def status() -> str:
            return str(editor.query_one("#cowrite-status").render())

        assert status() == "^g: the model writes on from the cursor · ^r: rework the selected passage", "its keys"
        server.enqueue(Reply("to the window, and the light went through it as through water.", delay_s=0.5))
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: status() == "The model is writing on from the cursor…", what="the model at work")
        await wait_for_screen(pilot, ProposedChangeDialog)
        passage = [r for r in server.requests if r["_role"] == "passage"][-1]["messages"][-1]["content"]
        assert "She held it up" in passage, "the model reads what the writer typed, saved or not"
        await pilot.press("escape")  # reject
        editor = await wait_for_screen(pilot, type(editor))
        assert area.text == third.paragraph + " She held it up"
        assert store.get_step(third.id).paragraph == third.paragraph

        server.enqueue(Reply("to the window, and the light went through it as through water."))
        await pilot.press("ctrl+g")
        await wait_for_screen(pilot, ProposedChangeDialog)
        await pilot.press("ctrl+s")
        expected = third.paragraph + " She held it up to the window, and the light went through it as through water."
        await wait_until(pilot, lambda: store.get_step(third.id).paragraph == expected, what="the continuation saved")


async def test_a_continuation_that_goes_on_with_punctuation_is_joined_without_a_space(store, server, embedder):
    from longyarn.app.tui.screens.craft_dialogs import ProposedChangeDialog
    from tests.scripted_server import Reply

    story = seed_story(store, embedder, PARAGRAPHS)
    third = store.branch(story.id)[-1]
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(110, 36)) as pilot:
        editor = await open_editor_on_the_newest(pilot, await wait_for_screen(pilot, WritingScreen))
        area = editor.query_one("#paragraph")
        at = third.paragraph.index(" wrapped")
        area.move_cursor(area.document.get_location_from_index(at))
        server.enqueue(Reply(", cold as river water,"))
        await pilot.press("ctrl+g")
        proposal = await wait_for_screen(pilot, ProposedChangeDialog)
        assert proposal.proposed == third.paragraph[:at] + ", cold as river water," + third.paragraph[at:]


async def test_continuing_from_the_cursor_and_rewriting_a_passage_work_on_the_local_model(store, embedder):
    from longyarn.app.tui.screens.cowriting import PassageTaskDialog
    from longyarn.app.tui.screens.craft_dialogs import ProposedChangeDialog
    from tests.app.test_tui import demo_engine

    story = seed_story(store, embedder, PARAGRAPHS)
    third = store.branch(story.id)[-1]
    engine = demo_engine(store, embedder)
    app = build_app(store, engine, story_id=story.id)
    async with app.run_test(size=(110, 36)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        editor = await open_editor_on_the_newest(pilot, screen)
        area = editor.query_one("#paragraph")
        area.move_cursor(area.document.end)
        before = engine.backend.stats.requests
        await pilot.press("ctrl+g")
        proposal = await wait_for_screen(pilot, ProposedChangeDialog)
        assert engine.backend.stats.requests == before + 1
        assert proposal.proposed.startswith(third.paragraph) and len(proposal.proposed) > len(third.paragraph)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: store.get_step(third.id).paragraph == proposal.proposed.strip(),
                         timeout=30, what="the continuation saved")

        text = area.text
        start = text.index("a brass key")
        area.selection = type(area.selection)(
            area.document.get_location_from_index(start),
            area.document.get_location_from_index(start + len("a brass key")),
        )
        await pilot.press("ctrl+r")
        await wait_for_screen(pilot, PassageTaskDialog)
        await pilot.press("ctrl+s")
        proposal = await wait_for_screen(pilot, ProposedChangeDialog)
        assert engine.backend.stats.requests == before + 2
        head, tail = text[:start], text[start + len("a brass key"):]
        assert proposal.proposed.startswith(head) and proposal.proposed.endswith(tail)
        assert proposal.proposed != text, "the selected words are replaced by the model's"


# ---- every new action in F1, the palette, and the keymap ----


async def test_the_craft_tools_are_in_f1_help_and_the_palette_and_follow_the_keymap(store, server, embedder):
    from textual.command import CommandList

    from longyarn.app.tui.screens.craft_dialogs import AuthorsNoteDialog
    from longyarn.app.tui.screens.help import HelpScreen

    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id,
                    keymap={"authors-note": "f12", "alternatives": "ctrl+b", "cowrite-rewrite": "ctrl+e"})
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f1")
        help_screen = await wait_for_screen(pilot, HelpScreen)
        rows = dict(
            (str(row.query_one(".help-key").render()), str(row.query_one(".help-what").render()))
            for row in help_screen.query(".help-row")
        )
        assert rows["f12"].startswith("Author's note") and rows["^b"].startswith("Versions at once")
        assert rows["f8"].startswith("Goals") and rows["f9"].startswith("Sampling")
        assert rows["^g"].endswith("(in the paragraph editor)") and "cursor" in rows["^g"]
        assert rows["^e"].endswith("(in the paragraph editor)") and "selected passage" in rows["^e"], "remapped"
        await pilot.press("escape")

        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: app.screen.query(CommandList) and app.screen.query_one(CommandList).option_count,
                         what="the palette's commands")
        await pilot.pause(0.3)
        commands = app.screen.query_one(CommandList)
        titles = {str(commands.get_option_at_index(i).prompt).split("\n")[0] for i in range(commands.option_count)}
        assert {"Versions", "Author's note", "Goals", "Sampling"} <= titles, titles
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f12")
        await wait_for_screen(pilot, AuthorsNoteDialog)
        await pilot.press("escape")
        editor = await open_editor_on_the_newest(pilot, await wait_for_screen(pilot, WritingScreen))
        assert "^e: rework the selected passage" in str(editor.query_one("#cowrite-status").render())

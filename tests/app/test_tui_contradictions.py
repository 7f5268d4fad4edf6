"""Contradictions in the writers' UI (issue 14, item 4), as a writer meets them: Pilot on the
real app, a real SQLite file, the scripted server's honest checker. The fact and the sentence
appear side by side; the writer updates the fact, rewrites or retries the paragraph."""

from __future__ import annotations

import json

from textual.widgets import Input, Static

from longyarn.app.tui.screens.contradictions import ContradictionsDialog
from longyarn.app.tui.screens.cowriting import CoWritingEditor
from longyarn.app.tui.screens.help import HelpScreen
from longyarn.app.tui.screens.writing import WritingScreen
from longyarn.recurrent_core.bible import FactDraft
from tests.app.test_tui import PARAGRAPHS, build_app, seed_story, wait_for_screen, wait_until
from tests.conftest import make_engine
from tests.scripted_continuity import continuity_checker
from tests.scripted_server import Reply, story_responder

SAILOR = "Mara is a sailor."
CONTRADICTING = "Mara has never set foot on a boat."


def contradicting_writer(request: dict) -> Reply:
    role = request.get("_role")
    if role == "writer":
        return Reply(f"Mara stands at the window of the mill. {CONTRADICTING} The sea frightens her.")
    if role == "continuity":
        return Reply(json.dumps(continuity_checker([(SAILOR, CONTRADICTING)])(request)))
    return story_responder(request)


def app_with_mara(store, server, embedder):
    story = seed_story(store, embedder, PARAGRAPHS)
    mara = store.add_entry(story.id, name="Mara", kind="character", facts=[FactDraft(SAILOR)])
    server.responder = contradicting_writer
    return build_app(store, make_engine(store, server, embedder), story_id=story.id), story, mara


def text_of(widget: Static) -> str:
    return str(widget.render())


async def write_contradicting_paragraph(pilot) -> ContradictionsDialog:
    await wait_for_screen(pilot, WritingScreen)
    await pilot.press("ctrl+g")
    return await wait_for_screen(pilot, ContradictionsDialog, timeout=60)


async def test_the_fact_and_the_sentence_appear_side_by_side_and_updating_the_fact_dates_it(store, server, embedder):
    app, story, mara = app_with_mara(store, server, embedder)
    async with app.run_test(size=(110, 34)) as pilot:
        dialog = await write_contradicting_paragraph(pilot)
        assert text_of(dialog.query_one("#contradiction-fact", Static)) == f"Mara: {SAILOR}"
        assert text_of(dialog.query_one("#contradiction-sentence", Static)) == CONTRADICTING
        assert "Paragraph 4 may contradict" in str(dialog.query_one("#contradiction-title").render())

        dialog.query_one("#contradiction-new-fact", Input).value = "Mara is afraid of the sea."
        await pilot.press("ctrl+s")
        screen = await wait_for_screen(pilot, WritingScreen)
        head = store.get_story(story.id).head_step_id
        facts = [(f.text, f.from_paragraph, f.until_paragraph, f.step_id) for f in store.facts_on_branch(story.id, head)]
        assert facts == [(SAILOR, 1, 3, None), ("Mara is afraid of the sea.", 4, None, head)], \
            "the old fact ends at the paragraph before; the new one holds from this one, learned on it"

        await pilot.press("ctrl+z")  # the new fact, then the end, are undoable steps
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: [f.until_paragraph for f in store.facts_on_branch(story.id, head)] == [None],
                         what="undo to take the update back")

        await pilot.press("f1")
        help_screen = await wait_for_screen(pilot, HelpScreen)
        rows = {str(row.query_one(".help-key").render()): str(row.query_one(".help-what").render())
                for row in help_screen.query(".help-row")}
        assert rows["^b"].startswith("Contradictions"), "listed in F1 help"
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("ctrl+b")  # shows them again
        await wait_for_screen(pilot, ContradictionsDialog)
        assert screen is not None


async def test_rewrite_opens_the_paragraph_editor_and_retry_writes_the_paragraph_again(store, server, embedder):
    app, story, _ = app_with_mara(store, server, embedder)
    async with app.run_test(size=(110, 34)) as pilot:
        await write_contradicting_paragraph(pilot)
        await pilot.press("ctrl+o")  # not ^e: the fact box takes it (end of line)
        editor = await wait_for_screen(pilot, CoWritingEditor)
        assert CONTRADICTING in editor.query_one("TextArea").text
        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)

        first = store.get_story(story.id).head_step_id
        await pilot.press("ctrl+b")
        await wait_for_screen(pilot, ContradictionsDialog)
        await pilot.press("ctrl+r")
        await wait_for_screen(pilot, ContradictionsDialog, timeout=60)  # the retry contradicts again
        retried = store.get_story(story.id).head_step_id
        assert retried != first and store.get_step(retried).parent_id == store.get_step(first).parent_id

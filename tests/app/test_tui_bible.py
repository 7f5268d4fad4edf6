"""The story bible in the writers' UI, as a writer uses it: Pilot presses keys on the real app
over a real SQLite file. Every change is an undoable step; bad input is one sentence in the
editor, and what was typed stays."""

from __future__ import annotations

import re

from textual.command import CommandList
from textual.content import Content
from textual.widgets import Input, OptionList, Static, TextArea

from longyarn.app.session.bible import BibleUpdate
from longyarn.app.settings import load_settings
from longyarn.app.tui.screens.bible import BibleScreen
from longyarn.app.tui.screens.bible_editor import EntryEditorScreen, FactTable
from longyarn.app.tui.screens.bible_updates import BibleUpdatesScreen, UpdateFactDialog
from longyarn.app.tui.screens.dialogs import ConfirmDialog, UnsavedEditDialog
from longyarn.app.tui.screens.help import HelpScreen
from longyarn.app.tui.screens.writing import WritingScreen
from longyarn.recurrent_core.bible import EntryDraft, FactDraft
from longyarn.recurrent_core.types import NewStep
from tests.app.test_tui import PARAGRAPHS, build_app, history_move, seed_story, wait_for_screen, wait_until
from tests.conftest import make_engine


def seed_bible(store, story_id: str) -> dict[str, str]:
    """Mara (with facts ended, in force and later, at paragraph 3 of 3), a place and an object."""
    mara = store.add_entry(
        story_id, name="Mara", kind="character", aliases=["the keeper"], description="She came home on the ferry.",
        notes="Older than she looks.",
        facts=[FactDraft("Mara is a sailor.", 1, 2), FactDraft("Mara keeps the lamp.", 1),
               FactDraft("Mara is a captain.", 3), FactDraft("Mara drowns.", 9)],
    )
    marsh = store.add_entry(story_id, name="Salt Marsh", kind="place", description="Mud, reeds and the burnt mill.")
    key = store.add_entry(story_id, name="Brass key", kind="object", description="Wrapped in a ledger page.")
    return {"Mara": mara.id, "Salt Marsh": marsh.id, "Brass key": key.id}


def app_on_story(store, server, embedder, **kwargs):
    story = seed_story(store, embedder, PARAGRAPHS)
    ids = seed_bible(store, story.id)
    return build_app(store, make_engine(store, server, embedder), story_id=story.id, **kwargs), story, ids


async def open_panel(pilot, *keys: str) -> BibleScreen:
    await pilot.press(*(keys or ("f10",)))
    panel = await wait_for_screen(pilot, BibleScreen)
    await wait_until(pilot, lambda: panel.view is not None, what="the bible")
    await pilot.pause()
    return panel


def listed(panel: BibleScreen) -> list[str]:
    return [str(option.prompt) for option in panel.query_one("#bible-entries", OptionList).options]


def text_of(widget: Static) -> str:
    return str(widget.render())


def dimmed_lines(widget: Static) -> list[str]:
    """The lines of a Static that are dim from start to end."""
    content = widget.render()
    assert isinstance(content, Content)
    return [
        line.plain for line in content.split("\n")
        if line.plain and any(s.start == 0 and s.end >= len(line.plain) and "dim" in str(s.style) for s in line.spans)
    ]


def facts_of(store, story_id: str, entry_id: str) -> list[tuple[str, int, int | None]]:
    head = store.get_story(story_id).head_step_id
    return [(f.text, f.from_paragraph, f.until_paragraph) for f in store.facts_on_branch(story_id, head)
            if f.entry_id == entry_id]


def highlight(panel, entry_id: str) -> None:
    entries = panel.query_one("#bible-entries", OptionList)
    entries.highlighted = entries.get_option_index(entry_id)


def one_sentence(text: str) -> bool:
    return bool(text) and len(re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip())) == 1


async def test_the_bible_opens_by_its_key_and_the_palette_lists_by_kind_and_searches(store, server, embedder):
    app, story, ids = app_on_story(store, server, embedder, keymap={"bible": "f11"})
    async with app.run_test(size=(110, 34)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        await pilot.press("f1")
        help_screen = await wait_for_screen(pilot, HelpScreen)
        rows = {str(row.query_one(".help-key").render()): str(row.query_one(".help-what").render())
                for row in help_screen.query(".help-row")}
        assert rows["f11"].startswith("Story bible") and rows["f12"].startswith("Bible updates"), "remapped, listed"
        await pilot.press("escape")

        panel = await open_panel(pilot, "f11")
        assert listed(panel) == ["Characters", "  Mara", "Places", "  Salt Marsh", "Objects", "  Brass key"]
        title = text_of(panel.query_one("#bible-title", Static))
        assert "at paragraph 3" in title and "3 entries" in title
        detail = panel.query_one("#bible-detail", Static)
        shown = text_of(detail)
        assert "Also: the keeper" in shown and "She came home on the ferry." in shown and "Older than she looks." in shown
        assert "Facts at paragraph 3: 2 of 4 in force" in shown
        assert "• Mara keeps the lamp.  (from paragraph 1)" in shown and "• Mara is a captain.  (from paragraph 3)" in shown
        assert dimmed_lines(detail) == [
            "  Mara is a sailor.  (paragraphs 1-2; ended)", "  Mara drowns.  (from paragraph 9; later)",
        ]

        await pilot.press("ctrl+f", *"KEEPER")  # an alias, in any case
        await wait_until(pilot, lambda: listed(panel) == ["Characters", "  Mara"], what="the search")
        search = panel.query_one("#bible-query", Input)
        for words, found in (("ledger", "  Brass key"), ("drowns", "  Mara"), ("burnt mill", "  Salt Marsh")):
            search.value = words
            await wait_until(pilot, lambda: found in listed(panel) and len(listed(panel)) == 2, what=words)
        search.value = "nobody at all"
        await wait_until(pilot, lambda: listed(panel) == [], what="no entry")
        assert "No entry has those words" in text_of(detail)
        search.value = ""
        await wait_until(pilot, lambda: len(listed(panel)) == 6, what="every entry again")
        await pilot.press("escape")

        await wait_for_screen(pilot, WritingScreen)
        for words, screen_type in (("bible updates", BibleUpdatesScreen), ("bible", BibleScreen)):
            await pilot.press("ctrl+p")
            await wait_until(pilot, lambda: app.screen.query(CommandList), what="the palette")
            await pilot.press(*words)
            await pilot.pause(0.3)
            commands = app.screen.query_one(CommandList)
            titles = [str(commands.get_option_at_index(i).prompt).split("\n")[0] for i in range(commands.option_count)]
            assert "Bible updates" in titles and ("Bible" in titles or words != "bible"), titles
            await pilot.press("enter")
            await wait_for_screen(pilot, screen_type)
            await pilot.press("escape")
            await wait_for_screen(pilot, WritingScreen)


async def test_an_entry_added_with_facts_is_undone_and_redone_from_the_panel(store, server, embedder):
    app, story, _ = app_on_story(store, server, embedder)
    async with app.run_test(size=(110, 40)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        panel = await open_panel(pilot)
        await pilot.press("n")
        editor = await wait_for_screen(pilot, EntryEditorScreen)
        await pilot.press(*"Tobias Fenn")
        editor.query_one("#entry-aliases", Input).value = "Tobias, the miller"
        editor.query_one("#entry-description", TextArea).load_text("The miller, who knows what burned.")
        editor.query_one("#fact-text").focus()
        await pilot.press(*"Tobias runs the mill.", "enter")
        await pilot.press(*"Tobias lit the fire.", "tab", "2", "tab", "3", "enter")
        assert editor.query_one(FactTable).row_count == 2
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, BibleScreen)
        await wait_until(pilot, lambda: "  Tobias Fenn" in listed(panel), what="the new entry")

        [tobias] = [entry for entry in store.list_entries(story.id) if entry.name == "Tobias Fenn"]
        assert (tobias.kind, tobias.aliases, tobias.description) == (
            "character", ("Tobias", "the miller"), "The miller, who knows what burned.")
        assert facts_of(store, story.id, tobias.id) == [("Tobias runs the mill.", 1, None), ("Tobias lit the fire.", 2, 3)]
        assert "Tobias Fenn" in text_of(panel.query_one("#bible-detail", Static)), "the new entry is highlighted"

        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: "  Tobias Fenn" not in listed(panel), what="the undo")
        assert [e.name for e in store.list_entries(story.id)] == ["Mara", "Salt Marsh", "Brass key"]
        assert text_of(panel.query_one("#bible-status", Static)) == (
            "Undone: adding the character 'Tobias Fenn'; ^y redoes it.")
        await pilot.press("ctrl+y")
        await wait_until(pilot, lambda: "  Tobias Fenn" in listed(panel), what="the redo")
        assert store.get_entry(tobias.id) == tobias and len(store.entry_facts(tobias.id)) == 2


async def test_a_facts_range_edited_and_a_fact_ended_are_undone_in_order_even_from_the_writing_screen(
    store, server, embedder
):
    app, story, ids = app_on_story(store, server, embedder)
    mara = ids["Mara"]
    async with app.run_test(size=(110, 40)) as pilot:
        writing = await wait_for_screen(pilot, WritingScreen)
        panel = await open_panel(pilot)
        highlight(panel, mara)
        await pilot.press("e")
        editor = await wait_for_screen(pilot, EntryEditorScreen)
        table = editor.query_one(FactTable)
        table.focus()
        table.move_cursor(row=2)  # Mara is a captain, from paragraph 3
        await pilot.press("e")
        assert editor.query_one("#fact-text", Input).value == "Mara is a captain."
        editor.query_one("#fact-from", Input).value = "4"
        editor.query_one("#fact-from", Input).focus()
        await pilot.press("enter", "ctrl+s")
        await wait_for_screen(pilot, BibleScreen)
        await wait_until(pilot, lambda: ("Mara is a captain.", 4, None) in facts_of(store, story.id, mara), what="the range")

        await pilot.press("e")
        editor = await wait_for_screen(pilot, EntryEditorScreen)
        table = editor.query_one(FactTable)
        table.focus()
        table.move_cursor(row=1)  # Mara keeps the lamp, from paragraph 1
        await pilot.press("x")
        assert editor.query_one("#fact-until", Input).value == "3", "ends at the current paragraph"
        assert "Ends at paragraph 3" in text_of(editor.query_one("#fact-hint", Static))
        await pilot.press("enter", "ctrl+s")
        await wait_for_screen(pilot, BibleScreen)
        await wait_until(pilot, lambda: ("Mara keeps the lamp.", 1, 3) in facts_of(store, story.id, mara), what="the end")
        assert "  Mara keeps the lamp.  (paragraphs 1-3; ended)" not in dimmed_lines(panel.query_one("#bible-detail")), (
            "it holds through paragraph 3, the current one")

        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)
        await history_move(pilot, writing, "ctrl+z")
        assert ("Mara keeps the lamp.", 1, None) in facts_of(store, story.id, mara)
        assert "Undone: the edit of the character 'Mara'" in str(writing.query_one("#status").render())
        await history_move(pilot, writing, "ctrl+z")
        assert ("Mara is a captain.", 3, None) in facts_of(store, story.id, mara)
        assert len(writing.session.branch) == 3, "no paragraph was undone"


async def test_always_is_pinned_with_one_key_and_a_removed_entry_comes_back_whole(store, server, embedder):
    app, story, ids = app_on_story(store, server, embedder)
    mara = ids["Mara"]
    second = store.branch(story.id)[1]
    other_version = store.commit_step(
        NewStep(story_id=story.id, parent_id=second.parent_id, instruction="Otherwise.", paragraph="The mill burned again.",
                short_term_memory="Otherwise.", memory_reason="", next_instructions=("a", "b", "c"),
                backend="openai", model="scripted-model"),
        embedding=embedder.embed(["The mill burned again."])[0], embedding_model=embedder.name, move_head=False,
    )
    store.add_fact(mara, "Mara burned the mill.", from_paragraph=2, step_id=other_version.id)  # another branch's
    every_fact = store.entry_facts(mara)
    async with app.run_test(size=(110, 34)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        panel = await open_panel(pilot)
        await pilot.press("f1")
        help_screen = await wait_for_screen(pilot, HelpScreen)
        rows = {str(row.query_one(".help-key").render()): str(row.query_one(".help-what").render())
                for row in help_screen.query(".help-row")}
        assert rows["p"] == "Pin the entry to every prompt, or unpin it" and rows["^z"] == "Undo"
        await pilot.press("escape")
        await wait_for_screen(pilot, BibleScreen)
        highlight(panel, mara)
        await pilot.press("p")
        await wait_until(pilot, lambda: store.get_entry(mara).always, what="the pin")
        await wait_until(pilot, lambda: "★ Mara" in listed(panel), what="the star")
        assert "★ always in the prompt" in text_of(panel.query_one("#bible-detail", Static))
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: not store.get_entry(mara).always and "  Mara" in listed(panel), what="unpinned")

        await pilot.press("d")
        dialog = await wait_for_screen(pilot, ConfirmDialog)
        assert "Remove the character 'Mara' and its facts (4 on this branch)" in dialog.question
        dialog.query_one("#confirm").press()
        await wait_until(pilot, lambda: store.list_entries(story.id) and "  Mara" not in listed(panel), what="removed")
        assert "Removed 'Mara'; ^z brings it back." == text_of(panel.query_one("#bible-status", Static))
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: "  Mara" in listed(panel), what="back")
        assert store.entry_facts(mara) == every_fact, "same ids, the other branch's fact too"


async def test_bad_input_is_one_sentence_in_the_editor_and_what_was_typed_stays(store, server, embedder):
    app, story, _ = app_on_story(store, server, embedder)
    before = store.list_entries(story.id)
    async with app.run_test(size=(110, 40)) as pilot:
        await wait_for_screen(pilot, WritingScreen)
        await open_panel(pilot)
        await pilot.press("n")
        editor = await wait_for_screen(pilot, EntryEditorScreen)
        problem = editor.query_one("#entry-problem", Static)
        await pilot.press(*"the KEEPER", "ctrl+s")
        await wait_until(pilot, lambda: problem.display, what="the problem")
        said = text_of(problem)
        assert said.startswith("'the KEEPER' is already an alias of the character 'Mara'") and one_sentence(said), said
        assert editor.query_one("#entry-name", Input).value == "the KEEPER" and app.screen is editor

        editor.query_one("#entry-name", Input).value = "  "
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: "needs a name" in text_of(problem), what="the empty name")
        assert one_sentence(text_of(problem))

        editor.query_one("#fact-text").focus()
        await pilot.press(*"Mara sleeps.", "tab", "5", "tab", "2", "enter")
        said = text_of(problem)
        assert said.startswith("A fact cannot end at paragraph 2 before it starts at paragraph 5") and one_sentence(said)
        typed = [editor.query_one(f"#fact-{part}", Input).value for part in ("text", "from", "until")]
        assert typed == ["Mara sleeps.", "5", "2"] and editor.query_one(FactTable).row_count == 0
        await pilot.press("ctrl+s")  # a fact typed but not added is checked first: still one sentence
        assert text_of(problem) == said and app.screen is editor

        await pilot.press("escape")
        await wait_for_screen(pilot, UnsavedEditDialog)
        await pilot.press("escape")  # keep editing: nothing is lost
        await wait_for_screen(pilot, EntryEditorScreen)
        assert editor.query_one("#fact-text", Input).value == "Mara sleeps."
        await pilot.press("escape")
        dialog = await wait_for_screen(pilot, UnsavedEditDialog)
        dialog.query_one("#discard").press()
        await wait_for_screen(pilot, BibleScreen)
    assert store.list_entries(story.id) == before


def proposals(steps) -> list[BibleUpdate]:
    third = steps[2].id
    return [
        BibleUpdate("new_entry", "Tobias", entry=EntryDraft("Tobias", "character", description="The miller.",
                                                            facts=(FactDraft("Tobias lit the fire.", 3),)),
                    step_id=third, paragraph=3),
        BibleUpdate("new_fact", "Mara", text="Mara found the key.", step_id=third, paragraph=3),
        BibleUpdate("end_fact", "Mara", text="Mara keeps the lamp.", step_id=third, paragraph=3),
        BibleUpdate("new_entry", "Ledger", entry=EntryDraft("Ledger", "object", facts=(FactDraft("It is torn.", 3),)),
                    step_id=third, paragraph=3),
    ]


async def test_proposed_updates_wait_in_a_queue_to_be_accepted_edited_or_rejected(store, server, embedder):
    app, story, ids = app_on_story(store, server, embedder)
    steps = store.branch(story.id)
    tobias, new_fact, ended, ledger = proposals(steps)
    async with app.run_test(size=(110, 34)) as pilot:
        writing = await wait_for_screen(pilot, WritingScreen)
        bible = writing.session.bible
        await bible.propose([tobias, new_fact, ended, ledger])
        await pilot.pause()
        waiting = writing.query_one("#bible-updates", Static)
        assert waiting.display and text_of(waiting) == "4 bible updates wait (f12)"

        await pilot.press("f12")
        queue = await wait_for_screen(pilot, BibleUpdatesScreen)
        assert len(queue.query_one("#updates", OptionList).options) == 4
        assert "Proposed: a new character, 'Tobias' with 1 fact" in text_of(queue.query_one("#update-detail", Static))
        await pilot.press("a")
        await wait_until(pilot, lambda: tobias not in bible.pending, what="accepted")
        [entry] = [e for e in store.list_entries(story.id) if e.name == "Tobias"]
        assert [(f.text, f.step_id) for f in store.entry_facts(entry.id)] == [("Tobias lit the fire.", steps[2].id)]

        await pilot.press("r")  # the new fact
        await wait_until(pilot, lambda: bible.pending == [ended, ledger], what="rejected")
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: bible.pending == [new_fact, ended, ledger], what="the reject undone")
        queue.query_one("#updates", OptionList).highlighted = 0
        await pilot.press("e")
        dialog = await wait_for_screen(pilot, UpdateFactDialog)
        dialog.query_one("#update-text", Input).value = "Mara found the brass key."
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, BibleUpdatesScreen)
        assert ("Mara found the brass key.", 3, None) in facts_of(store, story.id, ids["Mara"])

        queue.query_one("#updates", OptionList).highlighted = 1  # the ledger
        await pilot.press("e")
        editor = await wait_for_screen(pilot, EntryEditorScreen)
        assert editor.query_one("#entry-name", Input).value == "Ledger" and editor.query_one(FactTable).row_count == 1
        editor.query_one("#entry-description", TextArea).load_text("A page torn from the mill's ledger.")
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, BibleUpdatesScreen)
        [page] = [e for e in store.list_entries(story.id) if e.name == "Ledger"]
        assert page.description == "A page torn from the mill's ledger."
        assert [f.step_id for f in store.entry_facts(page.id)] == [steps[2].id], "learned on the paragraph's branch"
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: ledger in bible.pending, what="the acceptance undone")
        assert "Ledger" not in [e.name for e in store.list_entries(story.id)]

        await pilot.press("escape")
        await wait_for_screen(pilot, WritingScreen)
        assert text_of(waiting) == "2 bible updates wait (f12)"


async def test_the_queue_still_waits_when_the_writer_comes_back(store, server, embedder):
    app, story, ids = app_on_story(store, server, embedder)
    tobias, new_fact, ended, _ = proposals(store.branch(story.id))
    async with app.run_test(size=(110, 34)) as pilot:
        writing = await wait_for_screen(pilot, WritingScreen)
        await writing.session.bible.propose([tobias, new_fact, ended])
        await pilot.press("f12")
        await wait_for_screen(pilot, BibleUpdatesScreen)
        await pilot.press("r")  # Tobias
        await wait_until(pilot, lambda: writing.session.bible.pending == [new_fact, ended], what="rejected")

    again = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with again.run_test(size=(110, 34)) as pilot:
        writing = await wait_for_screen(pilot, WritingScreen)
        waiting = writing.query_one("#bible-updates", Static)
        await wait_until(pilot, lambda: text_of(waiting) == "2 bible updates wait (f12)", what="the queue read back")
        await pilot.press("f12")
        queue = await wait_for_screen(pilot, BibleUpdatesScreen)
        listed_ids = [option.id for option in queue.query_one("#updates", OptionList).options]
        assert listed_ids == [new_fact.id, ended.id], "the same updates, in the order they came"
        assert "Mara found the key." in text_of(queue.query_one("#update-detail", Static))


async def test_auto_accept_takes_waiting_and_later_updates_and_is_remembered(store, server, embedder):
    app, story, ids = app_on_story(store, server, embedder)
    tobias, new_fact, ended, _ = proposals(store.branch(story.id))
    unknown = BibleUpdate("new_fact", "Nobody", text="Who is it?", paragraph=3)
    async with app.run_test(size=(110, 34)) as pilot:
        writing = await wait_for_screen(pilot, WritingScreen)
        bible = writing.session.bible
        assert not bible.auto_accept, "off by default in the writers' UI"
        await bible.propose([tobias])
        await pilot.press("f12")
        queue = await wait_for_screen(pilot, BibleUpdatesScreen)
        await pilot.press("t")
        await wait_until(pilot, lambda: not bible.pending, what="the waiting update accepted")
        assert "Tobias" in [e.name for e in store.list_entries(story.id)]
        assert "accepted 1 waiting update" in text_of(queue.query_one("#updates-status", Static))
        assert load_settings().bible_auto_accept, "saved in the config file"

        await bible.propose([new_fact, ended, unknown])
        await wait_until(pilot, lambda: bible.pending == [unknown], what="accepted as they came")
        assert ("Mara keeps the lamp.", 1, 3) in facts_of(store, story.id, ids["Mara"])
        await pilot.pause()
        [label] = [str(option.prompt) for option in queue.query_one("#updates", OptionList).options]
        assert label.startswith("⚠") and "no entry called 'Nobody'" in text_of(queue.query_one("#update-detail"))

        await pilot.press("t")
        await wait_until(pilot, lambda: not load_settings().bible_auto_accept, what="off again")
        assert not bible.auto_accept

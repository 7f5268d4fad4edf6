"""The story bible section of each writer prompt (issue 14, item 2): which entries activate and why,
which facts go with them, the section's own budget, and what the step records. Every test reads
what the scripted server received."""

from __future__ import annotations

import json

import pytest

from longyarn.recurrent_core.backends.openai_backend import OpenAIBackend
from longyarn.recurrent_core.bible import FactDraft
from longyarn.recurrent_core.bible_activation import find_name, fold
from longyarn.recurrent_core.context import load_sent_context
from longyarn.recurrent_core.engine import Engine, EngineConfig
from longyarn.recurrent_core.prompts import layout_completion
from longyarn.recurrent_core.types import StepCompleted, StepStarted
from tests.conftest import make_engine

SECTION = "## Story bible\n"


def writer_prompts(server) -> list[str]:
    return [request["messages"][-1]["content"] for request in server.requests if request["_role"] == "writer"]


def bible_lines(prompt: str) -> list[str]:
    """The story bible section's lines as a writer prompt holds them ([] when it has none)."""
    if SECTION not in prompt:
        return []
    return prompt.split(SECTION, 1)[1].split("\n\n", 1)[0].splitlines()


def names_sent(prompt: str) -> list[str]:
    return [line.split(" (", 1)[0] for line in bible_lines(prompt)]


async def first_paragraph(engine, story_id: str, instruction: str) -> tuple[StepStarted, StepCompleted]:
    """A paragraph at the story's start (a new root each time): only the instruction is searched."""
    events = [event async for event in engine.step(story_id, instruction, parent_step_id=None)]
    return events[0], events[-1]


async def new_story(engine):
    story, _ = await engine.start_story("A harbour town.", "", title="Harbour", outline="A harbour town.")
    return story


async def test_always_and_named_entries_are_sent_by_whole_words_in_any_case_and_script(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story = await new_story(engine)
    store.add_entry(story.id, name="The Drowned Bell", kind="lore", description="It rings before a death.", always=True)
    store.add_entry(story.id, name="Mara", kind="character", description="A sailor.")
    store.add_entry(story.id, name="Łucja", kind="character", aliases=["the widow"], description="Keeps the inn.")
    store.add_entry(story.id, name="Old Harbour", kind="place", description="Silted up.")
    store.add_entry(story.id, name="Perrin Vale", kind="character", aliases=["Vale"], description="The harbour master.")

    started, _ = await first_paragraph(engine, story.id, "ŁUCJA pours a Maraschino by the old  harbour for Vale.")
    [prompt] = writer_prompts(server)
    assert names_sent(prompt) == ["The Drowned Bell", "Łucja", "Old Harbour", "Perrin Vale"]
    assert "Keep to the story bible" in prompt
    [planner] = [r["messages"][-1]["content"] for r in server.requests if r["_role"] == "planner"]
    assert bible_lines(planner) == bible_lines(prompt), "the planner sees what the writer was given"
    assert "The Drowned Bell (lore): It rings before a death." in bible_lines(prompt)
    assert "Łucja (character; also the widow): Keeps the inn." in bible_lines(prompt)
    why = {entry.name: (entry.reason, entry.word, entry.where) for entry in started.bible.entries}
    assert why == {
        "The Drowned Bell": ("always", "", ""),
        "Łucja": ("named", "Łucja", "the instruction"),
        "Old Harbour": ("named", "Old Harbour", "the instruction"),
        "Perrin Vale": ("named", "Vale", "the instruction"),
    }, "Mara is not named by Maraschino"


async def test_a_name_in_the_short_term_memory_or_the_last_paragraphs_activates_its_entry(store, server, embedder):
    engine = make_engine(store, server, embedder, bible_meaning_max=0, bible_scan_paragraphs=2)
    story = await new_story(engine)
    store.add_entry(story.id, name="Wenna", kind="character", description="The innkeeper.")
    first = (await engine.run_step(story.id, "Wenna lights the lamp.")).step  # the paragraph names her
    store.update_short_term_memory(first.id, "The tide is out.")
    second = await engine.run_step(story.id, "The tide goes out.")
    store.update_short_term_memory(second.step.id, "Wenna is waiting at the quay.")
    third = await engine.run_step(story.id, "Boats come in.")
    store.update_short_term_memory(third.step.id, "The tide is in.")
    await engine.run_step(story.id, "Night falls.")  # paragraph 1 is three back: not searched

    prompts = writer_prompts(server)
    assert [names_sent(prompt) for prompt in prompts] == [["Wenna"], ["Wenna"], ["Wenna"], []]
    where = [store.step_context(step.id).bible.entries[0].where
             for step in (first, second.step, third.step)]
    assert where == ["the instruction", "paragraph 1", "the short-term memory"]


async def test_an_entry_with_secondary_keys_needs_one_of_them_beside_its_name(store, server, embedder):
    engine = make_engine(store, server, embedder, bible_meaning_max=0)
    story = await new_story(engine)
    store.add_entry(story.id, name="Orrin", kind="character", secondary_keys=["ship", "deck"], description="A mate.")

    await first_paragraph(engine, story.id, "Orrin sleeps at the inn.")
    started, _ = await first_paragraph(engine, story.id, "Orrin climbs onto the DECK.")
    without, with_key = writer_prompts(server)
    assert names_sent(without) == [] and SECTION not in without
    assert names_sent(with_key) == ["Orrin"]
    [entry] = started.bible.entries
    assert (entry.reason, entry.word, entry.secondary_key) == ("named", "Orrin", "deck")


async def test_an_entry_close_in_meaning_to_the_instruction_is_sent_with_its_score(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story = await new_story(engine)
    store.add_entry(story.id, name="Storm lore", kind="lore",
                    description="Sailors believe that whistling on deck calls up the wind and a storm.")
    store.add_entry(story.id, name="The Guild of Clocks", kind="group", description="Clockmakers who keep the city's hours.")

    started, _ = await first_paragraph(engine, story.id, "A sailor whistles on deck as the wind rises.")
    [prompt] = writer_prompts(server)
    assert names_sent(prompt) == ["Storm lore"]
    [entry] = started.bible.entries
    assert entry.reason == "meaning" and entry.score >= EngineConfig().bible_meaning_threshold


async def test_entries_the_activated_ones_mention_come_too_one_level_deep(store, server, embedder):
    engine = make_engine(store, server, embedder, bible_meaning_max=0)
    story = await new_story(engine)
    store.add_entry(story.id, name="Perrin", kind="character", description="His sister is Wenna.",
                    facts=[FactDraft("Perrin owes Tamsin money")])
    store.add_entry(story.id, name="Wenna", kind="character", description="Wenna keeps the Gull's Nest.")
    store.add_entry(story.id, name="Tamsin", kind="character", description="A moneylender.")
    store.add_entry(story.id, name="Gull's Nest", kind="place", description="An inn.")

    started, _ = await first_paragraph(engine, story.id, "Perrin walks home.")
    [prompt] = writer_prompts(server)
    assert names_sent(prompt) == ["Perrin", "Tamsin", "Wenna"], "the Gull's Nest is two levels away"
    why = {entry.name: (entry.reason, entry.word, entry.where) for entry in started.bible.entries}
    assert why["Wenna"] == ("mentioned", "Wenna", "Perrin")
    assert why["Tamsin"] == ("mentioned", "Tamsin", "Perrin"), "a fact in force mentions her"


async def test_only_facts_in_force_at_the_paragraph_on_its_branch_are_sent(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story = await new_story(engine)
    perrin = store.add_entry(story.id, name="Perrin", kind="character", always=True, facts=[
        FactDraft("Perrin is a deckhand", 1, 2),
        FactDraft("Perrin is the harbour master", 3),
        FactDraft("Perrin is dead", 5),
    ])
    first = (await engine.run_step(story.id, "The tide goes out.")).step
    second = (await engine.run_step(story.id, "The boats are beached.")).step
    store.add_fact(perrin.id, "Perrin lost his left hand", from_paragraph=2, step_id=second.id)

    await engine.run_step(story.id, "A storm comes in.")  # paragraph 3, after the second
    await first_paragraph(engine, story.id, "The tide comes in.")  # paragraph 1 of a new root
    await engine.run_step(story.id, "The boats stay out.", parent_step_id=first.id)  # a sibling of the second
    prompts = writer_prompts(server)
    assert bible_lines(prompts[0]) == ["Perrin (character): Facts: Perrin is a deckhand."]
    assert bible_lines(prompts[2]) == [
        "Perrin (character): Facts: Perrin lost his left hand; Perrin is the harbour master."
    ], "the deckhand ended at paragraph 2; death is not yet"
    assert bible_lines(prompts[3]) == ["Perrin (character): Facts: Perrin is a deckhand."]
    assert bible_lines(prompts[4]) == ["Perrin (character): Facts: Perrin is a deckhand."], (
        "paragraph 2 of a sibling branch: the hand was lost on the other one"
    )


async def test_a_readers_step_uses_the_authors_bible_with_its_own_branchs_facts(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story = await new_story(engine)
    perrin = store.add_entry(story.id, name="Perrin", kind="character", always=True, facts=[FactDraft("Perrin is kind")])
    first = (await engine.run_step(story.id, "The tide goes out.")).step
    store.create_reader(reader_id="reader-ada", name="Ada", token_hash="ab" * 32)
    read = await engine.run_step(
        story.id, "Ada asks Perrin the way.", parent_step_id=first.id, branch_owner="reader-ada", move_head=False
    )
    store.add_fact(perrin.id, "Perrin owes Ada a favour", from_paragraph=2, step_id=read.step.id)

    await engine.run_step(story.id, "Ada follows him.", parent_step_id=read.step.id, branch_owner="reader-ada",
                          move_head=False)
    await engine.run_step(story.id, "The author's own next paragraph.")
    reader_prompt, author_prompt = writer_prompts(server)[-2:]
    assert bible_lines(reader_prompt) == ["Perrin (character): Facts: Perrin is kind; Perrin owes Ada a favour."]
    assert bible_lines(author_prompt) == ["Perrin (character): Facts: Perrin is kind."]


async def test_the_bible_budget_leaves_out_the_lowest_priority_entries_whole_and_the_step_records_them(
    store, server, embedder
):
    engine = make_engine(store, server, embedder, bible_budget_tokens=40, bible_meaning_max=0)
    story = await new_story(engine)
    store.add_entry(story.id, name="Tide rule", kind="rule", description="Boats leave only at high water.", always=True)
    store.add_entry(story.id, name="Perrin", kind="character", description="The harbour master, who counts every boat.")
    store.add_entry(story.id, name="Wenna", kind="character", description="Perrin's sister, who keeps the inn by the quay.")
    store.add_entry(story.id, name="Tamsin", kind="character", description="A moneylender.")

    started, completed = await first_paragraph(engine, story.id, "Perrin meets Wenna and Tamsin on the quay.")
    [prompt] = writer_prompts(server)
    assert names_sent(prompt) == ["Tide rule", "Perrin"]
    assert [(e.name, e.trimmed) for e in started.bible.entries] == [
        ("Tide rule", ""), ("Perrin", ""), ("Wenna", "bible budget"), ("Tamsin", "bible budget"),
    ]
    sent = load_sent_context(store, completed.step.id)
    assert sent.bible == started.bible, "the record is stored with the step"
    assert sent.sections == started.context and not sent.edited_since


async def test_an_always_entry_alone_over_the_budget_is_cut_to_fit_and_says_so(store, server, embedder):
    engine = make_engine(store, server, embedder, bible_budget_tokens=30, bible_meaning_max=0)
    story = await new_story(engine)
    store.add_entry(story.id, name="The Compact", kind="rule", always=True,
                    description="No ship leaves the harbour at night, no lamp is lit on the quay, " * 4)
    store.add_entry(story.id, name="Perrin", kind="character", always=True, description="The harbour master.")
    store.add_entry(story.id, name="Wenna", kind="character", description="The innkeeper.")

    started, completed = await first_paragraph(engine, story.id, "Night falls on Wenna.")
    perrin_line, compact_line = bible_lines(writer_prompts(server)[0])
    assert perrin_line == "Perrin (character): The harbour master."
    assert compact_line.startswith("The Compact (rule): No ship leaves") and compact_line.endswith("…")
    perrin, compact, wenna = started.bible.entries
    assert compact.cut_to_chars == len(compact_line) and not compact.trimmed
    assert perrin.tokens + compact.tokens <= 30
    assert wenna.trimmed == "bible budget"
    assert load_sent_context(store, completed.step.id).sections == started.context


async def test_the_context_budget_takes_whole_entries_from_the_sections_end(store, server, embedder):
    engine = make_engine(store, server, embedder, bible_meaning_max=0)
    story = await new_story(engine)
    for name in ("Perrin", "Wenna", "Tamsin"):
        store.add_entry(story.id, name=name, kind="character", description=f"{name} has lived by the quay all along.")
    instruction = "Perrin, Wenna and Tamsin meet."
    roomy = await engine.plan_step(story.id, instruction, None)
    line_tokens = engine.backend.count_tokens(bible_lines_of(roomy)[0])
    engine.config.context_budget_tokens = roomy.prompt_tokens - line_tokens  # one entry too many

    started, completed = await first_paragraph(engine, story.id, instruction)
    assert names_sent(writer_prompts(server)[0]) == ["Perrin", "Wenna"]
    assert [(e.name, e.trimmed) for e in started.bible.entries] == [
        ("Perrin", ""), ("Wenna", ""), ("Tamsin", "context budget"),
    ]
    assert load_sent_context(store, completed.step.id).sections == started.context


def bible_lines_of(plan) -> list[str]:
    return next(s.text for s in plan.prompt.context if s.name == "Story bible").splitlines()


async def test_an_entry_edited_since_shows_as_it_reads_now(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story = await new_story(engine)
    perrin = store.add_entry(story.id, name="Perrin", kind="character", always=True, description="A deckhand.")
    _, completed = await first_paragraph(engine, story.id, "The tide goes out.")
    store.update_entry(perrin.id, description="The harbour master.")
    sent = load_sent_context(store, completed.step.id)
    assert sent.edited_since == {"Story bible"}
    assert next(s.text for s in sent.sections if s.name == "Story bible") == "Perrin (character): The harbour master."


async def test_a_story_without_a_bible_gets_the_prompts_it_got_before(store, server, embedder):
    """No entries, or entries none of which activate: no section, and every request the same."""
    engine = make_engine(store, server, embedder)
    plain = await new_story(engine)
    with_bible = await new_story(engine)
    store.add_entry(with_bible.id, name="Zebulon", kind="character", description="A glassblower in the capital.")
    received = []
    for story in (plain, with_bible):
        server.requests.clear()
        for instruction in ("The tide goes out.", "The boats are beached.", "A storm comes in."):
            completed = await engine.run_step(story.id, instruction)
            assert store.step_context(completed.step.id).bible is None
        # Sorted: a step asks for its memory and its plans at once, in either order.
        received.append(sorted((r["_role"], json.dumps(r["messages"])) for r in server.requests))
    assert received[0] == received[1]
    assert all(SECTION not in messages and "story bible" not in messages for _role, messages in received[0])

    plan = await engine.plan_step(plain.id, "The tide turns.")
    previous = store.get_step(plan.parent_id)
    before = engine.fitter(plain.id).writer(
        plan.story, plan.instruction, plan.short_term_memory, plan.recalled, previous.paragraph
    )
    assert plan.prompt == before, "the writer's prompt as built without the bible's argument"


async def test_a_jrt_layout_reads_the_bible_after_the_outline_in_each_copy(store, server, embedder):
    backend = OpenAIBackend("scripted-model", base_url=server.base_url, api_key=None, backoff_s=0.01, jrt_repeats=2)
    engine = Engine(store, backend, embedder, EngineConfig())
    story, _ = await engine.start_story("A harbour town.", "", title="Harbour", outline="The harbour silts up.")
    store.add_entry(story.id, name="Perrin", kind="character", always=True, description="The harbour master.")
    for instruction in ("The tide goes out.", "The boats are beached."):
        await engine.run_step(story.id, instruction)
    prompt = writer_prompts(server)[-1]
    assert prompt.count(SECTION) == 2
    for copy in prompt.split("## Story frame")[1:]:
        assert copy.index("## Outline") < copy.index(SECTION) < copy.index("## Short-term memory")

    plan = await engine.plan_step(story.id, "The tide comes in.")
    local = layout_completion(plan.prompt, 2, chat=False)
    assert local.count(SECTION) == 2 and local.index("## Outline") < local.index(SECTION)


@pytest.mark.parametrize("text", ["", "   "])
def test_no_section_for_an_empty_bible_text(store, server, embedder, text):
    engine = make_engine(store, server, embedder)
    fitter = engine.fitter(None)
    story = store.create_story(title="T", premise="P", genre="", outline="O")
    assert fitter.writer(story, "Go.", "", [], "", bible=text) == fitter.writer(story, "Go.", "", [], "")


@pytest.mark.parametrize(("name", "text", "named"), [
    ("Mara", "Mara's boat", True),
    ("Mara", "a glass of MARASCHINO", False),
    ("Mara", "Amara sails", False),
    ("Élise", "ÉLISE waits.", True),
    ("Straße", "the STRASSE is wet", True),  # full case folding
    ("Old Harbour", "by the old\nharbour wall", True),
    ("Dr. Vance", "Dr.  Vance smiles.", True),
    ("李明", "李明走了。", True),  # no spaces between words: no word boundary needed
    ("민수", "민수가 왔다.", True),  # a Korean particle joins the name
    ("Łucja", "Łucjan is her son.", False),
])
def test_names_match_as_whole_words_case_insensitively_in_any_script(name, text, named):
    assert (find_name(name, fold(text)) >= 0) is named

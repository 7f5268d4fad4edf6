"""Each step keeps what its writer was given, compactly, and it reads back as it was sent."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from longyarn.recurrent_core.context import load_sent_context
from longyarn.recurrent_core.types import StepCompleted, StepStarted
from tests.conftest import make_engine

INSTRUCTIONS = [
    None,
    "The ferryman meets a ghost at the landing.",
    "The ghost asks for passage across the river.",
    "They reach the far bank at dawn.",
    "The ghost remembers the ferryman's father.",
]


async def write(engine, story_id: str) -> dict[str, StepStarted]:
    """Run the steps; what each step's writer was given, by the id of the step it made."""
    started_by_step = {}
    for instruction in INSTRUCTIONS:
        events = [event async for event in engine.step(story_id, instruction)]
        assert isinstance(events[0], StepStarted) and isinstance(events[-1], StepCompleted)
        started_by_step[events[-1].step.id] = events[0]
    return started_by_step


@pytest.mark.parametrize("budget", [3000, 950, 700])
async def test_the_context_viewer_reads_back_exactly_what_each_step_sent(store, server, embedder, budget):
    engine = make_engine(store, server, embedder, context_budget_tokens=budget, recall_k=2)
    outline = "The ferry crosses the black river, and every crossing costs a memory. " * 12
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline=outline)
    started_by_step = await write(engine, story.id)

    for step_id, started in started_by_step.items():
        sent = load_sent_context(store, step_id)
        assert sent is not None
        assert sent.instruction == started.instruction
        assert sent.sections == started.context, "each section's text, tokens and trim, as sent"
        assert [(m.memory_id, m.step_id, m.text, m.pinned) for m in sent.recalled] == [
            (m.memory_id, m.step_id, m.text, m.pinned) for m in started.recalled
        ]
        assert [m.score for m in sent.recalled] == pytest.approx([m.score for m in started.recalled], abs=1e-4)
        assert not sent.edited_since
    # Smaller budgets cut sections partway (the end, or the start of the previous paragraph;
    # a section cut away whole is not in the set),
    # so the rebuilt cuts are checked too.
    cut = {s.name for st in started_by_step.values() for s in st.context if s.trimmed_chars and s.text}
    assert cut == {3000: set(), 950: {"Outline"}, 700: {"Outline", "Previous paragraph"}}[budget]


async def test_a_steps_stored_context_is_small_next_to_the_text_it_describes(store, server, embedder):
    engine = make_engine(store, server, embedder, recall_k=3)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    started_by_step = await write(engine, story.id)
    last_id, last = list(started_by_step.items())[-1]
    with store.engine.connect() as connection:
        sections, recalled = connection.execute(
            text("SELECT sections, recalled FROM step_contexts WHERE step_id = :id"), {"id": last_id}
        ).one()
    stored_bytes = len(sections) + len(recalled)
    sent_bytes = sum(len(s.text.encode()) for s in last.context)
    assert len(json.loads(recalled)) == 3
    assert stored_bytes < 1000 < sent_bytes and stored_bytes * 2 < sent_bytes


async def test_a_source_edited_later_is_shown_as_it_reads_now_and_marked(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry crosses a river.")
    started_by_step = await write(engine, story.id)
    step_id, started = list(started_by_step.items())[2]
    previous = store.get_step(store.get_step(step_id).parent_id)
    store.update_story(story.id, outline="The river is the border of the dead.")
    store.update_short_term_memory(previous.id, "The ghost is the ferryman's father.")

    sent = load_sent_context(store, step_id)
    assert sent.edited_since == {"Outline", "Short-term memory"}
    shown = {s.name: s for s in sent.sections}
    assert shown["Outline"].text == "The river is the border of the dead."
    assert shown["Short-term memory"].text == "The ghost is the ferryman's father."
    as_sent = {s.name: s for s in started.context}
    for name in ("Story frame", "Recalled passages", "Previous paragraph"):
        assert shown[name] == as_sent[name], "untouched sections are still exactly as sent"
    assert [s.tokens for s in sent.sections] == [s.tokens for s in started.context]


def rewrite_stored_context(store, step_id: str, change) -> None:
    """Change a step's stored context row as `change(stored)` says, in its newer object form."""
    with store.engine.begin() as connection:
        stored = json.loads(connection.execute(
            text("SELECT sections FROM step_contexts WHERE step_id = :id"), {"id": step_id}
        ).scalar_one())
        stored = stored if isinstance(stored, dict) else {"sections": stored}
        change(stored)
        connection.execute(
            text("UPDATE step_contexts SET sections = :sections WHERE step_id = :id"),
            {"sections": json.dumps(stored), "id": step_id},
        )


async def test_a_step_stored_while_the_story_frame_was_called_story_bible_reads_back_as_sent(store, server, embedder):
    engine = make_engine(store, server, embedder, recall_k=2)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry crosses a river.")
    step_id, started = list((await write(engine, story.id)).items())[-1]
    frame = next(section for section in started.context if section.name == "Story frame")

    def as_earlier_versions_wrote_it(stored):  # the section, and one the planner trimmed, as "Story bible"
        for section in stored["sections"]:
            section["name"] = "Story bible" if section["name"] == "Story frame" else section["name"]
        stored["trimmed_elsewhere"] = [["planner", "Story bible", 120]]

    rewrite_stored_context(store, step_id, as_earlier_versions_wrote_it)
    sent = load_sent_context(store, step_id)
    assert sent.sections == started.context, "each section's text, under its name of today, as sent"
    assert not sent.edited_since
    assert sent.trimmed_elsewhere == (("planner", "Story frame", 120),)

    def with_a_story_bible_beside_the_frame(stored):  # the bible's own section, in a newer step
        [section] = [section for section in stored["sections"] if section["name"] == "Story bible"]
        section["name"] = "Story frame"
        stored["sections"].append(dict(section, name="Story bible"))

    rewrite_stored_context(store, step_id, with_a_story_bible_beside_the_frame)
    shown = {section.name: section for section in load_sent_context(store, step_id).sections}
    assert shown["Story frame"] == frame and "Story bible" in shown, "the bible is not taken for the frame"

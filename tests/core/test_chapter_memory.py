"""Chapters as the third memory tier: what the writer's prompt says about them, as the scripted
server received it; their budget, trimmed oldest first and recorded for the context viewer; the
chapter_summary role, its reply parser and its fallbacks; the scene-break mark."""

from __future__ import annotations

import pytest

from longyarn.recurrent_core.chapter_summaries import summarise_chapter
from longyarn.recurrent_core.context import load_sent_context
from longyarn.recurrent_core.replies import fallbacks
from longyarn.recurrent_core.replies.chapter_summary import parse_chapter_summary
from longyarn.recurrent_core.replies.scene_break import split_scene_break
from tests.app.test_tui import PARAGRAPHS, seed_story
from tests.conftest import make_engine
from tests.scripted_server import Reply, ScriptedServer, prompt_tokens

RULE = (
    " If this paragraph ends the current chapter at a natural scene break, end your reply with one "
    "more line that holds only three asterisks: * * *"
)


def writer_messages(server: ScriptedServer) -> list[dict]:
    return [r["messages"] for r in server.requests if r["_role"] == "writer"][-1]


def chapters_section(messages: list[dict]) -> str:
    return messages[-1]["content"].split("## Chapters\n", 1)[1].split("\n\n## ", 1)[0]


async def test_a_story_without_chapters_gets_the_very_prompt_it_got_before_chapters(store, server, embedder):
    """Two stories alike, one with chapters: take its Chapters section and its scene-break
    sentence away, and what is left is, byte for byte, the other's prompt."""
    engine = make_engine(store, server, embedder)
    plain = seed_story(store, embedder, PARAGRAPHS)
    with_chapters = seed_story(store, embedder, PARAGRAPHS)
    store.add_chapter(with_chapters.id, title="Homecoming", summary="Mara came home.", closed=True)
    store.add_chapter(with_chapters.id, title="", start_step_id=store.branch(with_chapters.id)[2].id)

    await engine.run_step(plain.id, "Mara opens the locked room.")
    without = writer_messages(server)
    await engine.run_step(with_chapters.id, "Mara opens the locked room.")
    with_them = writer_messages(server)

    section = chapters_section(with_them)
    assert section == (
        "This paragraph is in chapter 2, which began at paragraph 3.\n"
        'Chapter 1, "Homecoming" (paragraphs 1-2): Mara came home.'
    )
    assert "## Chapters" not in without[-1]["content"] and RULE not in without[-1]["content"]
    stripped = with_them[-1]["content"].replace(f"## Chapters\n{section}\n\n", "").replace(RULE, "")
    assert stripped == without[-1]["content"]
    assert with_them[0] == without[0], "the system message is the same"
    assert with_them[-1]["content"].index("## Short-term memory") < with_them[-1]["content"].index("## Chapters")
    assert with_them[-1]["content"].index("## Chapters") < with_them[-1]["content"].index("## Recalled passages")


async def test_earlier_summaries_are_trimmed_oldest_first_and_the_context_viewer_shows_it(store, server, embedder):
    engine = make_engine(store, server, embedder, chapter_budget_tokens=120)
    story = seed_story(store, embedder, PARAGRAPHS + ["She turned the key.", "The door opened.", "Dust rose."])
    steps = store.branch(story.id)
    for number, start in enumerate([None, steps[1].id, steps[2].id, steps[3].id, steps[4].id], 1):
        long_summary = f"Summary {number}: " + " ".join(["the tide came in and went out again"] * 6) + "."
        store.add_chapter(story.id, title=f"Part {number}", summary=long_summary, start_step_id=start, closed=True)

    completed = await engine.run_step(story.id, "Mara goes down to the water.")
    section = chapters_section(writer_messages(server))
    lines = section.splitlines()
    assert lines[0] == "This paragraph begins chapter 6."
    assert lines[1].startswith('Chapter 5, "Part 5" (paragraphs 5-6): Summary 5:')
    assert lines[-1] == "…", "an ellipsis says earlier summaries were left out"
    assert "Summary 1:" not in section, "the oldest summary goes first"
    assert engine.backend.count_tokens(section) <= 120

    sent = load_sent_context(store, completed.step.id)
    chapters = next(s for s in sent.sections if s.name == "Chapters")
    assert chapters.text == section and chapters.trimmed_chars > 0
    assert "Chapters" not in sent.edited_since, "rebuilt exactly as it was sent"


async def test_a_readers_own_paragraphs_after_a_closed_chapter_are_in_the_next_one(store, server, embedder):
    """The author closed the last chapter; a reader goes on. Their first paragraph begins
    chapter 2, and their later ones are in it, not each the start of another."""
    engine = make_engine(store, server, embedder)
    story = seed_story(store, embedder, PARAGRAPHS)
    authors = len(PARAGRAPHS)
    store.add_chapter(story.id, title="Homecoming", summary="Mara came home.", closed=True)
    last = store.branch(story.id)[-1]

    first = await engine.run_step(story.id, "Ada knocks.", parent_step_id=last.id, branch_owner="reader-ada", move_head=False)
    assert chapters_section(writer_messages(server)).startswith("This paragraph begins chapter 2.\n")
    second = await engine.run_step(story.id, "Ada waits.", parent_step_id=first.step.id, branch_owner="reader-ada",
                                   move_head=False)
    section = chapters_section(writer_messages(server))
    assert section == (
        f"This paragraph is in chapter 2, which began at paragraph {authors + 1}.\n"
        f'Chapter 1, "Homecoming" (paragraphs 1-{authors}): Mara came home.'
    )
    sent = load_sent_context(store, second.step.id)
    assert next(s for s in sent.sections if s.name == "Chapters").text == section
    assert "Chapters" not in sent.edited_since, "the context viewer rebuilds it as it was sent"


async def test_the_chapter_summary_role_is_repaired_once_then_falls_back_to_the_opening_sentences(store, embedder):
    async with ScriptedServer() as server:
        engine = make_engine(store, server, embedder, parse_retries=1)
        story = seed_story(store, embedder, PARAGRAPHS)
        server.enqueue(Reply("I'm sorry, I can't."), Reply('{"title": "The Key", "summary": "Mara found a key."}'))
        repaired = await summarise_chapter(engine, story.id, PARAGRAPHS, chapter="Chapter 1")
        assert (repaired.summary, repaired.title, repaired.fallbacks) == ("Mara found a key.", "The Key", ())
        asked = [r for r in server.requests if r["_role"] == "chapter_summary"]
        assert len(asked) == 2 and "The reply had no readable summary." in asked[1]["messages"][-1]["content"]
        assert PARAGRAPHS[2] in asked[0]["messages"][-1]["content"]

        server.enqueue(Reply("..."), Reply("?"))
        fallen = await summarise_chapter(engine, story.id, PARAGRAPHS, chapter="Chapter 1")
        assert fallen.summary == " ".join(PARAGRAPHS), "about sixty words of the chapter's opening sentences"
        assert fallen.title is None and fallen.fallbacks == (fallbacks.CHAPTER_SUMMARY_FROM_OPENING,)


async def test_a_chapter_too_long_for_one_request_is_summarised_in_parts_and_every_request_fits(store, embedder):
    budget = 700
    async with ScriptedServer(context_tokens=budget + 600) as server:
        engine = make_engine(store, server, embedder, context_budget_tokens=budget)
        long_paragraphs = [f"Paragraph {n}: " + " ".join(["Mara walked the long causeway in the fog"] * 12) + "."
                           for n in range(1, 13)]
        story = seed_story(store, embedder, long_paragraphs[:1])
        summary = await summarise_chapter(engine, story.id, long_paragraphs, chapter="Chapter 1")
        asked = [r for r in server.requests if r["_role"] == "chapter_summary"]
        assert len(asked) >= 3, "the parts, then the parts' summaries together"
        assert server.over_context == 0 and all(prompt_tokens(r) <= budget for r in asked)
        assert "part 1 of" in asked[0]["messages"][-1]["content"]
        assert summary.summary.startswith("In this chapter") and summary.fallbacks == ()


@pytest.mark.parametrize(
    "reply, summary, title",
    [
        ('{"title": "The Key", "summary": "Mara found a key."}', "Mara found a key.", "The Key"),
        ('```json\n{"summary": "Mara found a key.", "title": "\\"The Key\\""}\n```', "Mara found a key.", "The Key"),
        ("Title: **The Key**\nSummary: Mara found\na key.", "Mara found a key.", "The Key"),
        ("Mara found a key in her mother's drawer.", "Mara found a key in her mother's drawer.", None),
        ("Here is the summary:\n\nSummary: Mara found a key.\n\nLet me know if you want changes.", "Mara found a key.", None),
        ("", None, None),
    ],
)
def test_a_chapter_summary_reply_reads_in_its_usual_shapes(reply, summary, title):
    parsed = parse_chapter_summary(reply)
    assert (parsed.summary, parsed.title) == (summary, title)


def test_a_cut_off_summary_is_cut_back_to_its_last_sentence():
    parsed = parse_chapter_summary("Summary: Mara found a key. Then she went down to the", cut_off=True)
    assert parsed.summary == "Mara found a key." and parsed.truncated


@pytest.mark.parametrize("mark", ["* * *", "***", "  *  *  *  ", "#", "⁂", "~~~", "---", "[scene break]",
                                  "(End of chapter)", "END OF CHAPTER 3", "**Chapter ends.**"])
def test_a_scene_break_on_the_last_line_ends_the_chapter_and_leaves_the_prose(mark):
    prose, marked = split_scene_break(f"She closed the door.\nThe house was quiet.\n\n{mark}\n")
    assert marked and prose == "She closed the door.\nThe house was quiet."


@pytest.mark.parametrize("reply", [
    "She closed the door.\n* * *\nMorning came.",  # inside the paragraph: no chapter ends there
    "* * *",  # a mark alone is no paragraph
    "The stars were * * * bright.",
    "He wrote: end of the chapter, and smiled.",
])
def test_no_scene_break_where_the_mark_is_not_alone_on_the_last_line(reply):
    prose, marked = split_scene_break(reply)
    assert not marked and prose == reply

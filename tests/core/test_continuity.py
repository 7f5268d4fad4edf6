"""Contradiction checks (issue 14, item 4): the facts the writer was sent reach the continuity
role, its answer is matched back to them, and the step carries and records what it found.
The scripted server's checker reports only what the request it received shows."""

from __future__ import annotations

import json

from longyarn.recurrent_core.bible import FactDraft
from longyarn.recurrent_core.replies import fallbacks
from tests.conftest import make_engine
from tests.scripted_continuity import continuity_checker, section
from tests.scripted_server import Reply, story_responder

SAILOR = "Mara is a sailor."
CONTRADICTING = "Mara has never been to sea in her life."


def planted_story(paragraphs: dict[str, str], planted=((SAILOR, CONTRADICTING),), *, continuity_reply=None):
    """Writer replies by instruction word; the continuity role answers as the honest checker."""
    checker = continuity_checker(planted)

    def respond(request: dict) -> Reply:
        role = request.get("_role")
        text = request["messages"][-1]["content"]
        if role == "writer":
            for word, paragraph in paragraphs.items():
                if word in text:
                    return Reply(paragraph)
        if role == "continuity":
            return Reply(continuity_reply if continuity_reply is not None else json.dumps(checker(request)))
        return story_responder(request)

    return respond


async def story_with_mara(store, engine):
    story, _ = await engine.start_story("A harbour town.", "", title="Harbour", outline="A harbour town.")
    entry = store.add_entry(story.id, name="Mara", kind="character", description="Keeps the light.",
                            facts=[FactDraft(SAILOR), FactDraft("Mara fears the dark.")])
    return story, entry


def continuity_requests(server) -> list[str]:
    return [r["messages"][-1]["content"] for r in server.requests if r["_role"] == "continuity"]


async def test_a_contradiction_is_found_matched_to_its_fact_and_recorded_with_the_step(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, mara = await story_with_mara(store, engine)
    [sailor, dark] = store.entry_facts(mara.id)
    server.responder = planted_story({
        "boat": f"Mara looks at the boat. {CONTRADICTING} She turns away.",  # first: the next prompt repeats "quay"
        "quay": "Mara walks the quay at dawn. The gulls cry over the water.",
    })
    calm = await engine.run_step(story.id, "Mara walks the quay.")
    clash = await engine.run_step(story.id, "Mara sees the boat.")

    first, second = continuity_requests(server)
    facts_sent = section(second, "Facts to check")
    assert f"[{sailor.id[:8]}] Mara: {SAILOR}" in facts_sent and f"[{dark.id[:8]}] Mara: Mara fears the dark." in facts_sent
    assert CONTRADICTING in section(second, "New paragraph")
    assert calm.contradictions == ()
    [found] = clash.contradictions
    assert (found.fact_id, found.entry_name, found.fact, found.sentence) == (sailor.id, "Mara", SAILOR, CONTRADICTING)
    assert store.step_context(clash.step.id).contradictions == clash.contradictions, "recorded with the step"
    assert store.step_context(calm.step.id).contradictions == (), "checked, and nothing found"


async def test_no_facts_sent_no_check_and_the_setting_turns_it_off(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A harbour town.", "", title="Harbour", outline="A harbour town.")
    unchecked = await engine.run_step(story.id, "The tide comes in.")
    assert unchecked.contradictions is None and continuity_requests(server) == []

    engine.config.continuity_checks = False
    store.add_entry(story.id, name="Mara", kind="character", always=True, facts=[FactDraft(SAILOR)])
    off = await engine.run_step(story.id, "Mara comes home.")
    assert off.contradictions is None and continuity_requests(server) == [], "off costs no model call"
    assert store.step_context(off.step.id).contradictions is None


async def test_an_unreadable_answer_is_said_and_an_answer_about_an_unsent_fact_is_left_out(store, server, embedder):
    engine = make_engine(store, server, embedder, parse_retries=0)
    story, _ = await story_with_mara(store, engine)
    server.responder = planted_story({}, continuity_reply="I think it is fine, mostly?")
    unreadable = await engine.run_step(story.id, "Mara walks the quay.")
    assert unreadable.contradictions is None
    assert fallbacks.CONTINUITY_UNREADABLE in unreadable.step.fallbacks

    invented = json.dumps({"contradictions": [{"fact_id": "zzzz9999", "fact": "Mara is a queen.", "sentence": "Mara walks.", "explanation": "x"}]})
    server.responder = planted_story({}, continuity_reply=invented)
    checked = await engine.run_step(story.id, "Mara walks on.")
    assert checked.contradictions == (), "a check may only speak of the facts it was shown"


async def test_an_entry_first_named_by_the_paragraph_itself_is_checked_too(store, server, embedder):
    engine = make_engine(store, server, embedder, bible_meaning_max=0)
    story, _ = await engine.start_story("A harbour town.", "", title="Harbour", outline="A harbour town.")
    store.add_entry(story.id, name="Tobias", kind="character", facts=[FactDraft("Tobias walks with a limp.")])
    sprint = "Tobias sprints up the hill."
    server.responder = planted_story({"hill": f"The bell rings. {sprint}"}, planted=(("Tobias walks with a limp.", sprint),))
    started = [event async for event in engine.step(story.id, "Someone climbs the hill.")]
    assert started[0].bible is None or not started[0].bible.sent, "the instruction names no entry: nothing activated"
    [found] = started[-1].contradictions
    assert (found.entry_name, found.sentence) == ("Tobias", sprint)

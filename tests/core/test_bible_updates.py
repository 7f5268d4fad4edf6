"""A bible that keeps itself (issue 14, item 3): the memory reply's bible updates, parsed,
checked against the bible, and carried by the step. Each test reads what the scripted server
received, or what the step carried, through the real engine."""

from __future__ import annotations

import json

from longyarn.recurrent_core.bible import FactDraft
from longyarn.recurrent_core.replies import fallbacks
from longyarn.recurrent_core.replies.bible_updates import parse_bible_updates
from tests.conftest import make_engine
from tests.scripted_server import Reply, story_responder


def memory_with_updates(updates_for_paragraph):
    """story_responder, but the memory reply carries `updates_for_paragraph(request)` (None: none)."""

    def respond(request: dict) -> Reply:
        reply = story_responder(request)
        if request.get("_role") != "memory":
            return reply
        updates = updates_for_paragraph(request)
        if updates is None:
            return reply
        fields = json.loads(reply.text)
        fields["bible_updates"] = updates
        return Reply(json.dumps(fields))

    return respond


def memory_prompts(server) -> list[str]:
    return [request["messages"][-1]["content"] for request in server.requests if request["_role"] == "memory"]


async def new_story(engine):
    story, _ = await engine.start_story("A harbour town.", "", title="Harbour", outline="A harbour town.")
    return story


def test_the_parser_reads_updates_leniently_and_names_what_it_drops():
    reply = json.dumps({
        "reason": "r", "short_term_memory": "m",
        "Bible Updates": {
            "New Entries": [{"name": "Tobias", "kind": "Character", "aliases": "Toby", "description": "The miller."}, {"kind": "place"}],
            "new_facts": [{"entry": "Mara", "text": "Mara is a captain."}, {"text": "Nobody's fact."}, "loose"],
            "ended_facts": [{"entry": "Mara", "fact_id": "abcd1234"}, {"entry": "Mara"}],
        },
    })
    parsed = parse_bible_updates("Here you go:\n```json\n" + reply + "\n```")
    assert [(e.name, e.kind, e.aliases, e.description) for e in parsed.new_entries] == [("Tobias", "character", ("Toby",), "The miller.")]
    assert [(f.entry, f.text) for f in parsed.new_facts] == [("Mara", "Mara is a captain.")]
    assert [(f.entry, f.fact_id) for f in parsed.ended_facts] == [("Mara", "abcd1234")]
    reasons = [d.reason for d in parsed.dropped]
    assert len(reasons) == 4 and all(reason.endswith("so it was dropped.") for reason in reasons)
    assert "named no entry" in reasons[1]
    assert not parse_bible_updates("Reason: r\nShort-term memory: m"), "labelled text carries none"


async def test_the_step_carries_checked_updates_and_the_memory_prompt_shows_the_active_facts(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story = await new_story(engine)
    mara = store.add_entry(story.id, name="Mara", kind="character", description="A sailor.", facts=[FactDraft("Mara is a sailor.")])
    [sailor] = store.entry_facts(mara.id)
    first = (await engine.run_step(story.id, "Mara walks the quay.")).step

    server.responder = memory_with_updates(lambda request: {
        "new_entries": [
            {"name": "Tobias", "kind": "character", "aliases": ["Toby"], "description": "The miller."},
            {"name": "toby", "kind": "character", "description": "Toby grinds salt."},  # a twin: merged
            {"name": "MARA", "kind": "character", "description": "Mara owns a boat."},  # taken: a fact of Mara
            {"name": "The Mist", "kind": "weather"},  # no such kind
        ],
        "new_facts": [
            {"entry": "Tobias", "text": "Tobias owes Mara money."},
            {"entry": "Mara", "text": "Mara is the ship's captain."},
            {"entry": "Mara", "text": "Mara is a sailor."},  # known already: nothing to add
            {"entry": "Nobody", "text": "Nobody sings."},
        ],
        "ended_facts": [{"entry": "Mara", "fact_id": sailor.id[:8]}, {"entry": "Ghost", "text": "Boo."}],
    })
    completed = await engine.run_step(story.id, "Mara takes command of the ship.")

    [_, second_prompt] = memory_prompts(server)
    assert f"[{sailor.id[:8]}] Mara is a sailor." in second_prompt, "the model sees the fact it may end, by id"
    [memory_request] = [r for r in server.requests if r["_role"] == "memory"][1:]
    schema = memory_request["response_format"]["json_schema"]["schema"]
    assert "bible_updates" in schema["properties"]

    proposals = completed.bible_updates
    assert proposals.paragraph == 2
    described = [(u.kind, u.entry_name, u.entry_kind, u.aliases, u.facts, u.text) for u in proposals.updates]
    assert described == [
        ("new_entry", "Tobias", "character", ("Toby",), ("Toby grinds salt.", "Tobias owes Mara money."), ""),
        ("new_fact", "Mara", "", (), (), "Mara owns a boat."),
        ("new_fact", "Mara", "", (), (), "Mara is the ship's captain."),
        ("end_fact", "Mara", "", (), (), "Mara is a sailor."),
    ]
    assert proposals.updates[-1].fact_id == sailor.id
    assert len(proposals.dropped) == 3
    for reason in proposals.dropped_reasons:
        assert reason in completed.step.fallbacks, "each dropped update's reason is in the step's record"
        assert reason.count(". ") == 0 and reason.endswith("dropped."), "one sentence"
    assert first.id == completed.step.parent_id


async def test_an_end_before_the_fact_starts_is_dropped_and_the_rest_kept(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story = await new_story(engine)
    mara = store.add_entry(story.id, name="Mara", kind="character", facts=[FactDraft("Mara is a captain.", 1)])
    [captain] = store.entry_facts(mara.id)
    server.responder = memory_with_updates(lambda request: {
        "new_facts": [{"entry": "Mara", "text": "Mara has a scar."}],
        "ended_facts": [{"entry": "Mara", "text": "mara is a  captain."}],
    })
    completed = await engine.run_step(story.id, "Mara sails.")  # paragraph 1: the fact started there
    assert [(u.kind, u.text) for u in completed.bible_updates.updates] == [("new_fact", "Mara has a scar.")]
    [reason] = completed.bible_updates.dropped_reasons
    assert "before it starts" in reason and captain.text in reason
    assert reason in completed.step.fallbacks


async def test_a_prose_only_model_skips_bible_updates_and_says_so(tmp_path, store, embedder):
    from longyarn.recurrent_core.backends.local import LocalBackend
    from longyarn.recurrent_core.engine import Engine, EngineConfig
    from longyarn.recurrent_core.types import Sampling
    from tests.backends.test_local_backend import write_tiny_local_model

    backend = LocalBackend.load(write_tiny_local_model(tmp_path / "books-only", prose_only=True))
    try:
        sampling = {role: Sampling(max_tokens=16, seed=1) for role in ("opening", "writer", "memory", "planner")}
        engine = Engine(store, backend, embedder, EngineConfig(sampling=sampling))
        story = await new_story(engine)
        store.add_entry(story.id, name="Mara", kind="character", facts=[FactDraft("Mara is a sailor.")])
        completed = await engine.run_step(story.id)
    finally:
        await backend.aclose()
    assert backend.stats.requests == 1, "the paragraph alone: no memory role, so no updates asked"
    assert completed.bible_updates is None
    assert fallbacks.PROSE_ONLY_BIBLE in completed.step.fallbacks
    assert fallbacks.PROSE_ONLY_BIBLE in fallbacks.MODEL_FALLBACKS, "said once a run, not each paragraph"

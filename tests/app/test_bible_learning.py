"""The bible updates a step proposes, in the front ends (issue 14, item 3): the writers' queue
receives them, auto-accept applies them with the step and paragraph they came from, a sibling
branch does not see them, undo takes them back, and a reader's branch learns its own."""

from __future__ import annotations

import json

from longyarn.app.session.bible_learning import learn_on_own_branch
from longyarn.app.session.engine_host import EngineHost
from longyarn.app.session.writing import WritingSession
from longyarn.recurrent_core.bible import FactDraft
from tests.conftest import make_engine
from tests.core.test_bible_updates import memory_with_updates
from tests.scripted_server import Reply, story_responder

UPDATES = {
    "new_entries": [{"name": "Tobias", "kind": "character", "description": "The miller."}],
    "new_facts": [{"entry": "Mara", "text": "Mara found the brass key."}, {"entry": "Tobias", "text": "Tobias lies."}],
}


def teach_on(instruction_word: str):
    """Memory replies carry UPDATES only for the paragraph whose instruction has this word."""
    return memory_with_updates(lambda request: UPDATES if instruction_word in request["messages"][-1]["content"] else None)


async def session_with_mara(store, server, embedder, *, auto_accept: bool):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A harbour town.", "", title="Harbour", outline="A harbour town.")
    store.add_entry(story.id, name="Mara", kind="character", facts=[FactDraft("Mara is a sailor.")])
    session = WritingSession(store, EngineHost(None, engine=engine), story.id)
    session.bible.auto_accept = auto_accept
    await session.reload()
    return session, story


async def write(session, instruction: str, parent="head"):
    return [event async for event in session.step(instruction, parent)][-1]


def facts_at(store, story_id: str, head: str | None) -> dict[str, tuple[str | None, int]]:
    return {fact.text: (fact.step_id, fact.from_paragraph) for fact in store.facts_on_branch(story_id, head)}


async def test_the_writers_queue_receives_a_steps_updates_and_accepting_dates_them(store, server, embedder):
    session, story = await session_with_mara(store, server, embedder, auto_accept=False)
    server.responder = teach_on("KEY")
    await write(session, "Mara walks the quay.")
    second = (await write(session, "Mara finds the KEY.")).step

    pending = session.bible.pending
    assert [(u.kind, u.entry_name, u.step_id, u.paragraph) for u in pending] == [
        ("new_entry", "Tobias", second.id, 2), ("new_fact", "Mara", second.id, 2),
    ], "Tobias's fact rides with his new entry"
    assert store.facts_on_branch(story.id, second.id)[-1].text == "Mara is a sailor.", "nothing applied yet"
    assert await session.bible.accept_all() == 2
    assert facts_at(store, story.id, second.id) == {
        "Mara is a sailor.": (None, 1), "Tobias lies.": (second.id, 2), "Mara found the brass key.": (second.id, 2),
    }


async def test_auto_accept_applies_them_on_the_branch_only_and_undo_takes_them_back(store, server, embedder):
    session, story = await session_with_mara(store, server, embedder, auto_accept=True)
    server.responder = teach_on("KEY")
    first = (await write(session, "Mara walks the quay.")).step
    second = (await write(session, "Mara finds the KEY.")).step
    assert session.bible.pending == []
    assert facts_at(store, story.id, second.id)["Mara found the brass key."] == (second.id, 2)

    sibling = (await write(session, "Mara sleeps instead.", first.id)).step
    assert "Mara found the brass key." not in facts_at(store, story.id, sibling.id), "a sibling branch does not see it"

    head_before_undo = store.get_story(story.id).head_step_id
    while store.get_story(story.id).head_step_id != first.id:
        assert await session.undo() is not None
    assert head_before_undo != first.id
    assert "Mara found the brass key." not in facts_at(store, story.id, first.id), "undo takes the fact back"


async def test_a_readers_branch_learns_its_own_facts(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A harbour town.", "", title="Harbour", outline="A harbour town.")
    store.add_entry(story.id, name="Mara", kind="character")
    author = (await engine.run_step(story.id, "Mara walks the quay.")).step
    server.responder = teach_on("KEY")
    completed = await engine.run_step(
        story.id, "Mara finds the KEY.", parent_step_id=author.id, branch_owner="reader-1", move_head=False
    )
    applied, problems = await learn_on_own_branch(store, completed.step, completed.bible_updates)
    assert (applied, problems) == (2, {})
    learned = [f for f in store.facts_on_branch(story.id, completed.step.id) if f.text == "Mara found the brass key."]
    assert [(f.step_id, f.from_paragraph, f.branch_owner) for f in learned] == [(completed.step.id, 2, "reader-1")]
    assert "Mara found the brass key." not in facts_at(store, story.id, author.id), "the author's branch does not see it"


def test_batch_auto_accepts_records_and_counts_the_updates_through_the_real_cli(tmp_path):
    import json

    from tests.app.test_batch import run
    from tests.scripted_server import ScriptedServer

    memory_replies = iter([
        {"new_entries": [{"name": "Mara", "kind": "character", "description": "A sailor."}],
         "new_facts": [{"entry": "Mara", "text": "Mara owns a red boat."}]},
        {"new_facts": [{"entry": "Mara", "text": "Mara lost her oar."}, {"entry": "Ghost", "text": "Boo."}]},
    ])
    db = tmp_path / "novels.db"
    with ScriptedServer(memory_with_updates(lambda request: next(memory_replies, None))) as server:
        code, stdout, stderr = run(
            "batch", "--db", str(db), "--premise", "A sailor on a small island.", "--paragraphs", "3",
            "--model", "scripted-model", server=server,
        )
        memory_requests = [r["messages"][-1]["content"] for r in server.requests if r["_role"] == "memory"]
    assert code == 0, stderr
    story_id = stdout.splitlines()[0].split()[1]
    assert len(memory_requests) == 3
    assert f"[{story_id}] story bible: 2 updates accepted, 1 dropped (each with its reason in the paragraph's record); 0 possible contradictions" in stderr

    code, listed, stderr = run("bible", story_id, "list", "--format", "json", "--db", str(db))
    assert code == 0, stderr
    [mara] = json.loads(listed)
    assert (mara["name"], mara["kind"], mara["description"]) == ("Mara", "character", "A sailor.")
    assert [(f["text"], f["from"]) for f in mara["facts"]] == [("Mara owns a red boat.", 1), ("Mara lost her oar.", 2)]
    from longyarn.storage.db import open_store
    store = open_store(str(db))
    try:
        branch = store.branch(story_id)
    finally:
        store.close()
    assert [f["step_id"] for f in mara["facts"]] == [branch[0].id, branch[1].id], "each fact names its paragraph's step"

    import sqlite3
    with sqlite3.connect(db) as connection:
        recorded = [row[0] for row in connection.execute("SELECT fallbacks FROM steps")]
    assert any("'Ghost', which the bible has no entry for, so it was dropped." in str(row) for row in recorded), \
        "the dropped update's reason is in its paragraph's record"


async def test_versions_at_once_queue_the_chosen_ones_updates_and_keep_each_others_for_its_branch(store, server, embedder):
    from tests.scripted_continuity import continuity_checker

    session, story = await session_with_mara(store, server, embedder, auto_accept=False)
    key, rope = "Mara found the brass key under the net.", "Mara has never set foot on a boat. She lost the rope."
    checker = continuity_checker([("Mara is a sailor.", "Mara has never set foot on a boat.")])
    written = iter([key, rope])

    def respond(request: dict) -> Reply:
        role = request.get("_role")
        if role == "writer":
            return Reply(next(written))
        if role == "continuity":
            return Reply(json.dumps(checker(request)))
        reply = story_responder(request)
        if role != "memory":
            return reply
        fields = json.loads(reply.text)
        fact = "Mara has the brass key." if "brass key" in request["messages"][-1]["content"] else "Mara lost the rope."
        fields["bible_updates"] = {"new_facts": [{"entry": "Mara", "text": fact}]}
        return Reply(json.dumps(fields))

    server.responder = respond
    drafts = [item async for item in session.draft_alternatives("Mara searches the boat.", 2)][-1]
    step, _ = await session.keep_alternative(drafts, drafts.paragraphs.index(rope))

    assert [u.text for u in session.bible.pending] == ["Mara lost the rope."], "the chosen version's update waits"
    [found] = session.contradictions[step.id]
    assert (found.fact, found.sentence) == ("Mara is a sailor.", "Mara has never set foot on a boat.")
    other = next(sibling for sibling in session.position.siblings if sibling.id != step.id)
    await session.move_head(other.id)
    assert [u.text for u in session.bible.pending] == ["Mara has the brass key."], "each version's own updates"
    assert other.id not in session.contradictions

"""Contradiction checks in batch (issue 14, item 4): through the real CLI and the scripted
server, a planted contradiction is found, said, stored with its step, and shown by the report."""

from __future__ import annotations

import json
import threading

from tests.app.test_batch import run
from tests.scripted_continuity import continuity_checker
from tests.scripted_server import Reply, ScriptedServer, story_responder

SAILOR = "Mara is a sailor."
CONTRADICTING = "Mara has never set foot on a boat."
PARAGRAPHS = [
    "Mara mends a net on the quay while the tide turns.",
    "Mara rows out past the harbour wall at first light.",
    f"Mara stands at the window. {CONTRADICTING} The sea frightens her.",
]


def planted_batch():
    lock, written = threading.Lock(), []
    checker = continuity_checker([(SAILOR, CONTRADICTING)])

    def respond(request: dict) -> Reply:
        role = request.get("_role")
        if role == "writer":
            with lock:
                written.append(1)
                return Reply(PARAGRAPHS[min(len(written), len(PARAGRAPHS)) - 1])
        if role == "continuity":
            return Reply(json.dumps(checker(request)))
        reply = story_responder(request)
        if role == "memory" and "## Story bible" not in request["messages"][-1]["content"]:
            fields = json.loads(reply.text)  # the first paragraph teaches the bible Mara
            fields["bible_updates"] = {"new_entries": [{"name": "Mara", "kind": "character", "description": "Mends nets."}],
                                       "new_facts": [{"entry": "Mara", "text": SAILOR}]}
            return Reply(json.dumps(fields))
        return reply

    return respond


def test_batch_says_stores_and_reports_a_planted_contradiction(tmp_path):
    db, page = tmp_path / "novels.db", tmp_path / "report.html"
    with ScriptedServer(planted_batch()) as server:
        code, stdout, stderr = run(
            "batch", "--db", str(db), "--premise", "A net-mender on an island.", "--paragraphs", "3",
            "--model", "scripted-model", server=server,
        )
        checks = [r["messages"][-1]["content"] for r in server.requests if r["_role"] == "continuity"]
    assert code == 0, stderr
    story_id = stdout.splitlines()[0].split()[1]
    assert len(checks) == 2 and all(SAILOR in check for check in checks), "paragraphs 2 and 3 were checked against it"
    assert f"paragraph 3 may contradict Mara's fact {SAILOR!r}: {CONTRADICTING!r}" in stderr
    assert "1 possible contradictions" in stderr

    code, _, stderr = run("report", story_id, "--out", str(page), "--db", str(db))
    assert code == 0, stderr
    html = page.read_text()
    section = html.split("<h2>Continuity</h2>", 1)[1]
    assert "2 paragraphs checked against the story bible; 1 contradiction found." in section
    assert f"<td>3</td><td>Mara</td><td>{SAILOR}</td><td>{CONTRADICTING}</td>" in section

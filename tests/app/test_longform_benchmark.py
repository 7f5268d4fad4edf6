"""benchmarks/longform.py end to end against the scripted server: a few paragraphs, planted facts,
one paragraph the guard must catch, and the report's figures printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.scripted_server import Reply, ScriptedServer, story_responder

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "longform.py"


def copying_once_responder():
    """Story replies, except that the fourth paragraph first comes back as the third again."""
    writer_replies: list[str] = []

    def respond(request: dict) -> Reply:
        reply = story_responder(request)
        if request["_role"] == "writer":
            if len(writer_replies) == 3:
                writer_replies.append("copy")
                return Reply(f"{writer_replies[2]} {writer_replies[2]}")
            writer_replies.append(reply.text)
        return reply

    return respond


def test_the_longform_benchmark_writes_plants_and_reports(tmp_path):
    db, out = tmp_path / "longform.db", tmp_path / "report.html"
    with ScriptedServer(copying_once_responder()) as server:
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--paragraphs", "10", "--facts", "2", "--base-url", server.base_url,
             "--model", "scripted-model", "--db", str(db), "--out", str(out)],
            capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ},
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(
        r"longform paragraphs=10 length_score=\d+\.\d repeated4=\d+\.\d% rising=unknown fallback_paragraphs=\d+ "
        r"guard_caught=1 recall@3=\d+%", lines[-1]), lines[-1]
    assert any(line.startswith("Length: ") and "length score S_l" in line for line in lines)
    assert any("Degeneration guard: caught 1 paragraph(s) (1 copied its context)." == line for line in lines)
    recall = next(line for line in lines if line.startswith("Long-term memory:"))
    assert "2 planted facts" in recall and "of 4 mentions" in recall
    assert "recall@3" in out.read_text(encoding="utf-8")

"""`longyarn batch` and `longyarn export` as a user runs them: real processes, a scripted server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.scripted_server import Reply, ScriptedServer, story_responder

ROOT = Path(__file__).resolve().parents[2]


def longyarn(*args: str, server: ScriptedServer | None = None, **popen) -> subprocess.Popen:
    env = dict(os.environ)
    if server is not None:
        env["OPENAI_BASE_URL"] = server.base_url
    return subprocess.Popen(
        [sys.executable, "-m", "longyarn.app.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (`cmd &`) ignores SIGINT, and
        # children would inherit that, so the Ctrl-C tests would test nothing.
        preexec_fn=_interruptible,
        **popen,
    )


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(*args: str, server: ScriptedServer | None = None, timeout: float = 300) -> tuple[int, str, str]:
    process = longyarn(*args, server=server)
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def slow_story_responder(request: dict) -> Reply:
    """Story replies streamed slowly, so that a Ctrl-C lands while a novel is being written."""
    reply = story_responder(request)
    reply.chunk_chars, reply.chunk_delay_s = 10, 0.05
    return reply


def wait_for_writer_requests(server: ScriptedServer, process: subprocess.Popen, count: int) -> None:
    """Wait (at most 2 minutes) until the batch process has asked for `count` paragraphs."""
    deadline = time.monotonic() + 120
    while sum(r["_role"] == "writer" for r in server.requests) < count:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)


def step_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT id, parent_id, paragraph FROM steps").fetchall()


@pytest.mark.slow
def test_a_fifty_paragraph_novel_is_written_saved_and_exported(tmp_path):
    db, novel = tmp_path / "novels.db", tmp_path / "novel.md"
    with ScriptedServer() as server:
        code, stdout, stderr = run(
            "batch", "--db", str(db), "--premise", "A cartographer maps a city that moves at night.",
            "--genre", "fantasy", "--paragraphs", "50", "--out", str(novel), "--choose", "random",
            "--seed", "7", "--model", "scripted-model", server=server,
        )
    assert code == 0, stderr
    first_line = stdout.splitlines()[0]
    assert first_line.startswith("story ")
    story_id = first_line.split()[1]

    text = novel.read_text()
    assert text.startswith("# ")
    paragraphs = [p for p in text.split("\n\n")[1:] if p.strip() and not p.startswith("*")]
    assert len(paragraphs) == 50
    assert len(set(paragraphs)) == 50, "every paragraph is new"

    code, exported, stderr = run("export", story_id, "--db", str(db), "--format", "json")
    assert code == 0, stderr
    document = json.loads(exported)
    assert document["id"] == story_id
    assert document["premise"] == "A cartographer maps a city that moves at night."
    assert [p["text"] for p in document["paragraphs"]] == [p.strip() for p in paragraphs]
    # The instructions followed came from the planner's candidates, chosen with the seed.
    writer_requests = [r for r in server.requests if r["_role"] == "writer"]
    assert len(writer_requests) == 50

    code, plain, _ = run("export", story_id, "--db", str(db), "--format", "txt")
    assert code == 0 and document["title"].upper() in plain


def test_a_batch_killed_mid_step_resumes_without_losing_or_repeating_paragraphs(tmp_path):
    db = tmp_path / "novels.db"

    writer_requests = []

    def slow_third_paragraph(request):
        # Only the paragraph in flight when the batch is killed streams slowly.
        reply = story_responder(request)
        if request["_role"] == "writer":
            writer_requests.append(request)
            if len(writer_requests) == 3:
                reply.chunk_chars, reply.chunk_delay_s = 10, 0.05
        return reply

    with ScriptedServer(slow_third_paragraph) as server:
        process = longyarn(
            "batch", "--db", str(db), "--premise", "A diver finds a bell under the ice.",
            "--paragraphs", "6", "--model", "scripted-model", server=server,
        )
        story_id = process.stdout.readline().split()[1]
        deadline = time.monotonic() + 120
        # Kill it while the third paragraph is being streamed.
        while sum(r["_role"] == "writer" for r in server.requests) < 3:
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

        rows = step_rows(db)
        assert len(rows) == 2, "the two finished paragraphs are saved, the one in flight is not"
        with sqlite3.connect(db) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

        code, stdout, stderr = run(
            "batch", "--db", str(db), "--resume", story_id, "--paragraphs", "6",
            "--model", "scripted-model", server=server,
        )
    assert code == 0, stderr
    assert stdout.splitlines()[0] == f"story {story_id}"
    rows = step_rows(db)
    assert len(rows) == 6
    assert len({paragraph for _, _, paragraph in rows}) == 6
    parents = [parent for _, parent, _ in rows]
    assert parents.count(None) == 1 and len(set(parents)) == 6, "one chain, no duplicated steps"
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    db = tmp_path / "novels.db"

    with ScriptedServer(slow_story_responder) as server:
        process = longyarn(
            "batch", "--db", str(db), "--premise", "A diver finds a bell.", "--paragraphs", "20",
            "--model", "scripted-model", server=server,
        )
        story_id = process.stdout.readline().split()[1]
        wait_for_writer_requests(server, process, 2)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"--resume {story_id}" in stderr
    assert "Traceback" not in stderr
    assert len(step_rows(db)) >= 1


def test_several_novels_at_once_from_a_premises_file(tmp_path):
    db, out = tmp_path / "novels.db", tmp_path / "novels"
    premises = tmp_path / "premises.txt"
    premises.write_text(
        "A lighthouse that walks.\n\n# a comment\n"
        '{"premise": "Twin sisters inherit a haunted orchard.", "genre": "gothic"}\n'
        "A courier who delivers dreams.\n"
    )
    with ScriptedServer(latency_s=0.05) as server:
        code, stdout, stderr = run(
            "batch", "--db", str(db), "--premises", str(premises), "--paragraphs", "3",
            "--concurrency", "3", "--out", str(out), "--model", "scripted-model", server=server,
        )
    assert code == 0, stderr
    story_ids = [line.split()[1] for line in stdout.splitlines() if line.startswith("story ")]
    assert len(set(story_ids)) == 3
    for story_id in story_ids:
        blocks = (out / f"{story_id}.md").read_text().strip().split("\n\n")
        paragraphs = [b for b in blocks if not b.startswith(("# ", "*"))]
        assert len(paragraphs) == 3


def test_the_readme_command_writes_a_story_offline_and_says_once_what_the_demo_cannot_do(tmp_path):
    from longyarn.app.settings import config_path
    from longyarn.recurrent_core.replies.fallbacks import PROSE_ONLY_OPENING, PROSE_ONLY_OUTPUTS

    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text("[sampling.writer]\nmax_tokens = 40\n")  # seconds, not minutes
    env_without_a_model_server = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = tmp_path / "novel.md"
    process = subprocess.run(
        [sys.executable, "-m", "longyarn.app.cli", "batch", "--premise", "A lighthouse keeper finds a door in the sea.",
         "--genre", "fable", "--paragraphs", "3", "--out", str(out), "--db", str(tmp_path / "s.db")],
        cwd=ROOT, env=env_without_a_model_server, capture_output=True, text=True, timeout=300,
    )
    assert process.returncode == 0, process.stderr
    assert process.stderr.count(PROSE_ONLY_OUTPUTS) == 1, "said once, not with every paragraph"
    assert process.stderr.count(PROSE_ONLY_OPENING) == 1
    assert "paragraph 3/3 saved" in process.stderr
    novel = out.read_text()
    assert novel.startswith("# A lighthouse keeper finds a door") and len(novel.split("\n\n")) >= 5


def test_no_model_configured_gives_one_clear_sentence(tmp_path):
    code, stdout, stderr = run("batch", "--db", str(tmp_path / "x.db"), "--premise", "A cat.", "--paragraphs", "1",
                               "--backend", "openai")
    assert code == 2
    assert "Traceback" not in stderr
    assert "OPENAI_API_KEY" in stderr


def test_export_of_an_unknown_story_is_a_clear_error(tmp_path):
    code, _, stderr = run("export", "nosuchstory", "--db", str(tmp_path / "x.db"))
    assert code == 2 and "nosuchstory" in stderr and "Traceback" not in stderr


def test_an_unwritable_out_path_is_refused_before_any_paragraph_is_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with ScriptedServer() as server:
        code, stdout, stderr = run(
            "batch", "--db", str(tmp_path / "x.db"), "--premise", "A cat.", "--paragraphs", "2",
            "--out", str(blocker / "novel.md"), "--model", "scripted-model", server=server,
        )
        assert not [r for r in server.requests if r["_role"] == "writer"]
    assert code == 2 and "Traceback" not in stderr and "--out" in stderr
    code, _, stderr = run("export", "whatever", "--db", str(tmp_path / "x.db"), "--out", str(blocker / "x.md"))
    assert code == 2 and "Traceback" not in stderr


def test_ctrl_c_during_several_novels_names_each_saved_story(tmp_path):
    premises = tmp_path / "premises.txt"
    premises.write_text("A lighthouse that walks.\nA courier who delivers dreams.\n")

    with ScriptedServer(slow_story_responder) as server:
        process = longyarn(
            "batch", "--db", str(tmp_path / "n.db"), "--premises", str(premises), "--paragraphs", "20",
            "--concurrency", "2", "--model", "scripted-model", server=server,
        )
        ids = [process.stdout.readline().split()[1] for _ in range(2)]
        wait_for_writer_requests(server, process, 3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr
    for story_id in ids:
        assert f"--resume {story_id}" in stderr


def test_ctrl_c_with_out_leaves_the_saved_paragraphs_in_the_file(tmp_path):
    db, novel = tmp_path / "novels.db", tmp_path / "novel.md"

    with ScriptedServer(slow_story_responder) as server:
        process = longyarn(
            "batch", "--db", str(db), "--premise", "A diver finds a bell.", "--paragraphs", "20",
            "--out", str(novel), "--model", "scripted-model", server=server,
        )
        story_id = process.stdout.readline().split()[1]
        wait_for_writer_requests(server, process, 3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr
    saved = [paragraph for _, _, paragraph in step_rows(db)]
    assert len(saved) >= 2
    text = novel.read_text()
    assert all(paragraph in text for paragraph in saved), "the file holds every saved paragraph"
    assert str(novel) in stderr and f"--resume {story_id}" in stderr


@pytest.mark.parametrize("where", ["folder", "proc"])
def test_an_out_path_that_is_a_folder_or_cannot_be_created_is_refused_first(tmp_path, where):
    out = tmp_path if where == "folder" else Path("/proc/novel.md")
    with ScriptedServer() as server:
        code, stdout, stderr = run(
            "batch", "--db", str(tmp_path / "x.db"), "--premise", "A cat.", "--paragraphs", "1",
            "--out", str(out), "--model", "scripted-model", server=server,
        )
        assert not server.requests, "refused before anything was asked of the model"
    assert code == 2 and stdout == "" and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and "--out" in stderr and "nothing was written" in stderr


@pytest.mark.parametrize("option", [["--paragraphs", "0"], ["--paragraphs", "-3"], ["--concurrency", "0"]])
def test_bad_numbers_are_refused_before_the_model_is_loaded(tmp_path, option):
    args = {"--paragraphs": "2", "--concurrency": "1"}
    args[option[0]] = option[1]
    code, stdout, stderr = run(
        "batch", "--db", str(tmp_path / "x.db"), "--premise", "A cat.", *sum(args.items(), ()),
        timeout=60,
    )
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [stderr.strip()] and option[0] in stderr
    assert "Model:" not in stderr, "no model was loaded for a command that cannot run"

"""`longyarn export` as a script author uses it: a real story written by `longyarn batch`
against the scripted server, exported by the real command, read back as a reader would."""

from __future__ import annotations

import json
import os
import stat

from markdown_it import MarkdownIt

from tests.app.test_batch import run
from tests.scripted_server import Reply, ScriptedServer, story_responder

URL = "https://example.com/" + "x" * 90
# A writer reply of several lines, some of which Markdown would read as markup.
LINES = [
    "# The bells rang at noon",
    "- she said nothing",
    "1. That was the first thing.",
    "> the sea answered",
    '"Hi," she said.',
    '"Bye," he said, and walked a long way down the causeway towards the lighthouse, '
    "counting the posts as his mother had taught him, until the fog took him. " + URL,
]


def lines_writer(request: dict) -> Reply:
    reply = story_responder(request)
    if request["_role"] == "writer":
        reply.text = "\n".join(LINES)
    return reply


def write_story(tmp_path, paragraphs: int = 2) -> tuple:
    db = tmp_path / "x.db"
    with ScriptedServer(lines_writer) as server:
        code, stdout, stderr = run(
            "batch", "--db", str(db), "--premise", "A keeper of bells.", "--genre", "*dark* fable",
            "--paragraphs", str(paragraphs), "--model", "scripted-model", server=server,
        )
    assert code == 0, stderr
    return db, stdout.splitlines()[0].split()[1]


def test_markdown_keeps_each_paragraph_and_its_lines_and_reads_none_as_markup(tmp_path):
    db, story_id = write_story(tmp_path)
    code, text, stderr = run("export", story_id, "--db", str(db), "--format", "md")
    assert code == 0, stderr

    tokens = MarkdownIt("commonmark").parse(text)
    blocks = [t.type for t in tokens if t.type.endswith("_open")]
    assert blocks == ["heading_open", "paragraph_open", "paragraph_open", "paragraph_open"], text
    genre, *paragraphs = [tokens[i + 1] for i, t in enumerate(tokens) if t.type == "paragraph_open"]
    assert [c.type for c in genre.children] == ["em_open", "text", "em_close"]
    assert genre.children[1].content == "*dark* fable"
    for paragraph in paragraphs:
        pieces = [c.content for c in paragraph.children if c.type == "text"]
        assert [c.type for c in paragraph.children].count("hardbreak") == len(LINES) - 1
        assert pieces == LINES, "every line reads as written, none as a heading, list or quote"


def test_plain_text_wraps_each_line_and_keeps_long_addresses_whole(tmp_path):
    db, story_id = write_story(tmp_path, paragraphs=1)
    code, text, stderr = run("export", story_id, "--db", str(db), "--format", "txt")
    assert code == 0, stderr
    body = text.split("\n\n", 1)[1]
    assert body.startswith("\n".join(LINES[:5]) + "\n"), "dialogue lines stay on their own lines"
    assert URL in body.splitlines()
    assert all(len(line) <= 78 for line in body.splitlines() if line != URL)


def test_an_exported_file_is_readable_like_any_file_the_user_writes(tmp_path):
    db, story_id = write_story(tmp_path, paragraphs=1)
    out = tmp_path / "story.json"
    code, _, stderr = run("export", story_id, "--db", str(db), "--format", "json", "--out", str(out))
    assert code == 0, stderr
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    document = json.loads(out.read_text())
    assert document["id"] == story_id and document["paragraphs"][0]["text"] == "\n".join(LINES)

    out.chmod(0o640)  # exporting again keeps the permissions the user chose
    code, _, stderr = run("export", story_id, "--db", str(db), "--format", "json", "--out", str(out))
    assert code == 0, stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640

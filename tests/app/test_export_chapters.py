"""Chapters in `longyarn batch` and `longyarn export` as a script author uses them: real processes
against the scripted server; the files read back as a reader (or an e-book reader) would."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.app.test_batch import run
from tests.scripted_server import Reply, ScriptedServer, story_responder


def write_novel(tmp_path: Path, *options: str, paragraphs: int = 5, responder=story_responder) -> tuple:
    """A batch novel; (database, story id, stderr, the scripted server's requests)."""
    db = tmp_path / "novel.db"
    with ScriptedServer(responder) as server:
        code, stdout, stderr = run(
            "batch", "--db", str(db), "--premise", "A keeper of bells.", "--genre", "fable",
            "--paragraphs", str(paragraphs), "--model", "scripted-model", *options, server=server,
        )
        requests = list(server.requests)
    assert code == 0, stderr
    return db, stdout.splitlines()[0].split()[1], stderr, requests


def export(db: Path, story_id: str, fmt: str, *options: str) -> str:
    code, text, stderr = run("export", story_id, "--db", str(db), "--format", fmt, *options)
    assert code == 0, stderr
    return text


def writer_prompts(requests: list[dict]) -> list[str]:
    return [r["messages"][-1]["content"] for r in requests if r["_role"] == "writer"]


def test_batch_ends_a_chapter_every_n_paragraphs_with_the_models_summary(tmp_path):
    db, story_id, stderr, requests = write_novel(tmp_path, "--chapter-every", "2")
    assert f"[{story_id}] chapter 1 ended after paragraph 2 (2 paragraphs): The " in stderr
    document = json.loads(export(db, story_id, "json"))
    chapters = document["chapters"]
    assert [(c["number"], c["first_paragraph"], c["closed"]) for c in chapters] == [(1, 1, True), (2, 3, True), (3, 5, False)]
    assert all(c["summary"].startswith("In this chapter") for c in chapters[:2])
    assert chapters[0]["heading"] == chapters[0]["title"] and chapters[2]["heading"] == "Chapter 3"
    assert sum(r["_role"] == "chapter_summary" for r in requests) == 2

    # Every paragraph was written with the chapters in view; the fifth with both summaries.
    prompts = writer_prompts(requests)
    assert "## Chapters\nThis paragraph is in chapter 1, which began at paragraph 1.\n\n" in prompts[0]
    fifth = prompts[4].split("## Chapters\n", 1)[1].split("\n\n## ", 1)[0].splitlines()
    assert fifth[0] == "This paragraph begins chapter 3."
    assert fifth[1] == f'Chapter 2, "{chapters[1]["title"]}" (paragraphs 3-4): {chapters[1]["summary"]}'
    assert fifth[2].startswith('Chapter 1, "') and fifth[2].endswith(chapters[0]["summary"])

    # Markdown and plain text: each chapter's heading where it begins.
    markdown = export(db, story_id, "md").split("\n\n")
    paragraphs = [p["text"] for p in document["paragraphs"]]
    assert markdown[2] == f"## {chapters[0]['title']}" and markdown[3].startswith(paragraphs[0][:30])
    assert markdown[5] == f"## {chapters[1]['title']}" and markdown[6].startswith(paragraphs[2][:30])
    assert markdown[8] == "## Chapter 3" and markdown[9].startswith(paragraphs[4][:30])
    text = export(db, story_id, "txt")
    heading = chapters[1]["title"]
    assert f"\n\n{heading}\n{'-' * len(heading)}\n\n" in text
    assert text.index(heading) < text.index(paragraphs[2].split()[0] + " " + paragraphs[2].split()[1])


def test_a_scene_break_the_model_marks_ends_the_chapter_and_leaves_the_paragraph(tmp_path):
    marked = []

    def responder(request: dict) -> Reply:
        reply = story_responder(request)
        if request["_role"] == "writer" and not marked and "## Previous paragraph" in request["messages"][-1]["content"]:
            marked.append(True)
            reply.text += "\n\n  * * *  "
        return reply

    db, story_id, stderr, _ = write_novel(tmp_path, "--chapter-every", "4", paragraphs=4, responder=responder)
    assert "chapter 1 ended after paragraph 2 (the model marked a scene break)" in stderr
    document = json.loads(export(db, story_id, "json"))
    assert [c["first_paragraph"] for c in document["chapters"]] == [1, 3]
    assert not any("*" in p["text"] for p in document["paragraphs"]), "the mark is not story text"


def test_without_chapter_every_a_novel_has_no_chapters_and_exports_as_before(tmp_path):
    db, story_id, _, requests = write_novel(tmp_path, paragraphs=2)
    assert not any("## Chapters" in prompt or "* * *" in prompt for prompt in writer_prompts(requests))
    document = json.loads(export(db, story_id, "json"))
    assert document["chapters"] == []
    paragraphs = [p["text"] for p in document["paragraphs"]]
    title = document["title"]
    assert export(db, story_id, "md") == f"# {title}\n\n*fable*\n\n" + "\n\n".join(paragraphs) + "\n"
    text = export(db, story_id, "txt")
    assert text.startswith(f"{title.upper()}\n{'=' * len(title)}\n\n") and "\n---" not in text


def test_bad_chapter_every_is_refused_before_anything_is_written(tmp_path):
    code, stdout, stderr = run("batch", "--db", str(tmp_path / "x.db"), "--premise", "A bell.",
                               "--paragraphs", "2", "--chapter-every", "-1")
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines()[-1] == (
        "error: --chapter-every must be 0 (no chapters) or more; nothing was written; pass a number of paragraphs."
    )


# ---- EPUB --------------------------------------------------------------------------------


def epubcheck(path: Path) -> subprocess.CompletedProcess:
    """Run the Debian package's epubcheck (a jar) on `path`; skip, saying why, if it is absent."""
    found, java = shutil.which("epubcheck"), shutil.which("java")
    if found is None or java is None:
        pytest.skip("epubcheck (Debian: apt-get install epubcheck, which brings Java) is not installed")
    jar = Path(found).resolve()
    command = [java, "-jar", str(jar)] if jar.suffix == ".jar" else [found]
    return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120)


def book_documents(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as book:
        return {name: book.read(name).decode("utf-8") for name in book.namelist() if name.endswith((".xhtml", ".opf", ".ncx"))}


def test_an_epub_has_a_document_per_chapter_a_table_of_contents_and_passes_epubcheck(tmp_path):
    db, story_id, _, _ = write_novel(tmp_path, "--chapter-every", "2")
    code, _, stderr = run("bible", story_id, "add", "--name", "Mara", "--kind", "character",
                          "--alias", "the keeper", "--fact", "Mara rings the bells at dawn.", "--db", str(db))
    assert code == 0, stderr
    book = tmp_path / "novel.epub"
    code, stdout, stderr = run("export", story_id, "--db", str(db), "--format", "epub", "--out", str(book),
                               "--author", "Ada Lovelace", "--language", "en-GB")
    assert code == 0, stderr
    checked = epubcheck(book)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No errors or warnings detected" in checked.stdout

    document = json.loads(export(db, story_id, "json"))
    documents = book_documents(book)
    chapters = sorted(name for name in documents if "chapter-" in name)
    assert len(chapters) == 3
    for name, chapter in zip(chapters, document["chapters"]):
        assert f"<h1>{chapter['heading']}</h1>" in documents[name]
    first = document["paragraphs"][0]["text"]
    assert first[:40] in documents[chapters[0]] and first[:40] not in documents[chapters[1]]
    opf = next(text for name, text in documents.items() if name.endswith(".opf"))
    assert f"<dc:title>{document['title']}</dc:title>" in opf
    assert "Ada Lovelace</dc:creator>" in opf and "<dc:language>en-GB</dc:language>" in opf
    assert "<dc:identifier id=\"id\">urn:uuid:" in opf
    nav = next(text for name, text in documents.items() if name.endswith("nav.xhtml"))
    ncx = next(text for name, text in documents.items() if name.endswith(".ncx"))
    for chapter in document["chapters"]:
        assert chapter["heading"] in nav and chapter["heading"] in ncx
    bible = next(text for name, text in documents.items() if name.endswith("bible.xhtml"))
    assert "Mara" in bible and "the keeper" in bible and "Mara rings the bells at dawn." in bible
    assert "Story bible" in nav


def test_an_epub_of_a_story_without_chapters_is_one_document_by_an_anonymous_author(tmp_path):
    db, story_id, _, _ = write_novel(tmp_path, paragraphs=2)
    book = tmp_path / "story.epub"
    code, _, stderr = run("export", story_id, "--db", str(db), "--format", "epub", "--out", str(book))
    assert code == 0, stderr
    checked = epubcheck(book)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    documents = book_documents(book)
    assert [name for name in documents if "chapter-" in name] == ["EPUB/chapter-001.xhtml"]
    assert not any(name.endswith("bible.xhtml") for name in documents)
    opf = next(text for name, text in documents.items() if name.endswith(".opf"))
    assert "Anonymous</dc:creator>" in opf and "<dc:language>en</dc:language>" in opf


def test_an_epub_with_a_language_that_is_no_tag_is_one_sentence_and_no_file(tmp_path):
    db, story_id, _, _ = write_novel(tmp_path, paragraphs=1)
    book = tmp_path / "story.epub"
    code, _, stderr = run("export", story_id, "--db", str(db), "--format", "epub", "--out", str(book),
                          "--language", "English please")
    assert code == 2 and not book.exists()
    assert stderr.strip() == (
        "error: 'English please' is not a language tag, so nothing was written; give one such as en, de or pt-BR."
    )

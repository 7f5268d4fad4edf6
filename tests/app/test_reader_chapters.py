"""Readers see chapter titles: a heading where each chapter begins, in the web reader (over real
HTTP, as tests/app/test_reader_web.py reaches it) and in the terminal reader (Pilot)."""

from __future__ import annotations

import html
import re

import pytest

from longyarn.app.ui.widgets import ChapterHeading
from tests.app.test_reader import enter_as, open_first_story, reader_app, readable_story, take
from tests.app.test_tui import PARAGRAPHS, seed_story, wait_until
from tests.app.web_reader import ReaderClient, scripted_settings, web_reader
from tests.conftest import make_engine

_BLOCK = re.compile(r'<h2 class="chapter">(.*?)</h2>|<p class="paragraph[^"]*"[^>]*>(.*?)</p>', re.S)


def with_chapters(store, story_id: str) -> None:
    """The author's chapters: "Homecoming" from the start, an untitled second at paragraph 3."""
    steps = store.branch(story_id)
    store.add_chapter(story_id, title="Homecoming", summary="Mara comes home.", closed=True)
    store.add_chapter(story_id, title="", start_step_id=steps[2].id)


def page_blocks(text: str) -> list[str]:
    """The story page's passage in order: "# heading" for a chapter heading, else the paragraph."""
    passage = text.split('id="passage"', 1)[1].split('id="writing"', 1)[0]
    return [f"# {html.unescape(h)}" if h else html.unescape(p)[:20] for h, p in _BLOCK.findall(passage)]


def markdown_blocks(text: str) -> list[str]:
    """A Markdown download's blocks: headings whole, paragraphs by their start."""
    return [block if block.startswith("#") else block[:20] for block in text.strip().split("\n\n")]


@pytest.fixture
def story(store, embedder):
    story = seed_story(store, embedder, PARAGRAPHS, title="The Salt Marsh Key")
    store.update_story(story.id, readable=True, reader_may_extend=False)
    return story


def test_the_web_reader_shows_a_heading_where_each_chapter_begins(store, server, db_path, story):
    with web_reader(store, scripted_settings(db_path, server)) as base_url:
        reader = ReaderClient(base_url)
        reader.sign_up()
        assert page_blocks(reader.page(story.id).text) == [PARAGRAPHS[0][:20]]  # no chapters yet
        with_chapters(store, story.id)
        assert page_blocks(reader.page(story.id).text) == ["# Homecoming", PARAGRAPHS[0][:20]]
        for _ in range(2):  # the author's written paragraphs; no model is asked
            assert reader.choose(story.id, 1).status_code in (200, 303)
        assert page_blocks(reader.page(story.id).text) == [
            "# Homecoming", PARAGRAPHS[0][:20], PARAGRAPHS[1][:20], "# Chapter 2", PARAGRAPHS[2][:20],
        ]
        download = reader.http.get(f"/stories/{story.id}/export.md").text
        reader.close()
    title, genre, *passage = markdown_blocks(download)
    assert (title, genre) == ("# The Salt Marsh Key", "*mystery*")
    assert passage == [
        "## Homecoming", PARAGRAPHS[0][:20], PARAGRAPHS[1][:20], "## Chapter 2", PARAGRAPHS[2][:20],
    ], "the downloaded path has the chapters' headings too"
    assert server.requests == []


def test_a_story_without_chapters_shows_no_headings_on_the_web(store, server, db_path, story):
    with web_reader(store, scripted_settings(db_path, server)) as base_url:
        reader = ReaderClient(base_url)
        reader.sign_up()
        page = reader.page(story.id).text
        reader.close()
    assert 'class="chapter"' not in page


async def test_the_terminal_reader_shows_a_heading_where_each_chapter_begins(
    store, server, embedder, tmp_path, monkeypatch
):
    monkeypatch.setattr("longyarn.app.reader.screens.downloads_folder", lambda: tmp_path)
    story = readable_story(store, embedder, may_extend=False)
    with_chapters(store, story.id)
    app = reader_app(store, make_engine(store, server, embedder))
    async with app.run_test(size=(100, 34)) as pilot:
        await enter_as(pilot)
        screen = await open_first_story(pilot)
        await take(pilot, screen, "1")
        await take(pilot, screen, "enter")
        shown = [
            f"# {str(child.render())}" if isinstance(child, ChapterHeading) else child.step.paragraph[:20]
            for child in screen.passage.children
            if isinstance(child, ChapterHeading) or hasattr(child, "step")
        ]
        assert shown == [
            "# ── Homecoming ──", PARAGRAPHS[0][:20], PARAGRAPHS[1][:20], "# ── Chapter 2 ──", PARAGRAPHS[2][:20],
        ]
        await pilot.press("x")
        written = tmp_path / "the-salt-marsh-key.md"
        await wait_until(pilot, written.exists, what="the export")
        assert markdown_blocks(written.read_text())[2:] == [
            "## Homecoming", PARAGRAPHS[0][:20], PARAGRAPHS[1][:20], "## Chapter 2", PARAGRAPHS[2][:20],
        ]

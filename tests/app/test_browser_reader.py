"""Reader mode in a real browser: `longyarn read --serve` with headless Chromium.

xterm.js draws the terminal on a canvas, which holds no text to read back. The page is given
an init script that refuses canvas contexts to xterm's layers, so xterm falls back to its DOM
renderer, which draws the same terminal buffer as text in `.xterm-rows`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.app.test_tui import PARAGRAPHS, seed_story
from tests.scripted_server import Reply, story_responder

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
DOM_RENDERER = """
const originalGetContext = HTMLCanvasElement.prototype.getContext;
HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
  const xtermLayer = Array.from(this.classList).some((name) => name.startsWith("xterm-"));
  if (xtermLayer || String(kind).startsWith("webgl")) return null;
  return originalGetContext.call(this, kind, ...rest);
};
"""


def _browser_or_skip():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("Chromium is not installed (Debian package `chromium`), so the browser test cannot run")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package `playwright` is not installed, so the browser test cannot run")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the reader server exited early: {process.stdout.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the reader server did not start listening")


def _newest_step_id(db_path) -> str | None:
    with sqlite3.connect(db_path) as connection:
        row = connection.execute("SELECT id FROM steps ORDER BY created_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


def screen_text(page) -> str:
    return page.evaluate(
        "() => { const rows = document.querySelector('.xterm-rows');"
        " return rows ? rows.innerText.replace(/\\u00a0/g, ' ') : ''; }"
    )


def wait_for_text(page, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in screen_text(page):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} did not appear; the page shows:\n{screen_text(page)}")
        time.sleep(0.1)


@contextlib.contextmanager
def reading_room(db_path, model_server=None, model_settings: str = "") -> Iterator[tuple[object, int, list[str]]]:
    """`longyarn read --serve` on a free port with headless Chromium: (page, port, addresses
    the page tried to reach elsewhere, which were refused). The model is the scripted server,
    or what `model_settings` (Settings keyword arguments, as Python source) choose."""
    sync_playwright = _browser_or_skip()
    port = _free_port()
    if model_server is not None:
        model_settings = f"backend='openai', base_url={model_server.base_url!r}, model='scripted-model'"
    serve = (
        "from longyarn.app.settings import Settings; from longyarn.app.reader.web import serve_reader; "
        f"serve_reader(Settings(db={str(db_path)!r}, {model_settings}), port={port})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", serve], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for_port(port, process)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            page.add_init_script(DOM_RENDERER)
            # No network beyond the server itself: anything else is refused, and noted.
            elsewhere: list[str] = []

            def only_this_server(route) -> None:
                if urlsplit(route.request.url).netloc == f"127.0.0.1:{port}":
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", only_this_server)
            yield page, port, elsewhere
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def open_the_story_as_ada(page, port: int, title: str) -> None:
    page.goto(f"http://127.0.0.1:{port}/")
    assert "reader=" in page.url  # a fresh reader link, to bookmark
    wait_for_text(page, "What should the stories call you?")
    page.click(".xterm")
    page.keyboard.type("Ada")
    page.keyboard.press("Enter")
    wait_for_text(page, title)
    page.keyboard.press("Enter")
    wait_for_text(page, "Mara came home on the last ferry")
    wait_for_text(page, "What happens next?")


def wait_for_readers_paragraph(store, story_id: str, db_path) -> list:
    deadline = time.monotonic() + 30
    written = []
    while not written and time.monotonic() < deadline:
        written = [s for s in store.branch(story_id, _newest_step_id(db_path)) if s.branch_owner]
        time.sleep(0.1)
    assert written, "no paragraph was written for the reader"
    return written


def test_a_reader_in_a_browser_makes_a_choice_and_reads_the_next_paragraph(store, server, embedder, db_path):
    story = seed_story(store, embedder, PARAGRAPHS[:1], title="The Salt Marsh Key")
    store.update_story(story.id, readable=True, reader_may_extend=True)
    with reading_room(db_path, server) as (page, port, elsewhere):
        open_the_story_as_ada(page, port, "The Salt Marsh Key")
        page.keyboard.press("2")  # "Tobias tells the truth about the fire"
        written = wait_for_readers_paragraph(store, story.id, db_path)
        first_words = " ".join(written[0].paragraph.split()[:4])
        wait_for_text(page, first_words)
        assert elsewhere == []
    assert written[0].instruction == "Tobias tells the truth about the fire."
    assert store.get_story(story.id).head_step_id == story.head_step_id


def test_a_paragraph_being_written_when_the_page_reloads_is_kept_for_the_reader(store, server, embedder, db_path):
    story = seed_story(store, embedder, PARAGRAPHS[:1], title="The Salt Marsh Key")
    store.update_story(story.id, readable=True, reader_may_extend=True)

    def slow_writer(request: dict) -> Reply:
        reply = story_responder(request)
        if request["_role"] == "writer":
            reply.chunk_chars, reply.chunk_delay_s = 8, 0.1  # seconds of streaming
        return reply

    server.responder = slow_writer
    with reading_room(db_path, server) as (page, port, _):
        open_the_story_as_ada(page, port, "The Salt Marsh Key")
        page.keyboard.press("2")
        wait_for_text(page, "The story goes on")
        page.reload()  # mid-paragraph: the session's process is told to quit

        written = wait_for_readers_paragraph(store, story.id, db_path)
        reader = store.reader_position(written[0].branch_owner, story.id)
        assert reader is not None and reader.step_id == written[0].id, "their place moved to it"
        # Back in the room, the story opens at the kept paragraph.
        wait_for_text(page, "The Salt Marsh Key")
        page.click(".xterm")
        page.keyboard.press("Enter")
        wait_for_text(page, " ".join(written[0].paragraph.split()[-4:]))
    assert written[0].instruction == "Tobias tells the truth about the fire."


def test_readers_in_a_browser_get_paragraphs_from_the_one_shared_local_model(store, embedder, db_path):
    story = seed_story(store, embedder, PARAGRAPHS[:1], title="The Salt Marsh Key")
    store.update_story(story.id, readable=True, reader_may_extend=True)
    # No key and no server: the bundled demo model, loaded once by the room (short paragraphs).
    local = "backend='local', sampling={'writer': {'max_tokens': 40}}"
    with reading_room(db_path, model_settings=local) as (page, port, elsewhere):
        open_the_story_as_ada(page, port, "The Salt Marsh Key")
        page.keyboard.press("2")
        written = wait_for_readers_paragraph(store, story.id, db_path)
        wait_for_text(page, " ".join(written[0].paragraph.split()[:3]))
        assert elsewhere == []
    assert (written[0].backend, written[0].model) == ("local", "demo_model")

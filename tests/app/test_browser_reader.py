"""The web reader in a real browser: Debian's Chromium, headless, driven by playwright.

A reader opens the library, names themselves, reads, chooses with a key, watches the next
paragraph stream in, reloads mid-paragraph, saves a place and resumes it; two readers in two
browser contexts never see each other's branch; the pages fit a phone and follow the system's
dark mode. The pages may ask for nothing but the reading room: every request is watched.
Screenshots go to $LONGYARN_SCREENSHOTS when it is set (to look at them).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.app.test_tui import PARAGRAPHS, seed_story, slow_writer
from tests.app.web_reader import scripted_settings, web_reader

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
TITLE = "The Salt Marsh Key"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


def _browser_or_skip():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("Chromium is not installed (Debian package `chromium`), so the browser test cannot run")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package `playwright` is not installed, so the browser test cannot run")
    return sync_playwright


class Room:
    """A browser on the reading room: new readers (contexts), and what went wrong."""

    def __init__(self, browser, base_url: str) -> None:
        self.browser, self.base_url = browser, base_url
        self.elsewhere: list[str] = []  # addresses outside the room the pages tried to reach
        self.console_errors: list[str] = []  # CSP violations and script errors land here

    def new_reader(self, viewport=DESKTOP, color_scheme: str = "light"):
        context = self.browser.new_context(viewport=viewport, color_scheme=color_scheme)
        netloc = urlsplit(self.base_url).netloc

        def note_elsewhere(request) -> None:
            # Watched, not intercepted: an intercepted event stream would arrive all at once.
            if urlsplit(request.url).netloc != netloc:
                self.elsewhere.append(request.url)

        context.on("request", note_elsewhere)
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        return page


@contextlib.contextmanager
def reading_room(store, settings, **options) -> Iterator[Room]:
    sync_playwright = _browser_or_skip()
    with web_reader(store, settings, **options) as base_url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield Room(browser, base_url)
        finally:
            browser.close()


@pytest.fixture
def story(store, embedder):
    story = seed_story(store, embedder, PARAGRAPHS[:1], title=TITLE)
    store.update_story(story.id, readable=True, reader_may_extend=True)
    return story


def screenshot(page, name: str) -> None:
    folder = os.environ.get("LONGYARN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def open_the_story_as(page, base_url: str, name: str) -> None:
    page.goto(base_url)
    page.get_by_role("link", name=f"Read {TITLE}").click()
    page.get_by_label("What should the stories call you?").fill(name)
    page.get_by_role("button", name="Start reading").click()
    page.get_by_role("heading", name=TITLE).wait_for()
    page.get_by_role("heading", name="What happens next?").wait_for()


def shown_paragraphs(page) -> list[str]:
    return page.locator("#passage > p.paragraph").all_inner_texts()


def as_prose_shows_it(text: str) -> str:
    """A paragraph as the reader's page renders prose (`white-space: pre-line`): its line breaks
    kept, each run of spaces shown as one, none at a line's ends."""
    return "\n".join(re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n"))


def wait_for_paragraphs(page, count: int, timeout_s: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while len(shown := shown_paragraphs(page)) < count or page.locator("#writing").is_visible():
        assert time.monotonic() < deadline, (
            f"the page shows {shown}; status {page.locator('#writing-status').inner_text()!r}; "
            f"problem {page.locator('#problem').inner_text()!r}"
        )
        time.sleep(0.05)
    return shown


def test_a_reader_chooses_watches_it_stream_reloads_mid_paragraph_saves_and_resumes(store, server, db_path, story):
    server.responder = slow_writer(0.04)  # a few seconds of streaming
    with reading_room(store, scripted_settings(db_path, server)) as room:
        page = room.new_reader()
        open_the_story_as(page, room.base_url, "Ada")
        assert shown_paragraphs(page) == [PARAGRAPHS[0]]
        screenshot(page, "desktop-story")

        page.keyboard.press("2")  # "Tobias tells the truth about the fire"
        streaming = page.locator("#streaming")
        deadline = time.monotonic() + 30
        while len(streaming.inner_text()) < 40:
            assert time.monotonic() < deadline, "nothing streamed in"
            time.sleep(0.02)
        partial = streaming.inner_text()
        assert page.locator("#writing-status").inner_text().startswith("The story goes on")
        screenshot(page, "desktop-streaming")

        page.reload()  # mid-paragraph: the paragraph goes on being written, and the page follows it
        assert page.locator("#writing").is_visible()
        shown = wait_for_paragraphs(page, 2)
        written = store.branch(story.id, store.reader_position(_reader_id(store), story.id).step_id)
        assert shown == [PARAGRAPHS[0], written[-1].paragraph]
        assert written[-1].paragraph.startswith(partial.rstrip("▍").strip()[:30])
        assert written[-1].instruction == "Tobias tells the truth about the fire."
        assert page.evaluate("document.activeElement.id") == "latest", "focus moves to the new paragraph"

        page.get_by_label("Save my place as").fill("Before the letter")
        page.get_by_role("button", name="Save", exact=True).click()
        page.get_by_text("Your place is saved").wait_for()
        page.locator(".choices button").first.click()
        assert len(wait_for_paragraphs(page, 3)) == 3

        page.get_by_role("link", name="Saved places").click()
        page.get_by_role("heading", name="Saved · Before the letter").wait_for()
        page.get_by_role("button", name="Go there").click()
        page.get_by_text("You are back at the place you kept.").wait_for()
        assert shown_paragraphs(page) == shown
        assert room.elsewhere == [] and room.console_errors == []
    assert store.get_story(story.id).head_step_id == story.head_step_id, "the author's story is untouched"


def _reader_id(store) -> str:
    with store.engine.connect() as connection:
        return connection.exec_driver_sql("SELECT id FROM readers").scalar()


def test_two_readers_in_two_browsers_never_see_each_others_branch(store, server, db_path, story):
    server.responder = slow_writer(0.005)
    with reading_room(store, scripted_settings(db_path, server)) as room:
        ada, bob = room.new_reader(), room.new_reader()
        open_the_story_as(ada, room.base_url, "Ada")
        open_the_story_as(bob, room.base_url, "Bob")
        ada.get_by_role("button", name="Mara opens the locked room").click()
        adas = wait_for_paragraphs(ada, 2)[-1]
        bob.locator("#action-text").fill("Bob climbs onto the roof of the mill.")
        bob.get_by_role("button", name="Do it").click()
        bobs = wait_for_paragraphs(bob, 2)[-1]
        assert adas != bobs
        ada.reload()
        bob.reload()
        assert shown_paragraphs(ada) == [PARAGRAPHS[0], adas]
        assert shown_paragraphs(bob) == [PARAGRAPHS[0], bobs]
        assert bobs not in ada.content() and adas not in bob.content()
        assert room.elsewhere == [] and room.console_errors == []


def test_readers_in_browsers_get_paragraphs_from_the_rooms_one_local_model(store, db_path, story, monkeypatch):
    from longyarn.app.settings import Settings
    from longyarn.recurrent_core.backends.local import LocalBackend

    loads = []
    load = LocalBackend.from_settings.__func__

    def counted(cls, settings):
        loads.append(settings)
        return load(cls, settings)

    monkeypatch.setattr(LocalBackend, "from_settings", classmethod(counted))
    # No key and no server: the bundled demo model, loaded once by the room (short paragraphs).
    settings = Settings(db=str(db_path), backend="local", sampling={"writer": {"max_tokens": 40}})
    with reading_room(store, settings) as room:
        readers = [room.new_reader(), room.new_reader()]
        for number, page in enumerate(readers):
            open_the_story_as(page, room.base_url, f"Reader {number}")
            page.keyboard.press(str(number + 1))
        shown = [wait_for_paragraphs(page, 2, timeout_s=120)[-1] for page in readers]
        assert room.elsewhere == []
    with store.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT paragraph, backend, model FROM steps WHERE branch_owner IS NOT NULL"
        ).all()
    # The demo model's text may hold runs of spaces, which the page shows as one.
    assert sorted(as_prose_shows_it(row[0]) for row in rows) == sorted(shown)
    assert {(row[1], row[2]) for row in rows} == {("local", "demo_model")}
    assert len(loads) == 1, "one model for every reader"


def test_the_pages_fit_a_phone_and_follow_the_systems_dark_mode(store, server, db_path, story):
    with reading_room(store, scripted_settings(db_path, server)) as room:
        light = room.new_reader(viewport=PHONE)
        open_the_story_as(light, room.base_url, "Ada")
        dark = room.new_reader(viewport=PHONE, color_scheme="dark")
        open_the_story_as(dark, room.base_url, "Bea")
        for page, scheme in ((light, "light"), (dark, "dark")):
            for address in ("/", urlsplit(page.url).path, f"{urlsplit(page.url).path}/places", "/me"):
                page.goto(room.base_url + address)
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), address
                name = address.strip("/").split("/")[-1] or "library"
                screenshot(page, f"phone-{scheme}-{'story' if name == story.id else name}")
            page.goto(room.base_url + urlsplit(page.url).path)
        background = [
            page.evaluate("getComputedStyle(document.body).backgroundColor") for page in (light, dark)
        ]
        assert background[0] != background[1]
        assert _luminance(background[0]) > 0.8 > 0.2 > _luminance(background[1])
        # Keyboard: the skip link comes first, then the site's links, then the story.
        light.goto(room.base_url + f"/stories/{story.id}")
        light.keyboard.press("Tab")
        assert light.evaluate("document.activeElement.textContent") == "Skip to the content"
        assert light.locator("main#main").count() == 1 and light.locator("nav").count() >= 2
        assert room.console_errors == []


def _luminance(css_color: str) -> float:
    red, green, blue = (int(part) for part in css_color[css_color.index("(") + 1 : -1].split(",")[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255

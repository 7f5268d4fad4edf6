"""The web reader on 127.0.0.1 for tests, and a reader that speaks to it over real HTTP.

    with web_reader(store, settings) as base_url:
        ada = ReaderClient(base_url)
        ada.sign_up("Ada")
        ada.choose(story_id, 2)
        events = ada.events(story_id)   # the server-sent events, to the end of the paragraph
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from longyarn.app.settings import Settings
from longyarn.app.web.app import create_reader_app
from longyarn.app.web.serving import listening_socket, uvicorn_config

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_AFTER = re.compile(r'name="after" value="([^"]*)"')
_PARAGRAPH = re.compile(r'<p class="paragraph[^"]*"[^>]*>(.*?)</p>', re.S)
_CHOICE = re.compile(r'<button type="submit" data-key="\d+"[^>]*><span class="key"[^>]*>\d+</span><span>(.*?)</span>', re.S)


def scripted_settings(db_path, model_server, **extra) -> Settings:
    """Settings for a reading room whose model is the scripted server."""
    return Settings(
        db=str(db_path), backend="openai", base_url=model_server.base_url, model="scripted-model",
        **extra,
    )


@contextlib.contextmanager
def web_reader(store, settings: Settings, *, head_timeout_s: float = 10.0, **app_options) -> Iterator[str]:
    """The web reader over `store`, served by uvicorn in a thread; yields its base URL."""
    app = create_reader_app(settings, store=store, **app_options)
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(app, head_timeout_s=head_timeout_s))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the web reader did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


class ReaderClient:
    """One reader's browser, without the browser: cookies, forms and streams over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, follow_redirects=False, timeout=60)
        self.csrf = ""

    def close(self) -> None:
        self.http.close()

    def sign_up(self, name: str = "Ada") -> None:
        page = self.http.get("/welcome")
        self.csrf = _CSRF.search(page.text).group(1)
        answer = self.http.post("/welcome", data={"csrf": self.csrf, "name": name, "next": "/"})
        assert answer.status_code == 303, answer.text

    def page(self, story_id: str, **params: str) -> httpx.Response:
        return self.http.get(f"/stories/{story_id}", params=params)

    def after(self, story_id: str) -> str:
        """The paragraph the story page shows the reader at (what its forms send)."""
        return _AFTER.search(self.page(story_id).text).group(1)

    def paragraphs(self, story_id: str) -> list[str]:
        return [html.unescape(text) for text in _PARAGRAPH.findall(self.page(story_id).text) if text]

    def choices(self, story_id: str) -> list[str]:
        return [html.unescape(text) for text in _CHOICE.findall(self.page(story_id).text)]

    def post(self, path: str, fields: dict[str, str], *, as_script: bool = True, **options) -> httpx.Response:
        headers = {"accept": "application/json"} if as_script else {}
        headers.update(options.pop("headers", {}))
        return self.http.post(path, data={"csrf": self.csrf, **fields}, headers=headers, **options)

    def choose(self, story_id: str, number: int, *, after: str | None = None) -> httpx.Response:
        after = self.after(story_id) if after is None else after
        return self.post(f"/stories/{story_id}/choose", {"after": after, "choice": str(number - 1)})

    def act(self, story_id: str, text: str) -> httpx.Response:
        return self.post(f"/stories/{story_id}/act", {"after": self.after(story_id), "text": text})

    def events(self, story_id: str, *, until: str | None = None) -> list[tuple[str, dict]]:
        """The stream's events, to its end (or to the first event named `until`)."""
        return list(self.follow(story_id, until=until))

    def follow(self, story_id: str, *, until: str | None = None) -> Iterator[tuple[str, dict]]:
        with self.http.stream("GET", f"/stories/{story_id}/stream") as stream:
            assert stream.status_code == 200, stream.read()
            name = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: "):]
                elif line.startswith("data: ") and name is not None:
                    yield name, json.loads(line[len("data: "):])
                    if name == until:
                        return
                    name = None


def streamed_text(events: list[tuple[str, dict]]) -> str:
    """The paragraph as a page following `events` shows it."""
    text = ""
    for name, data in events:
        if name == "text":
            text = data["replace"] if "replace" in data else text + data.get("append", "")
        elif name == "done":
            text = data.get("text", text)
    return text

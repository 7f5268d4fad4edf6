"""`longyarn read --serve --terminal`: the terminal reader in browsers, one app process per session.

The web reader (`longyarn.app.web`) is what `longyarn read --serve` serves; this is the
terminal app relayed through textual-serve, kept for readers who want the TUI in a browser and
as the baseline of `benchmarks/reader_load.py`. textual-serve runs the reader app as a
subprocess for each websocket and relays the terminal to xterm.js in the page. This module adds
what reader mode needs on top:

- Identity: a reader's token lives in the page address (`/?reader=<token>`), which the reader
  bookmarks. A visit without one is redirected to a fresh token; the session's websocket
  carries the token in its path (`/ws/<token>`: textual.js appends its own query string to
  the socket URL), and the server hands it to that session's process in an environment
  variable, never on a command line.
- Offline: our own page template loads fonts, styles and scripts from this server only
  (textual-serve's stock page fetches a font from Google).
- Privacy: the access log is silenced (request lines hold tokens); the page is sent with
  `Referrer-Policy: no-referrer`, `Cache-Control: no-store` and a same-origin content policy.

All sessions share one database; SQLite in WAL mode lets them read while one writes. With the
local model they share one copy of it too: the server loads it once and serves it to them on
127.0.0.1 as `longyarn serve` does (`longyarn.app.serve.shared_local_model`), rather than each
session process loading its own (a 1.5B model per reader would not fit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from longyarn.recurrent_core.errors import InvalidInput

from longyarn.app.session.reader_identity import new_token, parse_token

TOKEN_ENV = "LONGYARN_READER_TOKEN"
SETTINGS_ENV = "LONGYARN_READER_SETTINGS"
STORY_ENV = "LONGYARN_READER_STORY"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
PAGE_TITLE = "longyarn · reading room"
FONT_SIZES = range(8, 41)

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Same origin only; the page's own small style and script blocks are inline.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self'; connect-src 'self' ws: wss:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


def session_command() -> str:
    """The command textual-serve runs for each browser session."""
    return shlex.join([sys.executable, "-m", "longyarn.app.reader.web_session"])


class ReaderAppService(AppService):
    """One browser session's app process, told who reads through its environment."""

    def __init__(self, *args: Any, session_environment: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_environment = session_environment

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        environment = super()._build_environment(width=width, height=height)
        environment.update(self.session_environment)
        return environment


class ReaderServer(Server):
    """textual-serve's server with reader identity in the address and an offline page."""

    def __init__(
        self,
        *,
        settings_json: str,
        host: str = "127.0.0.1",
        port: int = 8000,
        story_id: str | None = None,
        command: str | None = None,
    ) -> None:
        super().__init__(
            command or session_command(),
            host=host,
            port=port,
            title=PAGE_TITLE,
            templates_path=TEMPLATES_DIR,
        )
        self.settings_json = settings_json
        self.story_id = story_id

    def initialize_logging(self) -> None:
        super().initialize_logging()
        # Request lines carry reader tokens; keep them out of the console.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    async def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[_security_headers])
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True)
        app.add_routes(
            [
                web.get("/", self.handle_index, name="index"),
                web.get("/ws/{token}", self.handle_reader_websocket, name="websocket"),
                web.get("/download/{key}", self.handle_download, name="download"),
                web.static("/static", self.statics_path, name="static"),
            ]
        )
        app.on_shutdown.append(self.on_shutdown)
        return app

    def serve(self, debug: bool = False) -> None:
        """Serve until Ctrl+C; say the room is open only once the port is really bound."""
        self.debug = debug
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, self.request_exit)
        try:
            web.run_app(
                self._make_app(),
                host=self.host,
                port=self.port,
                handle_signals=False,
                loop=loop,
                print=lambda *_: self.console.print(
                    f"The reading room is open at {self.public_url}/ (Ctrl+C closes it).",
                    highlight=False,
                ),
            )
        except OSError as error:  # aiohttp's own message repeats the address at length
            reason = os.strerror(error.errno).lower() if error.errno else str(error)
            raise InvalidInput(
                f"The reading room could not listen on {self.host}:{self.port} ({reason}); "
                "nothing was started; choose another --port or --host, or stop what is using it."
            ) from None

    async def handle_index(self, request: web.Request) -> web.StreamResponse:  # type: ignore[override]
        """The page; a visit without a valid reader token is sent to a fresh one."""
        token = parse_token(request.query.get("reader"))
        if token is None:
            query = {"reader": str(new_token())}
            if "fontsize" in request.query:
                query["fontsize"] = request.query["fontsize"]
            raise web.HTTPSeeOther(request.url.with_path("/").with_query(query).relative())
        font_size = to_int(request.query.get("fontsize", "16"), 16)
        socket_scheme = "wss" if request.secure else "ws"
        context = {
            "title": PAGE_TITLE,
            "static_url": "/static/",
            "font_size": font_size if font_size in FONT_SIZES else 16,
            "websocket_url": f"{socket_scheme}://{request.host}/ws/{token}",
        }
        response = aiohttp_jinja2.render_template("reader.html", request, context)
        response.headers["Cache-Control"] = "no-store"  # the page holds the reader's token
        return response

    async def handle_reader_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """Run one reader's session: an app process wired to this websocket."""
        token = parse_token(request.match_info["token"])
        if token is None:
            raise web.HTTPNotFound()
        websocket = web.WebSocketResponse(heartbeat=15)
        width = max(20, min(500, to_int(request.query.get("width", "80"), 80)))
        height = max(8, min(200, to_int(request.query.get("height", "24"), 24)))
        environment = {TOKEN_ENV: str(token), SETTINGS_ENV: self.settings_json}
        if self.story_id:
            environment[STORY_ENV] = self.story_id
        app_service: ReaderAppService | None = None
        try:
            await websocket.prepare(request)
            app_service = ReaderAppService(
                self.command,
                write_bytes=websocket.send_bytes,
                write_str=websocket.send_str,
                close=websocket.close,
                download_manager=self.download_manager,
                debug=self.debug,
                session_environment=environment,
            )
            await app_service.start(width, height)
            await self._process_messages(websocket, app_service)
        except Exception:
            log.exception("a reader session failed")
        finally:
            if app_service is not None:
                await app_service.stop()
        return websocket


@web.middleware
async def _security_headers(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def settings_for_sessions(settings: Any) -> str:
    """The settings every session process starts from, as JSON, without the API key.

    The key stays where it came from (the environment or the config file), which every
    session process reads for itself.
    """
    return json.dumps(settings.model_dump(mode="json", exclude={"api_key"}))


def serve_reader(
    settings: Any, *, host: str = "127.0.0.1", port: int = 8000, story_id: str | None = None
) -> None:
    """Serve the terminal reader to browsers until interrupted (`longyarn read --serve --terminal`).

    Binds 127.0.0.1 unless `host` names another interface.
    """
    from longyarn.app.serve import shared_local_model
    from longyarn.storage.db import open_store

    open_store(settings.db).close()  # migrate once here, not racing in every session
    with shared_local_model(settings) as session_settings:
        ReaderServer(
            settings_json=settings_for_sessions(session_settings), host=host, port=port,
            story_id=story_id,
        ).serve()


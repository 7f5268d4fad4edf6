"""Running the web reader: `longyarn read --serve [--workers N]` on uvicorn.

One worker serves every reader from one engine. Several workers (or several hosts behind any
HTTP load balancer) share one database, PostgreSQL for more than one host; a reader's stream
in flight is the only thing tied to one worker. With the local model and several workers, this
process loads the model once and serves it to them on 127.0.0.1, as `longyarn serve` does.

Connections are bounded in time: a request's head must arrive within `REQUEST_HEAD_TIMEOUT_S`
(uvicorn alone would wait forever for a client that opens a connection and dribbles headers),
an idle keep-alive connection closes after `KEEP_ALIVE_S`, a stalled body after
`security.BODY_TIMEOUT_S`, and TCP keepalive notices a peer that vanished without closing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from longyarn.app.settings import Settings
from longyarn.app.sockets import tcp_socket
from longyarn.recurrent_core.errors import InvalidInput

SETTINGS_ENV = "LONGYARN_WEB_READER_SETTINGS"
STORY_ENV = "LONGYARN_WEB_READER_STORY"
REQUEST_HEAD_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 8192  # per worker; beyond it uvicorn answers 503
LISTEN_BACKLOG = 4096  # readers arriving at the same moment wait here, not refused
# A peer silent this long is probed, and dropped after the probes go unanswered (~90 s).
TCP_KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1, with a deadline for each request's head (see the module's notes)."""

    head_timeout_s = REQUEST_HEAD_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on (host, port), with TCP keepalive and no Nagle delay for the
    connections it accepts."""
    sock = tcp_socket(host)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # accepted sockets inherit these
    for option, value in TCP_KEEPALIVE.items():
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    try:
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as error:
        sock.close()
        reason = os.strerror(error.errno).lower() if error.errno else str(error)
        raise InvalidInput(
            f"The reading room could not listen on {host}:{port} ({reason}); nothing was started; "
            "choose another --port or --host, or stop what is using it."
        ) from None
    return sock


def uvicorn_config(
    app: Any, *, head_timeout_s: float = REQUEST_HEAD_TIMEOUT_S, **options: Any
) -> uvicorn.Config:
    """uvicorn's settings for the reading room (the access log is off: a sign-in link's address
    holds a reader's token)."""
    protocol = GuardedH11Protocol
    if head_timeout_s != GuardedH11Protocol.head_timeout_s:  # one process only: not importable
        protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"head_timeout_s": head_timeout_s})
    return uvicorn.Config(
        app, http=protocol, ws="none", lifespan="on", access_log=False,
        log_level="warning", timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=30, **options,
    )


def serve_reader(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    story_id: str | None = None,
    workers: int = 1,
) -> None:
    """Serve the web reader until Ctrl+C (what `longyarn read --serve` calls)."""
    from longyarn.app.serve import shared_local_model
    from longyarn.storage.db import open_store

    if workers < 1:
        raise InvalidInput("--workers must be at least 1; nothing was started; pass a positive number.")
    open_store(settings.db).close()  # migrate once here, not racing in every worker
    sock = listening_socket(host, port)
    try:
        # One worker shares the model in process; several read the one this process serves.
        with shared_local_model(settings, when=workers > 1) as worker_settings:
            shown_host = f"[{host}]" if ":" in host else host
            print(
                f"The reading room is open at http://{shown_host}:{sock.getsockname()[1]}/ "
                f"({workers} worker{'s' if workers > 1 else ''}; Ctrl+C closes it).",
                flush=True,
            )
            if workers == 1:
                from .app import create_reader_app

                app = create_reader_app(worker_settings, story_id=story_id)
                uvicorn.Server(uvicorn_config(app)).run(sockets=[sock])
            else:
                _run_workers(worker_settings, story_id, workers, sock)
    finally:
        sock.close()


def _run_workers(settings: Settings, story_id: str | None, workers: int, sock: socket.socket) -> None:
    from uvicorn.supervisors import Multiprocess

    # Workers are new processes: they rebuild the settings from this (the API key stays where
    # it came from, the environment or the config file, which each worker reads itself).
    os.environ[SETTINGS_ENV] = json.dumps(settings.model_dump(mode="json", exclude={"api_key"}))
    if story_id:
        os.environ[STORY_ENV] = story_id
    config = uvicorn_config(f"{__name__}:app_from_environment", factory=True, workers=workers)
    Multiprocess(config, sockets=[sock]).run()


def app_from_environment() -> Any:
    """The app of one worker process (uvicorn calls this in each)."""
    from .app import create_reader_app

    settings = Settings(**json.loads(os.environ.get(SETTINGS_ENV) or "{}"))
    return create_reader_app(settings, story_id=os.environ.get(STORY_ENV) or None)


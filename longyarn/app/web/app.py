"""The web reader's ASGI app: routes, error pages, static files, and one engine per process.

The model, the embedder and the database pool are loaded once per process, for every reader
(the model on the first new paragraph anyone asks for, so reading alone needs none). A
reader is rows in the database, never a process: between moves nothing of theirs stays in
memory, only the paragraph being written for them, so any worker, on any host sharing the
database, serves any request except a stream in flight.
"""

from __future__ import annotations

import contextlib
import logging
from typing import AsyncIterator, Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from longyarn.app.session.engine_host import EngineHost
from longyarn.app.session.reader_errors import ReaderProblem
from longyarn.app.settings import Settings
from longyarn.recurrent_core.engine import Engine
from longyarn.recurrent_core.readers import StoryAndReaderStore

from . import actions, pages
from .moves import MoveBoard, StepLine
from .room_engine import reading_room_engine, use_threads_for_many_readers
from .security import BODY_TIMEOUT_S, Guard
from .views import (
    HTTP_WORDS,
    STATIC_DIR,
    SignInNeeded,
    WebRoom,
    make_templates,
    problem,
    problem_for,
    see_other,
)

# A paragraph being written when the server is told to stop gets this long to be stored.
FINISH_ON_SHUTDOWN_S = 60.0

log = logging.getLogger(__name__)


class StaticAssets(StaticFiles):
    """The reader's CSS, script and icon; their addresses change with their content, so a
    browser may keep them for a day (`static()` in the templates adds the version)."""

    async def get_response(self, path: str, scope) -> Response:  # noqa: ANN001
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["cache-control"] = "public, max-age=86400"
        return response


def create_reader_app(
    settings: Settings,
    *,
    store: StoryAndReaderStore | None = None,
    engine_factory: Callable[[Settings], Engine] | None = None,
    story_id: str | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> Starlette:
    """The web reader for `settings` (its database unless `store` is given, which the caller
    then closes). `engine_factory` builds the one engine (default: `reading_room_engine`); a request
    body that stalls for `body_timeout_s` is dropped."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from longyarn.storage.db import open_store

        use_threads_for_many_readers()
        opened = store if store is not None else open_store(settings.db)
        factory = engine_factory or (lambda chosen: reading_room_engine(opened, chosen))
        room = WebRoom(
            store=opened,
            host=EngineHost(settings, factory=factory),
            board=MoveBoard(StepLine(settings.reader_concurrent_steps)),
            steps_per_minute=settings.reader_steps_per_minute,
            action_chars=settings.reader_action_chars,
            move_lease_s=settings.reader_move_lease_s,
            story_id=story_id,
        )
        app.state.room = room
        try:
            yield
        finally:
            await room.board.finish(FINISH_ON_SHUTDOWN_S)
            await room.host.aclose()
            room.page_threads.shutdown(wait=False)
            if store is None:
                opened.close()

    app = Starlette(
        routes=reader_routes(),
        middleware=[Middleware(Guard, body_timeout_s=body_timeout_s)],
        exception_handlers={
            HTTPException: _http_problem,
            ReaderProblem: _reader_problem,
            SignInNeeded: _sign_in_first,
            Exception: _server_problem,
        },
        lifespan=lifespan,
    )
    app.state.templates = make_templates()
    return app


def reader_routes() -> list[Route | Mount]:
    story = "/stories/{story_id:str}"
    return [
        Route("/", pages.library, methods=["GET"]),
        Route("/welcome", pages.welcome, methods=["GET"]),
        Route("/welcome", pages.register, methods=["POST"]),
        Route("/sign-in", pages.switch_reader, methods=["POST"]),
        Route("/sign-out", pages.sign_out, methods=["POST"]),
        Route("/me", pages.reader_link, methods=["GET"]),
        Route("/healthz", pages.health, methods=["GET"]),
        Route(story, pages.story, methods=["GET"]),
        Route(f"{story}/places", pages.places, methods=["GET"]),
        Route(f"{story}/export.md", pages.export, methods=["GET"]),
        Route(f"{story}/stream", actions.stream, methods=["GET"]),
        Route(f"{story}/choose", actions.choose, methods=["POST"]),
        Route(f"{story}/act", actions.act, methods=["POST"]),
        Route(f"{story}/back", actions.back, methods=["POST"]),
        Route(f"{story}/save", actions.save, methods=["POST"]),
        Route(f"{story}/bookmark", actions.bookmark, methods=["POST"]),
        Route(f"{story}/places/{{place_id:str}}/{{verb:str}}", _place_verb, methods=["POST"]),
        Mount("/static", StaticAssets(directory=STATIC_DIR, follow_symlink=False), name="static"),
    ]


async def _place_verb(request: Request) -> Response:
    if request.path_params["verb"] not in ("go", "forget"):
        raise HTTPException(404)
    return await actions.use_place(request)


async def _http_problem(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    words = error.detail if error.detail and error.detail != _reason(error.status_code) else None
    return problem(
        request, error.status_code, words or HTTP_WORDS.get(error.status_code, HTTP_WORDS[400]),
        headers=dict(error.headers or {}),
    )


def _reason(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase


async def _reader_problem(request: Request, error: Exception) -> Response:
    assert isinstance(error, ReaderProblem)
    return problem_for(request, error)


async def _sign_in_first(request: Request, error: Exception) -> Response:
    return see_other(f"/welcome?next={quote(request.url.path)}")


async def _server_problem(request: Request, error: Exception) -> Response:
    log.error("the web reader failed on %s %s", request.method, request.url.path, exc_info=error)
    return problem(request, 500, HTTP_WORDS[500])

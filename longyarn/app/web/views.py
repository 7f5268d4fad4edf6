"""What every route of the web reader shares: the room, who is asking, and how to answer.

An answer is a page for a browser's own navigation, or JSON for the reader's script (which
asks with `Accept: application/json`); problems are one sentence either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import parse_qsl

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from longyarn.app.session.engine_host import EngineHost
from longyarn.app.session.reader_errors import (
    CannotExtend,
    ChoiceOutdated,
    InvalidReaderText,
    MoveInFlight,
    PlaceGone,
    ReaderProblem,
    ReaderRateLimited,
    StoryClosed,
)
from longyarn.app.session.reader_identity import (
    ReaderToken,
    TokenRefused,
    parse_token,
    reader_for_token,
)
from longyarn.app.session.reading import ReadingSession
from longyarn.recurrent_core.readers import Reader, StoryAndReaderStore

from .moves import MoveBoard
from .security import CSRF_FIELD, CSRF_HEADER, READER_COOKIE, check_csrf, csrf_token

T = TypeVar("T")

PAGE_THREADS = 4
PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

# What each problem a reader can meet answers over HTTP.
PROBLEM_STATUS: dict[type[ReaderProblem], int] = {
    StoryClosed: 404,
    PlaceGone: 404,
    InvalidReaderText: 400,
    CannotExtend: 403,
    MoveInFlight: 409,
    ChoiceOutdated: 409,
    ReaderRateLimited: 429,
}
HTTP_WORDS = {
    400: "That request could not be read, so nothing was changed; go back and try again.",
    403: "That is not yours to do, so nothing was changed.",
    404: "There is nothing here: no story, paragraph or page with that address; nothing was "
    "changed; choose a story from the library.",
    405: "That page cannot be used that way, so nothing was changed; go back and use its buttons.",
    500: "Something went wrong on the server; your story is saved as it was; please try again "
    "in a moment.",
}


@dataclass
class WebRoom:
    """What the reader's routes share in one process: the store, the one engine (built on the
    first new paragraph anyone asks for), the moves in flight, and the limits on readers."""

    store: StoryAndReaderStore
    host: EngineHost
    board: MoveBoard
    steps_per_minute: int
    action_chars: int
    move_lease_s: float
    story_id: str | None = None  # the one story this room serves, if it was started for one
    # Page views read the database on a few threads of their own; moves use the event loop's
    # larger pool, so a crowd opening pages cannot hold up paragraphs already on their way.
    page_threads: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            PAGE_THREADS, thread_name_prefix="longyarn-pages"
        )
    )

    # Page views queue here, not in `page_threads`: each gives way to starting paragraphs
    # just before it runs (see `page_work`).
    page_turns: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PAGE_THREADS))

    def session(self, reader: Reader, story_id: str) -> ReadingSession:
        """The reader's way through `story_id` (raises `StoryClosed` if it is not open to readers)."""
        return ReadingSession(
            self.store,
            reader,
            story_id,
            engine_factory=self.host.engine_now if self.host.factory is not None else None,
            steps_per_minute=self.steps_per_minute,
            action_chars=self.action_chars,
            move_lease_s=self.move_lease_s,
        )


@dataclass(frozen=True)
class Visitor:
    """Who is asking: the token in their cookie (if any) and the reader it proves (if any)."""

    token: ReaderToken | None
    reader: Reader | None
    refused: bool = False  # the cookie names a reader but its secret is not theirs

    @property
    def csrf(self) -> str:
        return csrf_token(self.token) if self.token is not None else ""


def room_of(request: Request) -> WebRoom:
    return request.app.state.room


async def page_work(request: Request, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` on the page views' threads (see `WebRoom.page_threads`), once no
    reader's paragraph is starting (see `StartingMoves`)."""
    room = room_of(request)
    async with room.page_turns:
        await room.board.starting.give_way()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(room.page_threads, functools.partial(function, *args))


async def blocking(request: Request, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` off the event loop: on the page views' threads for a page (GET),
    else (a move, or the stream that follows one) on the loop's own pool."""
    if request.method == "GET" and not request.url.path.endswith("/stream"):
        return await page_work(request, function, *args)
    return await asyncio.to_thread(function, *args)


async def visitor_of(request: Request) -> Visitor:
    """Who the request's cookie says is asking (one read of the database)."""
    token = parse_token(request.cookies.get(READER_COOKIE))
    if token is None:
        return Visitor(None, None)
    try:
        reader = await blocking(request, reader_for_token, room_of(request).store, token)
    except TokenRefused:
        return Visitor(token, None, refused=True)
    return Visitor(token, reader)


class SignInNeeded(Exception):
    """The page needs a reader; a browser is sent to the welcome page first."""


async def reader_required(request: Request) -> Visitor:
    """The visitor, who must be a known reader: else a page is sent to the welcome page
    (`SignInNeeded`) and anything else gets 403."""
    visitor = await visitor_of(request)
    if visitor.reader is not None:
        return visitor
    if request.method == "GET" and not wants_json(request):
        raise SignInNeeded()
    raise HTTPException(
        403,
        "This browser is not signed in as a reader (its cookie is missing or not valid), so "
        "nothing was changed; open the reading room's front page to start reading.",
    )


async def form_of(request: Request, visitor: Visitor) -> dict[str, str]:
    """The request's form fields, once its CSRF token is checked (bodies are bounded upstream)."""
    body = await request.body()
    try:
        fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, HTTP_WORDS[400]) from None
    check_csrf(request, visitor.token, request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD))
    return fields


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def local_path(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site, else `default` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# ---- pages -------------------------------------------------------------------------------


def make_templates() -> jinja2.Environment:
    """The page templates, autoescaped, with `static(name)` for versioned asset addresses."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
        trim_blocks=True, lstrip_blocks=True,
    )
    environment.globals["static"] = _static_addresses()
    return environment


def _static_addresses() -> Callable[[str], str]:
    # The address changes with the content, so browsers may keep a file for long.
    versions = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in STATIC_DIR.iterdir() if path.is_file()
    }
    return lambda name: f"/static/{name}?v={versions.get(name, '0')}"


def render(
    request: Request, template: str, *, status: int = 200, visitor: Visitor | None = None,
    **context: Any,
) -> HTMLResponse:
    html = request.app.state.templates.get_template(template).render(
        reader=visitor.reader if visitor else None, csrf=visitor.csrf if visitor else "",
        **context,
    )
    return HTMLResponse(html, status_code=status)


def problem(
    request: Request, status: int, message: str, *, headers: dict[str, str] | None = None
) -> Response:
    """One sentence about what went wrong: JSON for the script, a page for a browser."""
    if wants_json(request):
        return JSONResponse({"message": message}, status_code=status, headers=headers)
    story_id = request.path_params.get("story_id")
    back = f"/stories/{story_id}" if story_id and status != 404 else "/"
    response = render(request, "problem.html", status=status, message=message, back=back)
    response.headers.update(headers or {})
    return response


def problem_for(request: Request, error: ReaderProblem) -> Response:
    status = next((code for kind, code in PROBLEM_STATUS.items() if isinstance(error, kind)), 400)
    headers = None
    if isinstance(error, ReaderRateLimited):
        headers = {"Retry-After": str(max(1, round(error.wait_s)))}
    return problem(request, status, str(error), headers=headers)

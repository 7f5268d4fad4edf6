"""What a reader does on a story page: choose, act, go back, save, bookmark, use a kept place;
and the stream that follows a paragraph as it is written (server-sent events).

Every action is a POST with the reader's CSRF token and the paragraph the page showed
(`after`), so a stale tab or a double click never moves the reader somewhere they did not see.
A new paragraph is claimed here and written by a task of this process (`MoveBoard`); the answer
comes at once, and the page follows the paragraph at `/stories/ID/stream`.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from longyarn.app.session.reader_errors import PlaceGone
from longyarn.app.session.reader_text import clean_action
from longyarn.app.session.reading import ReadingSession, readable_story
from longyarn.recurrent_core.readers import Reader

from .moves import HEARTBEAT_S, SseEvent
from .views import WebRoom, form_of, reader_required, room_of, see_other, visitor_of, wants_json

# A page following a paragraph that another server process writes looks this often.
ELSEWHERE_POLL_S = 1.0
LOST = (
    "The paragraph being written for you could not be finished (its server stopped); nothing "
    "was kept; please choose again."
)


async def _acting(request: Request) -> tuple[WebRoom, Reader, str, dict[str, str]]:
    visitor = await reader_required(request)
    fields = await form_of(request, visitor)
    assert visitor.reader is not None
    return room_of(request), visitor.reader, request.path_params["story_id"], fields


def _opened(room: WebRoom, reader: Reader, story_id: str, after: str | None) -> ReadingSession:
    session = room.session(reader, story_id)
    session.open()
    session.check_place(after or None)
    return session


def _moved(request: Request, story_id: str, *, note: str = "", writing: bool = False) -> Response:
    """The answer to a move: where the page goes next (or, for the script, what to follow)."""
    if wants_json(request):
        if writing:
            return JSONResponse({"stream": f"/stories/{story_id}/stream"}, status_code=202)
        return JSONResponse({"reload": True})
    query = f"?note={note}" if note else ""
    return see_other(f"/stories/{story_id}{query}#latest")


async def choose(request: Request) -> Response:
    room, reader, story_id, fields = await _acting(request)
    index = _number(fields.get("choice"))

    def claim() -> tuple[ReadingSession, str | None, bool]:
        session = _opened(room, reader, story_id, fields.get("after"))
        choice = session.choice_at(index, fields.get("after") or None)
        if choice.step_id is not None:  # a written paragraph: no model, no waiting
            session.go_to(choice.step_id)
            return session, None, False
        session.claim_move(choice.instruction)
        return session, choice.instruction, True

    with room.board.starting.claiming():
        session, instruction, writes = await asyncio.to_thread(claim)
        if writes:
            room.board.start(session, instruction)
    return _moved(request, story_id, writing=writes)


async def act(request: Request) -> Response:
    room, reader, story_id, fields = await _acting(request)
    action = clean_action(fields.get("text", ""), room.action_chars)

    def claim() -> ReadingSession:
        session = _opened(room, reader, story_id, fields.get("after"))
        session.claim_move(action)
        return session

    with room.board.starting.claiming():
        session = await asyncio.to_thread(claim)
        room.board.start(session, action)
    return _moved(request, story_id, writing=True)


async def back(request: Request) -> Response:
    return await _at_place(request, lambda session, _: session.back(), "back")


async def save(request: Request) -> Response:
    return await _at_place(request, lambda session, fields: session.save_slot(fields.get("name", "")), "saved")


async def bookmark(request: Request) -> Response:
    return await _at_place(request, lambda session, _: session.bookmark(), "bookmarked")


async def _at_place(
    request: Request, do: Callable[[ReadingSession, dict[str, str]], object], note: str
) -> Response:
    """Do something where the reader is (still where the page showed them), then say so."""
    room, reader, story_id, fields = await _acting(request)
    await asyncio.to_thread(lambda: do(_opened(room, reader, story_id, fields.get("after")), fields))
    return _moved(request, story_id, note=note)


async def use_place(request: Request) -> Response:
    """Go to a kept place (`/go`) or forget it (`/forget`)."""
    room, reader, story_id, _ = await _acting(request)
    place_id, verb = request.path_params["place_id"], request.path_params["verb"]

    def use() -> None:
        session = room.session(reader, story_id)
        place = next((p for p in session.save_slots() + session.bookmarks() if p.id == place_id), None)
        if place is None:
            raise PlaceGone("There is no such saved place or bookmark of yours; nothing was changed.")
        if verb == "go":
            session.go_to(place.step_id)
        else:
            session.forget_place(place)

    await asyncio.to_thread(use)
    if verb == "go":
        return _moved(request, story_id, note="place")
    return see_other(f"/stories/{story_id}/places")


def _number(text: str | None) -> int:
    if text is None or not text.isdigit() or len(text) > 3:
        raise HTTPException(400, "That choice is not one of the numbered choices; nothing was written.")
    return int(text)


# ---- following a paragraph as it is written ---------------------------------------------


async def stream(request: Request) -> Response:
    """Server-sent events for the reader's paragraph in flight in this story.

    Written here: its place in line, its phase and its text, from the start (so a reloaded
    page catches up), then how it ended. Written by another process: "elsewhere", then how it
    ended. None: "idle" (the page shows the story as stored).
    """
    visitor = await visitor_of(request)
    if visitor.reader is None:
        raise HTTPException(403, "This browser is not signed in as a reader, so there is nothing to follow.")
    room = room_of(request)
    reader, story_id = visitor.reader, request.path_params["story_id"]
    move = room.board.get(reader.id, story_id)
    if move is not None:
        events = move.follow(room.board.line)
    else:
        await asyncio.to_thread(readable_story, room.store, story_id)  # unknown ids: 404
        events = _followed_elsewhere(room, reader, story_id)
    return StreamingResponse(
        _server_sent(events), media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def _followed_elsewhere(room: WebRoom, reader: Reader, story_id: str) -> AsyncIterator[SseEvent]:
    claimed = await asyncio.to_thread(room.store.reader_move, reader.id, story_id)
    if claimed is None:
        yield ("idle", {})
        return
    yield ("elsewhere", {"words": "The story goes on…"})
    quiet_s = 0.0
    while True:
        await asyncio.sleep(ELSEWHERE_POLL_S)
        if await asyncio.to_thread(room.store.reader_move, reader.id, story_id) is None:
            break
        quiet_s += ELSEWHERE_POLL_S
        if quiet_s >= HEARTBEAT_S:
            quiet_s = 0.0
            yield None
    position = await asyncio.to_thread(room.store.reader_position, reader.id, story_id)
    if position is not None and position.step_id != claimed.parent_step_id:
        yield ("done", {"step": position.step_id})
    else:
        yield ("failed", {"message": LOST})


async def _server_sent(events: AsyncIterator[SseEvent]) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"  # a dropped stream is reopened after 2 s (EventSource does it)
    async for item in events:
        if item is None:
            yield ": still writing\n\n"
        else:
            name, data = item
            yield f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

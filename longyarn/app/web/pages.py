"""The web reader's pages: the library, the welcome, a story, its saved places, the reader's
own link, and signing in with an old `?reader=` link."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from longyarn.app.export import render_story
from longyarn.app.session.reader_chapters import chapter_headings
from longyarn.app.session.reader_errors import InvalidReaderText
from longyarn.app.session.reader_identity import (
    ReaderToken,
    TokenRefused,
    new_token,
    parse_token,
    reader_for_token,
    register_reader,
)
from longyarn.app.session.reading import Choice, ReadingSession
from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.readers import Reader, ReaderMove, ReaderPlace
from longyarn.recurrent_core.types import Step

from .moves import Move
from .security import READER_COOKIE, set_reader_cookie
from .views import (
    Visitor,
    blocking,
    form_of,
    local_path,
    page_work,
    problem,
    reader_required,
    render,
    room_of,
    see_other,
    visitor_of,
)

# A story page shows this many paragraphs before "Show the earlier paragraphs".
SHOWN_PARAGRAPHS = 60
# Fixed sentences after a move (`?note=`): never words taken from the address.
NOTES = {
    "saved": "Your place is saved; find it under Saved places.",
    "bookmarked": "Bookmarked; find it under Saved places.",
    "back": "One paragraph back: choose again.",
    "place": "You are back at the place you kept.",
    "signed-in": "You are signed in; this browser will remember you.",
}
NO_COOKIE = (
    "Your browser did not send back the cookie that keeps who you are, so no reader was made; "
    "allow cookies for this site, then open the welcome page again."
)
REFUSED_LINK = (
    "This reader link is not valid (its secret does not match the reader it names), so you were "
    "not signed in and nothing was changed; ask for your own link, or start as a new reader."
)


# ---- the library and signing in ---------------------------------------------------------


async def library(request: Request) -> Response:
    signing_in = await _sign_in_with_link(request)
    if signing_in is not None:
        return signing_in
    room = room_of(request)
    if room.story_id is not None:
        return see_other(f"/stories/{room.story_id}")
    visitor = await visitor_of(request)
    stories = await page_work(request, room.store.readable_stories)
    return render(
        request, "library.html", visitor=visitor, stories=stories,
        note=NOTES.get(request.query_params.get("note", "")),
    )


async def _sign_in_with_link(request: Request) -> Response | None:
    """An old `?reader=TOKEN` link: sign in once with a cookie, then a clean address, so the
    token stays out of history, logs and Referer headers."""
    if "reader" not in request.query_params:
        return None
    clean = request.url.remove_query_params("reader")
    clean_address = clean.path + (f"?{clean.query}" if clean.query else "")
    token = parse_token(request.query_params["reader"])
    visitor = await visitor_of(request)
    if token is None or token == visitor.token:
        return see_other(clean_address)
    try:
        reader = await blocking(request, reader_for_token, room_of(request).store, token)
    except TokenRefused:
        return problem(request, 403, REFUSED_LINK)
    if visitor.reader is not None and (reader is None or reader.id != visitor.reader.id):
        # A link from someone else must never switch who reads here without asking.
        return render(
            request, "switch.html", visitor=visitor, link_token=str(token),
            link_reader=reader, next=clean_address,
        )
    return await _signed_in(request, token, clean_address, checked=True)


async def _signed_in(request: Request, token: ReaderToken, after: str, *, checked: bool = False) -> Response:
    """Keep `token` in this browser and go on to `after`; 403 if it names a reader whose
    secret it does not hold (unless that was `checked` already)."""
    if not checked:
        try:
            await asyncio.to_thread(reader_for_token, room_of(request).store, token)
        except TokenRefused:
            return problem(request, 403, REFUSED_LINK)
    response = see_other(after)
    set_reader_cookie(response, request, token)
    return response


async def switch_reader(request: Request) -> Response:
    """The reader confirmed signing in with a link while this browser read as someone else."""
    visitor = await visitor_of(request)
    fields = await form_of(request, visitor)
    token = parse_token(fields.get("token"))
    if token is None:
        raise HTTPException(400, "That reader link is not in the form a link has; nothing was changed.")
    return await _signed_in(request, token, local_path(fields.get("next")))


async def welcome(request: Request) -> Response:
    """Ask a new reader what to call them; their token is made now and kept in a cookie."""
    visitor = await visitor_of(request)
    after = local_path(request.query_params.get("next"))
    if visitor.reader is not None:
        return see_other(after)
    token = visitor.token if visitor.token is not None and not visitor.refused else new_token()
    response = render(
        request, "welcome.html", visitor=Visitor(token, None), next=after,
        refused=visitor.refused,
    )
    if token != visitor.token:
        set_reader_cookie(response, request, token)
    return response


async def register(request: Request) -> Response:
    visitor = await visitor_of(request)
    if visitor.token is None:
        return problem(request, 403, NO_COOKIE)
    fields = await form_of(request, visitor)
    after = local_path(fields.get("next"))
    if visitor.reader is not None:
        return see_other(after)
    if visitor.refused:
        return see_other("/welcome")
    try:
        await asyncio.to_thread(register_reader, room_of(request).store, visitor.token, fields.get("name", ""))
    except InvalidReaderText as error:
        return render(request, "welcome.html", status=400, visitor=visitor, next=after, message=str(error))
    except InvalidInput:  # the same browser registered twice at once: the first one counts
        pass
    return see_other(after)


async def reader_link(request: Request) -> Response:
    """The reader's own link, to carry their stories to another browser."""
    visitor = await reader_required(request)
    link = f"{str(request.base_url).rstrip('/')}/?reader={visitor.token}"
    return render(request, "me.html", visitor=visitor, link=link)


async def sign_out(request: Request) -> Response:
    visitor = await reader_required(request)
    await form_of(request, visitor)
    response = see_other("/")
    response.delete_cookie(READER_COOKIE, path="/")
    return response


# ---- a story -----------------------------------------------------------------------------


@dataclass
class StoryPage:
    """What the story page shows, read in one go off the event loop."""

    session: ReadingSession
    choices: list[Choice]
    elsewhere: ReaderMove | None
    headings: dict[str, str] = field(default_factory=dict)  # chapter names by their first paragraph


def open_story(request: Request, reader: Reader, story_id: str, check_elsewhere: bool) -> StoryPage:
    room = room_of(request)
    session = room.session(reader, story_id)
    session.open()
    elsewhere = room.store.reader_move(reader.id, story_id) if check_elsewhere else None
    headings = chapter_headings(room.store, story_id, session.path)
    return StoryPage(session, session.choices(), elsewhere, headings)


async def story(request: Request) -> Response:
    signing_in = await _sign_in_with_link(request)
    if signing_in is not None:
        return signing_in
    visitor = await reader_required(request)
    reader = visitor.reader
    assert reader is not None
    story_id = request.path_params["story_id"]
    move: Move | None = room_of(request).board.get(reader.id, story_id)
    page = await page_work(request, open_story, request, reader, story_id, move is None)
    session = page.session
    path = session.path
    show_all = request.query_params.get("all") == "1"
    earlier = 0 if show_all else max(0, len(path) - SHOWN_PARAGRAPHS)
    writing = move is not None or page.elsewhere is not None
    return render(
        request, "story.html", visitor=visitor, story=session.story, path=path,
        shown=path[earlier:], earlier=earlier, choices=page.choices, headings=page.headings,
        position_id=session.position.id if session.position else "",
        may_extend=session.may_extend, next_title=_next_title(session, page.choices),
        action_chars=session.action_chars, writing=writing,
        writing_text=move.text if move is not None else "",
        can_go_back=session.position is not None and session.position.parent_id is not None,
        note=NOTES.get(request.query_params.get("note", "")),
    )


def _next_title(session: ReadingSession, choices: list[Choice]) -> str:
    if choices:
        return "What happens next?" if session.position else "How does it begin?"
    if session.position is None:
        return "This story has not begun yet."
    return "The end, for now: the author has not written further."


@dataclass(frozen=True)
class PlaceShown:
    place: ReaderPlace
    preview: str
    paragraph_number: int


def _places(session: ReadingSession) -> list[PlaceShown]:
    shown = []
    for place in session.save_slots() + session.bookmarks():
        path: list[Step] = session.store.branch(session.story_id, place.step_id)
        preview = path[-1].paragraph if path else ""
        shown.append(PlaceShown(place, _preview(preview), len(path)))
    return shown


def _preview(paragraph: str, words: int = 18) -> str:
    split = paragraph.split()
    return " ".join(split[:words]) + ("…" if len(split) > words else "")


async def places(request: Request) -> Response:
    visitor = await reader_required(request)
    assert visitor.reader is not None
    story_id = request.path_params["story_id"]

    def read() -> tuple[ReadingSession, list[PlaceShown]]:
        session = room_of(request).session(visitor.reader, story_id)  # type: ignore[arg-type]
        return session, _places(session)

    session, kept = await page_work(request, read)
    return render(request, "places.html", visitor=visitor, story=session.story, places=kept)


async def export(request: Request) -> Response:
    """The reader's path through the story, as a Markdown file."""
    visitor = await reader_required(request)
    assert visitor.reader is not None
    page = await page_work(request, open_story, request, visitor.reader, request.path_params["story_id"], False)
    story = page.session.story
    name = "".join(c if c.isascii() and c.isalnum() else "-" for c in story.title.lower()).strip("-")
    return PlainTextResponse(
        render_story(story, page.session.path, "md", headings=page.headings), media_type="text/markdown; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name or "story"}.md"'},
    )


async def health(request: Request) -> Response:
    """For load balancers: 200 while this process can read the database (at once: it does not
    give way to readers' paragraphs as pages do)."""
    room = room_of(request)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(room.page_threads, room.store.reader_exists, "0" * 16)  # one indexed read
    return PlainTextResponse("ok", headers={"cache-control": "no-store"})

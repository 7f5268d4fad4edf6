"""The paragraphs this process is writing for web readers, and the line readers wait in.

A reader's move runs as a task of the process, not of the request that asked for it, so a
page that reloads or closes mid-paragraph never stops it: the paragraph is stored and the
reader's place moves to it. Pages follow a move with `Move.follow`; once a move ends, nothing
about its reader stays in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import AsyncIterator, Iterator

from longyarn.app.session.reader_errors import ReaderProblem, message_for_reader
from longyarn.app.session.reading import ReadingSession
from longyarn.app.session.step_words import phase_words
from longyarn.recurrent_core.types import ParagraphDelta, PhaseChanged, StepCompleted, StepEvent

# A stream with nothing new sends a comment this often, so proxies keep it open and a
# connection whose reader vanished is noticed.
HEARTBEAT_S = 15.0
# How often a reader waiting in line is told their place in it.
LINE_UPDATE_S = 1.0
# The longest a page view waits for paragraphs starting (see `StartingMoves`).
GIVE_WAY_AT_MOST_S = 1.0
# How long a paragraph still counts as starting once its request went to the model, while its
# first words are on their way: at once from a fast model; a slow one holds no page longer.
FIRST_WORDS_GRACE_S = 0.25
STOPPED = (
    "The server stopped before your paragraph was written; nothing was kept; please choose again."
)

log = logging.getLogger(__name__)

SseEvent = tuple[str, dict] | None  # (event name, data); None: a heartbeat


class StartingMoves:
    """Readers who just chose come first: while a paragraph is starting (from the reader's
    choice until its first words, or `first_words_grace_s` after its request went to the
    model), page views and the bookkeeping of paragraphs already shown wait, for at most
    `give_way_at_most_s`.

    One interpreter lock shares one core among all of this process's work, so a crowd opening
    pages at once would otherwise hold up the words that readers who chose are waiting for.
    """

    def __init__(self, give_way_at_most_s: float, first_words_grace_s: float = FIRST_WORDS_GRACE_S) -> None:
        self.give_way_at_most_s = give_way_at_most_s
        self.first_words_grace_s = first_words_grace_s
        self.count = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    def begin(self) -> None:
        self.count += 1
        self._quiet.clear()

    def end(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._quiet.set()

    @contextlib.contextmanager
    def claiming(self) -> Iterator[None]:
        """Count the block as a paragraph starting: a reader's choice being claimed."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    async def give_way(self) -> None:
        """Wait until no paragraph is starting, or `give_way_at_most_s` has passed."""
        if self.count:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self.give_way_at_most_s)


class Move:
    """One paragraph being written for one reader: where it is, and the text so far."""

    def __init__(self, reader_id: str, story_id: str, starting: StartingMoves | None = None) -> None:
        self.reader_id = reader_id
        self.story_id = story_id
        self._starting = starting  # counted there until its first words, except while queued
        self._counted = False
        self._grace: asyncio.TimerHandle | None = None
        self._count_as_starting(True)
        self.phase = "started"  # "queued" while it waits for a turn (see `StepLine`)
        self.ticket: int | None = None  # the place in line while queued
        self.text = ""
        self.text_revision = 0  # counts restarts of the text (a retried stream)
        self.step_id: str | None = None
        self.problem: str | None = None
        self.finished = False
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        # Wake every follower; each waits on the event current when it looked.
        self._changed.set()
        self._changed = asyncio.Event()

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self._count_as_starting(phase != "queued")  # waiting in line uses nothing
        self._notify()

    def _count_as_starting(self, starting: bool) -> None:
        """Count this move in `StartingMoves`, or stop counting it."""
        if self._starting is None or starting == self._counted:
            return
        if starting:
            self._starting.begin()
        else:
            self._starting.end()
        self._counted = starting

    def _started(self) -> None:
        """Its first words arrived, its grace ran out, or it ended: it no longer comes first."""
        self._count_as_starting(False)
        self._starting = None
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def apply(self, event: StepEvent) -> None:
        """Take in one event of the engine's step."""
        if isinstance(event, PhaseChanged):
            self.phase = event.phase
            if event.phase == "writing" and self._starting is not None and self._grace is None:
                grace_s = self._starting.first_words_grace_s
                self._grace = asyncio.get_running_loop().call_later(grace_s, self._started)
        elif isinstance(event, ParagraphDelta):
            self._started()
            if not event.snapshot.startswith(self.text):
                self.text_revision += 1  # the model started over: followers replace their text
            self.text = event.snapshot
        elif isinstance(event, StepCompleted):
            self.step_id = event.step.id
            self.text = event.step.paragraph  # the stored paragraph, cleaned
            self.text_revision += 1
        else:
            return
        self._notify()

    def end(self, problem: str | None = None) -> None:
        self._started()
        self.problem = problem
        self.finished = True
        self._notify()

    async def follow(self, line: "StepLine") -> AsyncIterator[SseEvent]:
        """What a page following this move is sent: its place in line, its phase, the text as
        it grows, and how it ended; None now and then as a heartbeat."""
        sent_phase: str | None = None
        sent_ahead: int | None = None
        sent_revision, sent_chars = 0, 0  # revision 0 starts empty: a late page gets it appended
        last_sent = time.monotonic()
        while True:
            changed = self._changed
            out: list[tuple[str, dict]] = []
            if self.step_id is None and self.text_revision != sent_revision:
                out.append(("text", {"replace": self.text}))
                sent_revision, sent_chars = self.text_revision, len(self.text)
            elif self.step_id is None and len(self.text) > sent_chars:
                out.append(("text", {"append": self.text[sent_chars:]}))
                sent_chars = len(self.text)
            if self.phase == "queued":
                ahead = line.ahead_of(self)
                if ahead != sent_ahead:
                    out.append(("queued", {"ahead": ahead, "words": waiting_words(ahead)}))
                    sent_ahead = ahead
            elif self.phase != sent_phase and not self.finished:
                out.append(("phase", {"phase": self.phase, "words": phase_words(self.phase, "reader")}))
                sent_phase = self.phase
            if self.finished:
                if self.step_id is not None:
                    out.append(("done", {"step": self.step_id, "text": self.text}))
                else:
                    out.append(("failed", {"message": self.problem or STOPPED}))
            for item in out:
                yield item
            if self.finished:
                return
            if out:
                last_sent = time.monotonic()
            wait_s = LINE_UPDATE_S if self.phase == "queued" else HEARTBEAT_S
            try:
                await asyncio.wait_for(changed.wait(), wait_s)
            except asyncio.TimeoutError:
                if time.monotonic() - last_sent >= HEARTBEAT_S:
                    last_sent = time.monotonic()
                    yield None


def waiting_words(ahead: int) -> str:
    """A reader's place in line, as they are told it."""
    if ahead <= 0:
        return "Your paragraph is next in line…"
    readers = "reader is" if ahead == 1 else "readers are"
    return f"Other readers' paragraphs are being written: {ahead:,} {readers} ahead of you…"


class StepLine:
    """At most `limit` paragraphs are written at once in this process; the rest wait their
    turn in the order they came."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._tickets = 0  # handed to waiters, in order
        self._left = 0  # waiters that have left the line (their turn came, or they gave up)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def ahead_of(self, move: Move) -> int:
        """How many readers wait before `move` (0 once it is writing)."""
        return 0 if move.ticket is None else max(0, move.ticket - self._left)

    @contextlib.asynccontextmanager
    async def turn(self, move: Move) -> AsyncIterator[None]:
        """Wait for a turn to write (the move's followers see their place meanwhile)."""
        if self.running < self.limit and not self._waiting:
            self.running += 1
        else:
            move.ticket, self._tickets = self._tickets, self._tickets + 1
            move.set_phase("queued")
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn  # the slot is handed over by whoever leaves (see `_release`)
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # handed a slot just as it was cancelled: pass it on
                else:
                    self._waiting.remove(turn)
                    self._left += 1
                raise
            finally:
                move.ticket = None
        move.set_phase("started")
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            self._left += 1
            if not turn.done():
                turn.set_result(None)  # the slot passes on; `running` stays as it is
                return
        self.running -= 1


class MoveBoard:
    """This process's moves in flight, by reader and story."""

    def __init__(self, line: StepLine, starting: StartingMoves | None = None) -> None:
        self.line = line
        self.starting = starting or StartingMoves(GIVE_WAY_AT_MOST_S)
        self._moves: dict[tuple[str, str], Move] = {}
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._moves)

    def get(self, reader_id: str, story_id: str) -> Move | None:
        return self._moves.get((reader_id, story_id))

    def start(self, session: ReadingSession, instruction: str | None) -> Move:
        """Write the paragraph `session.claim_move` claimed, in a task of this process."""
        move = Move(session.reader.id, session.story_id, self.starting)
        self._moves[(move.reader_id, move.story_id)] = move
        task = asyncio.create_task(self._run(move, session, instruction))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return move

    async def _run(self, move: Move, session: ReadingSession, instruction: str | None) -> None:
        problem: str | None = None
        try:
            async for event in session.write_claimed(instruction, turn=lambda: self.line.turn(move)):
                move.apply(event)
                if isinstance(event, PhaseChanged) and event.phase in ("remembering", "committing"):
                    await self.starting.give_way()  # the reader has the paragraph already
        except asyncio.CancelledError:
            problem = STOPPED
            raise
        except Exception as error:
            if not isinstance(error, ReaderProblem):
                log.warning("a reader's paragraph failed: %s", error, exc_info=error)
            problem = message_for_reader(error)
        finally:
            if self._moves.get((move.reader_id, move.story_id)) is move:
                del self._moves[(move.reader_id, move.story_id)]
            move.end(problem if move.step_id is None else None)

    async def finish(self, timeout_s: float) -> None:
        """Let the paragraphs being written finish (the server is stopping), then stop the rest."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

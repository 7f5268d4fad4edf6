"""`SqlReaders`: reader mode's `ReaderStore` (readers, their places, rate limits).

A reader's own paragraphs are ordinary steps with `branch_owner` = the reader's id; the engine
writes them through `SqlStories.commit_step`. Every method here that takes a step checks that
the reader may see it: the author's steps (branch_owner NULL) and the reader's own, never
another reader's.

Every method runs Core statements built once: a crowd of readers opening pages and moving at
once is this store's hot path, and one ORM session per call costs more than its statements.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.readers import (
    BOOKMARK,
    SLOT,
    PlaceKind,
    Reader,
    ReaderMove,
    ReaderOpening,
    ReaderPlace,
    ReaderPosition,
)
from longyarn.recurrent_core.types import Step, Story

from .models import (
    ReaderGenerationRow,
    ReaderMoveRow,
    ReaderPlaceRow,
    ReaderProgressRow,
    ReaderRow,
    StepRow,
    StoryRow,
)
from .records import new_row_id, step_record, story_record, utcnow
from .tree import BRANCH_STEPS, STORY_BY_ID, StoryTree, branch_parameters

_readers = ReaderRow.__table__
_stories = StoryRow.__table__
_steps = StepRow.__table__
_progress = ReaderProgressRow.__table__
_places = ReaderPlaceRow.__table__
_moves = ReaderMoveRow.__table__
_generations = ReaderGenerationRow.__table__

_READER = select(_readers).where(_readers.c.id == bindparam("reader"))
# Locks the reader's row on PostgreSQL (see `_lock_reader`); SQLite renders no FOR UPDATE.
_LOCK_READER = select(_readers.c.id).where(_readers.c.id == bindparam("reader")).with_for_update()
_STORY_EXISTS = select(_stories.c.id).where(_stories.c.id == bindparam("story"))
_STEP_OWNER = select(_steps.c.story_id, _steps.c.deleted, _steps.c.branch_owner).where(
    _steps.c.id == bindparam("step")
)
_OF_READER_IN_STORY = (
    (_progress.c.reader_id == bindparam("reader")) & (_progress.c.story_id == bindparam("story"))
)
_POSITION = select(_progress.c.step_id, _progress.c.updated_at).where(_OF_READER_IN_STORY)
_MOVE_OF = (_moves.c.reader_id == bindparam("reader")) & (_moves.c.story_id == bindparam("story"))
_MOVE = select(_moves).where(_MOVE_OF)


def _children_query(first: bool) -> Any:
    """A step's live children (`first`: the story's first paragraphs) that are the author's or
    the reader's own, oldest first."""
    parent = _steps.c.parent_id.is_(None) if first else _steps.c.parent_id == bindparam("parent")
    return (
        select(_steps)
        .where(
            _steps.c.story_id == bindparam("story"), parent, _steps.c.deleted.is_(False),
            or_(_steps.c.branch_owner.is_(None), _steps.c.branch_owner == bindparam("reader")),
        )
        .order_by(_steps.c.created_at, _steps.c.id)
    )


_CHILDREN = _children_query(first=False)
_FIRST_PARAGRAPHS = _children_query(first=True)
_START_OF_MAIN_LINE = BRANCH_STEPS.limit(1)


class SqlReaders(StoryTree):
    """The `longyarn.recurrent_core.readers.ReaderStore` of longyarn, backed by SQLAlchemy.

    `longyarn.storage.db.open_store(url_or_path)` builds one (as part of `SqlStore`).
    """

    def create_reader(self, *, reader_id: str, name: str, token_hash: str) -> Reader:
        """Store a new reader; `token_hash` is the hex SHA-256 of their token's secret."""
        if len(token_hash) != 64:
            raise InvalidInput(
                "A reader's token hash must be 64 hex characters, so no reader was created; "
                "pass the SHA-256 hex digest of the token's secret."
            )
        reader = Reader(id=reader_id, name=name, created_at=utcnow())
        try:
            with self._write_rows() as connection:
                connection.execute(
                    insert(_readers).values(
                        id=reader_id, name=name, token_hash=token_hash, created_at=reader.created_at
                    )
                )
            return reader
        except IntegrityError:
            raise InvalidInput(
                f"A reader with id {reader_id!r} already exists, so no reader was created; "
                "start again with a new reader link."
            ) from None

    def reader_exists(self, reader_id: str) -> bool:
        """Whether a reader has this id (taken ids cannot be registered again)."""
        with self._read_rows() as connection:
            return connection.execute(_READER, {"reader": reader_id}).first() is not None

    def reader_with_token(self, reader_id: str, token_hash: str) -> Reader | None:
        """The reader if `token_hash` is theirs, else None; the hashes are compared in constant time."""
        with self._read_rows() as connection:
            row = connection.execute(_READER, {"reader": reader_id}).first()
        stored = row.token_hash if row is not None else "0" * 64
        # Compare even for an unknown id, so the answer takes as long either way.
        matches = hmac.compare_digest(stored.encode(), token_hash.encode())
        return _reader_record(row) if row is not None and matches else None

    def readable_stories(self) -> list[Story]:
        """Stories their authors marked readable, most recently edited first."""
        with self._read_rows() as connection:
            rows = connection.execute(
                select(_stories)
                .where(_stories.c.readable.is_(True))
                .order_by(_stories.c.updated_at.desc(), _stories.c.id)
            )
            return [story_record(row) for row in rows]

    def reader_children(self, story_id: str, parent_id: str | None, reader_id: str) -> list[Step]:
        """What follows a step for one reader: the author's children and the reader's own.

        Oldest first; deleted paragraphs and other readers' steps are left out.
        """
        with self._read_rows() as connection:
            self._check_story(connection, story_id)
            return self._reader_children(connection, story_id, parent_id, reader_id)

    def reader_opening(self, reader_id: str, story_id: str) -> ReaderOpening:
        """The story, where the reader last was in it and the path there, in one snapshot;
        where a first visit starts, if they never opened it. `StoryNotFound` if no such story."""
        with self._read_rows() as connection:
            story_row = connection.execute(STORY_BY_ID, {"id": story_id}).first()
            if story_row is None:
                raise self._story_not_found(story_id)
            saved = connection.execute(_POSITION, {"reader": reader_id, "story": story_id}).first()
            if saved is not None:
                path = []
                if saved.step_id is not None:
                    rows = connection.execute(BRANCH_STEPS, branch_parameters(story_id, saved.step_id))
                    path = [step_record(row) for row in rows]
                position = ReaderPosition(saved.step_id, saved.updated_at)
                return ReaderOpening(story_record(story_row), position, path)
            start = None
            if story_row.head_step_id is not None:
                start = connection.execute(
                    _START_OF_MAIN_LINE, branch_parameters(story_id, story_row.head_step_id)
                ).first()
            if start is None:
                start = connection.execute(
                    _FIRST_PARAGRAPHS, {"story": story_id, "reader": reader_id}
                ).first()
            return ReaderOpening(
                story_record(story_row), None, [], step_record(start) if start is not None else None
            )

    def reader_position(self, reader_id: str, story_id: str) -> ReaderPosition | None:
        """Where the reader last was in the story; None if they never opened it."""
        with self._read_rows() as connection:
            row = connection.execute(_POSITION, {"reader": reader_id, "story": story_id}).first()
        return ReaderPosition(row.step_id, row.updated_at) if row is not None else None

    def set_reader_position(self, reader_id: str, story_id: str, step_id: str | None) -> None:
        """Remember where the reader is, so that reopening the story resumes there."""
        now = utcnow()
        with self._write_rows() as connection:
            self._lock_reader(connection, reader_id)  # else two first visits insert one row twice
            self._reader_visible_step(connection, reader_id, story_id, step_id)
            moved = connection.execute(
                update(_progress).where(_OF_READER_IN_STORY).values(step_id=step_id, updated_at=now),
                {"reader": reader_id, "story": story_id},
            )
            if moved.rowcount == 0:
                connection.execute(
                    insert(_progress).values(
                        reader_id=reader_id, story_id=story_id, step_id=step_id, updated_at=now
                    )
                )

    def save_reader_slot(self, reader_id: str, story_id: str, name: str, step_id: str) -> ReaderPlace:
        """Save the reader's place under `name`, replacing a slot of that name."""
        with self._write_rows() as connection:
            self._lock_reader(connection, reader_id)  # else two saves could both keep their slot
            self._reader_visible_step(connection, reader_id, story_id, step_id)
            connection.execute(
                delete(_places).where(*_places_of(reader_id, story_id, SLOT), _places.c.name == name)
            )
            return self._add_place(connection, reader_id, story_id, step_id, SLOT, name)

    def add_reader_bookmark(
        self, reader_id: str, story_id: str, step_id: str, note: str = ""
    ) -> ReaderPlace:
        """Bookmark a paragraph the reader can see."""
        with self._write_rows() as connection:
            self._reader_visible_step(connection, reader_id, story_id, step_id)
            return self._add_place(connection, reader_id, story_id, step_id, BOOKMARK, note)

    def reader_places(self, reader_id: str, story_id: str, kind: PlaceKind) -> list[ReaderPlace]:
        """The reader's save slots (`kind="slot"`, by name) or bookmarks (`"bookmark"`, oldest first)."""
        order = (_places.c.name,) if kind == SLOT else (_places.c.created_at, _places.c.id)
        with self._read_rows() as connection:
            rows = connection.execute(
                select(_places).where(*_places_of(reader_id, story_id, kind)).order_by(*order)
            )
            return [_place_record(row) for row in rows]

    def delete_reader_place(self, reader_id: str, place_id: str) -> None:
        """Forget one of the reader's save slots or bookmarks (another reader's is untouched)."""
        with self._write_rows() as connection:
            connection.execute(
                delete(_places).where(_places.c.id == place_id, _places.c.reader_id == reader_id)
            )

    def begin_reader_move(
        self, reader_id: str, story_id: str, parent_step_id: str | None, instruction: str,
        *, lease_s: float, now: datetime | None = None,
    ) -> ReaderMove | None:
        """Claim the reader's one move in the story until `lease_s` from now.

        Returns the move, or None while another live move holds the claim (in this process or
        any other). A move whose lease ran out was left by a process that stopped: it is
        replaced. Raises `StoryNotFound` unless `parent_step_id` is a paragraph the reader may see.
        """
        now = now or utcnow()
        move = ReaderMove(
            reader_id=reader_id, story_id=story_id, parent_step_id=parent_step_id,
            instruction=instruction, started_at=now, lease_until=now + timedelta(seconds=lease_s),
        )
        with self._write_rows() as connection:
            self._lock_reader(connection, reader_id)  # two processes claiming at once: one wins
            self._reader_visible_step(connection, reader_id, story_id, parent_step_id)
            held = connection.execute(_MOVE, {"reader": reader_id, "story": story_id}).first()
            if held is not None and held.lease_until > now:
                return None
            values = {
                "parent_step_id": parent_step_id, "instruction": instruction,
                "started_at": move.started_at, "lease_until": move.lease_until,
            }
            if held is None:
                connection.execute(insert(_moves).values(reader_id=reader_id, story_id=story_id, **values))
            else:
                connection.execute(
                    update(_moves).where(_MOVE_OF).values(**values), {"reader": reader_id, "story": story_id}
                )
            return move

    def renew_reader_move(
        self, reader_id: str, story_id: str, *, lease_s: float, now: datetime | None = None
    ) -> None:
        """Keep the reader's move live until `lease_s` from now (nothing if it has ended)."""
        now = now or utcnow()
        with self._write_rows() as connection:
            connection.execute(
                update(_moves).where(_MOVE_OF).values(lease_until=now + timedelta(seconds=lease_s)),
                {"reader": reader_id, "story": story_id},
            )

    def end_reader_move(self, reader_id: str, story_id: str) -> None:
        """Forget the reader's move in the story: written, failed or stopped, it is over."""
        with self._write_rows() as connection:
            connection.execute(delete(_moves).where(_MOVE_OF), {"reader": reader_id, "story": story_id})

    def reader_move(
        self, reader_id: str, story_id: str, *, now: datetime | None = None
    ) -> ReaderMove | None:
        """The reader's live move in the story (None if none, or if its lease ran out)."""
        now = now or utcnow()
        with self._read_rows() as connection:
            row = connection.execute(_MOVE, {"reader": reader_id, "story": story_id}).first()
        return _move_record(row) if row is not None and row.lease_until > now else None

    def reserve_reader_generation(
        self, reader_id: str, *, limit: int, window_s: float = 60.0, now: datetime | None = None
    ) -> float | None:
        """Count one generation for the reader if fewer than `limit` began in the last `window_s`.

        Returns None when it was counted (go ahead), else the seconds until the oldest counted
        one leaves the window. The check and the insert share one write transaction that holds
        the reader's lock, so concurrent processes on one database cannot overrun the limit.
        """
        now = now or utcnow()
        window_start = now - timedelta(seconds=window_s)
        with self._write_rows() as connection:
            self._lock_reader(connection, reader_id)
            connection.execute(
                delete(_generations).where(
                    _generations.c.reader_id == reader_id, _generations.c.started_at <= window_start
                )
            )
            recent = list(
                connection.scalars(
                    select(_generations.c.started_at)
                    .where(_generations.c.reader_id == reader_id)
                    .order_by(_generations.c.started_at)
                )
            )
            if len(recent) >= limit:
                oldest = recent[len(recent) - limit]
                return max(0.0, (oldest - window_start).total_seconds())
            connection.execute(insert(_generations).values(reader_id=reader_id, started_at=now))
            return None

    def _add_place(
        self,
        connection: Connection,
        reader_id: str,
        story_id: str,
        step_id: str,
        kind: PlaceKind,
        name: str,
    ) -> ReaderPlace:
        place = ReaderPlace(
            id=new_row_id(), story_id=story_id, step_id=step_id, kind=kind, name=name,
            created_at=utcnow(),
        )
        connection.execute(
            insert(_places).values(
                id=place.id, reader_id=reader_id, story_id=story_id, step_id=step_id, kind=kind,
                name=name, created_at=place.created_at,
            )
        )
        return place

    def _lock_reader(self, connection: Connection, reader_id: str) -> None:
        """Make this reader's read-then-write transactions queue, one after another.

        SQLite writers already queue for the file (BEGIN IMMEDIATE); PostgreSQL's READ COMMITTED
        lets two run at once, so they queue for the reader's row (FOR UPDATE; SQLite has none).
        """
        connection.execute(_LOCK_READER, {"reader": reader_id})

    def _check_story(self, connection: Connection, story_id: str) -> None:
        if connection.execute(_STORY_EXISTS, {"story": story_id}).first() is None:
            raise self._story_not_found(story_id)

    def _reader_children(
        self, connection: Connection, story_id: str, parent_id: str | None, reader_id: str
    ) -> list[Step]:
        if parent_id is None:
            rows = connection.execute(_FIRST_PARAGRAPHS, {"story": story_id, "reader": reader_id})
        else:
            rows = connection.execute(_CHILDREN, {"story": story_id, "parent": parent_id, "reader": reader_id})
        return [step_record(row) for row in rows]

    def _reader_visible_step(
        self, connection: Connection, reader_id: str, story_id: str, step_id: str | None
    ) -> None:
        """Raise `StoryNotFound` unless the step is in the story and the reader may see it.

        Another reader's step gets the same answer as a missing one: its existence is not
        the reader's business.
        """
        self._check_story(connection, story_id)
        if step_id is None:
            return
        row = connection.execute(_STEP_OWNER, {"step": step_id}).first()
        if (
            row is None
            or row.story_id != story_id
            or row.deleted
            or row.branch_owner not in (None, reader_id)
        ):
            raise self._step_not_found(step_id, story_id=story_id)


def _places_of(reader_id: str, story_id: str, kind: PlaceKind) -> tuple[ColumnElement[bool], ...]:
    """The conditions that pick one reader's places of one kind in one story."""
    return (_places.c.reader_id == reader_id, _places.c.story_id == story_id, _places.c.kind == kind)


def _reader_record(row: Any) -> Reader:
    """The `Reader` of a reader row (never its token hash)."""
    return Reader(id=row.id, name=row.name, created_at=row.created_at)


def _move_record(row: Any) -> ReaderMove:
    """The `ReaderMove` of a reader move's row."""
    return ReaderMove(
        reader_id=row.reader_id, story_id=row.story_id, parent_step_id=row.parent_step_id,
        instruction=row.instruction, started_at=row.started_at, lease_until=row.lease_until,
    )


def _place_record(row: Any) -> ReaderPlace:
    """The `ReaderPlace` of a save slot's or a bookmark's row."""
    return ReaderPlace(
        id=row.id, story_id=row.story_id, step_id=row.step_id, kind=row.kind, name=row.name,
        created_at=row.created_at,
    )

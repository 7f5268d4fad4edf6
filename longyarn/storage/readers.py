"""`SqlReaders`: reader mode's `ReaderStore` (readers, their places, rate limits).

A reader's own paragraphs are ordinary steps with `branch_owner` = the reader's id; the engine
writes them through `SqlStories.commit_step`. Every method here that takes a step checks that
the reader may see it: the author's steps (branch_owner NULL) and the reader's own, never
another reader's.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.readers import (
    BOOKMARK,
    SLOT,
    PlaceKind,
    Reader,
    ReaderMove,
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
from .records import new_row_id, story_record, utcnow
from .tree import StoryTree


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
        row = ReaderRow(id=reader_id, name=name, token_hash=token_hash, created_at=utcnow())
        try:
            with self._write() as session:
                session.add(row)
                session.flush()
                return _reader_record(row)
        except IntegrityError:
            raise InvalidInput(
                f"A reader with id {reader_id!r} already exists, so no reader was created; "
                "start again with a new reader link."
            ) from None

    def reader_exists(self, reader_id: str) -> bool:
        """Whether a reader has this id (taken ids cannot be registered again)."""
        with self._read() as session:
            return session.get(ReaderRow, reader_id) is not None

    def reader_with_token(self, reader_id: str, token_hash: str) -> Reader | None:
        """The reader if `token_hash` is theirs, else None; the hashes are compared in constant time."""
        with self._read() as session:
            row = session.get(ReaderRow, reader_id)
            stored = row.token_hash if row is not None else "0" * 64
        # Compare even for an unknown id, so the answer takes as long either way.
        matches = hmac.compare_digest(stored.encode(), token_hash.encode())
        return _reader_record(row) if row is not None and matches else None

    def readable_stories(self) -> list[Story]:
        """Stories their authors marked readable, most recently edited first."""
        with self._read() as session:
            rows = session.scalars(
                select(StoryRow)
                .where(StoryRow.readable.is_(True))
                .order_by(StoryRow.updated_at.desc(), StoryRow.id)
            )
            return [story_record(row) for row in rows]

    def reader_children(self, story_id: str, parent_id: str | None, reader_id: str) -> list[Step]:
        """What follows a step for one reader: the author's children and the reader's own.

        Oldest first; deleted paragraphs and other readers' steps are left out.
        """
        with self._read() as session:
            return self._children(
                session,
                story_id,
                parent_id,
                or_(StepRow.branch_owner.is_(None), StepRow.branch_owner == reader_id),
            )

    def reader_position(self, reader_id: str, story_id: str) -> ReaderPosition | None:
        """Where the reader last was in the story; None if they never opened it."""
        with self._read() as session:
            row = session.get(ReaderProgressRow, (reader_id, story_id))
            return ReaderPosition(row.step_id, row.updated_at) if row is not None else None

    def set_reader_position(self, reader_id: str, story_id: str, step_id: str | None) -> None:
        """Remember where the reader is, so that reopening the story resumes there."""
        with self._write() as session:
            self._lock_reader(session, reader_id)  # else two first visits insert one row twice
            self._reader_visible_step(session, reader_id, story_id, step_id)
            row = session.get(ReaderProgressRow, (reader_id, story_id))
            if row is None:
                session.add(
                    ReaderProgressRow(
                        reader_id=reader_id, story_id=story_id, step_id=step_id,
                        updated_at=utcnow(),
                    )
                )
            else:
                row.step_id = step_id
                row.updated_at = utcnow()

    def save_reader_slot(self, reader_id: str, story_id: str, name: str, step_id: str) -> ReaderPlace:
        """Save the reader's place under `name`, replacing a slot of that name."""
        with self._write() as session:
            self._lock_reader(session, reader_id)  # else two saves could both keep their slot
            self._reader_visible_step(session, reader_id, story_id, step_id)
            session.execute(
                delete(ReaderPlaceRow).where(
                    *_places_of(reader_id, story_id, SLOT), ReaderPlaceRow.name == name
                )
            )
            return self._add_place(session, reader_id, story_id, step_id, SLOT, name)

    def add_reader_bookmark(
        self, reader_id: str, story_id: str, step_id: str, note: str = ""
    ) -> ReaderPlace:
        """Bookmark a paragraph the reader can see."""
        with self._write() as session:
            self._reader_visible_step(session, reader_id, story_id, step_id)
            return self._add_place(session, reader_id, story_id, step_id, BOOKMARK, note)

    def reader_places(self, reader_id: str, story_id: str, kind: PlaceKind) -> list[ReaderPlace]:
        """The reader's save slots (`kind="slot"`, by name) or bookmarks (`"bookmark"`, oldest first)."""
        order = (ReaderPlaceRow.name,) if kind == SLOT else (ReaderPlaceRow.created_at, ReaderPlaceRow.id)
        with self._read() as session:
            rows = session.scalars(
                select(ReaderPlaceRow)
                .where(*_places_of(reader_id, story_id, kind))
                .order_by(*order)
            )
            return [_place_record(row) for row in rows]

    def delete_reader_place(self, reader_id: str, place_id: str) -> None:
        """Forget one of the reader's save slots or bookmarks (another reader's is untouched)."""
        with self._write() as session:
            session.execute(
                delete(ReaderPlaceRow).where(
                    ReaderPlaceRow.id == place_id, ReaderPlaceRow.reader_id == reader_id
                )
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
        with self._write() as session:
            self._lock_reader(session, reader_id)  # two processes claiming at once: one wins
            self._reader_visible_step(session, reader_id, story_id, parent_step_id)
            row = session.get(ReaderMoveRow, (reader_id, story_id))
            if row is not None and row.lease_until > now:
                return None
            if row is None:
                row = ReaderMoveRow(reader_id=reader_id, story_id=story_id)
                session.add(row)
            row.parent_step_id = parent_step_id
            row.instruction = instruction
            row.started_at = now
            row.lease_until = now + timedelta(seconds=lease_s)
            session.flush()
            return _move_record(row)

    def renew_reader_move(
        self, reader_id: str, story_id: str, *, lease_s: float, now: datetime | None = None
    ) -> None:
        """Keep the reader's move live until `lease_s` from now (nothing if it has ended)."""
        now = now or utcnow()
        with self._write() as session:
            row = session.get(ReaderMoveRow, (reader_id, story_id))
            if row is not None:
                row.lease_until = now + timedelta(seconds=lease_s)

    def end_reader_move(self, reader_id: str, story_id: str) -> None:
        """Forget the reader's move in the story: written, failed or stopped, it is over."""
        with self._write() as session:
            session.execute(
                delete(ReaderMoveRow).where(
                    ReaderMoveRow.reader_id == reader_id, ReaderMoveRow.story_id == story_id
                )
            )

    def reader_move(
        self, reader_id: str, story_id: str, *, now: datetime | None = None
    ) -> ReaderMove | None:
        """The reader's live move in the story (None if none, or if its lease ran out)."""
        now = now or utcnow()
        with self._read() as session:
            row = session.get(ReaderMoveRow, (reader_id, story_id))
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
        with self._write() as session:
            self._lock_reader(session, reader_id)
            session.execute(
                delete(ReaderGenerationRow).where(
                    ReaderGenerationRow.reader_id == reader_id,
                    ReaderGenerationRow.started_at <= window_start,
                )
            )
            recent = list(
                session.scalars(
                    select(ReaderGenerationRow.started_at)
                    .where(ReaderGenerationRow.reader_id == reader_id)
                    .order_by(ReaderGenerationRow.started_at)
                )
            )
            if len(recent) >= limit:
                oldest = recent[len(recent) - limit]
                return max(0.0, (oldest - window_start).total_seconds())
            session.add(ReaderGenerationRow(reader_id=reader_id, started_at=now))
            return None

    def _add_place(
        self,
        session: Session,
        reader_id: str,
        story_id: str,
        step_id: str,
        kind: PlaceKind,
        name: str,
    ) -> ReaderPlace:
        row = ReaderPlaceRow(
            id=new_row_id(), reader_id=reader_id, story_id=story_id, step_id=step_id,
            kind=kind, name=name, created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return _place_record(row)

    def _lock_reader(self, session: Session, reader_id: str) -> None:
        """Make this reader's read-then-write transactions queue, one after another.

        SQLite writers already queue for the file (BEGIN IMMEDIATE); PostgreSQL's READ COMMITTED
        lets two run at once, so they queue for the reader's row (FOR UPDATE; SQLite has none).
        """
        session.execute(select(ReaderRow.id).where(ReaderRow.id == reader_id).with_for_update())

    def _reader_visible_step(
        self, session: Session, reader_id: str, story_id: str, step_id: str | None
    ) -> None:
        """Raise `StoryNotFound` unless the step is in the story and the reader may see it.

        Another reader's step gets the same answer as a missing one: its existence is not
        the reader's business.
        """
        self._story_row(session, story_id)
        if step_id is None:
            return
        row = session.get(StepRow, step_id)
        if (
            row is None
            or row.story_id != story_id
            or row.deleted
            or row.branch_owner not in (None, reader_id)
        ):
            raise self._step_not_found(step_id, story_id=story_id)


def _places_of(reader_id: str, story_id: str, kind: PlaceKind) -> tuple[ColumnElement[bool], ...]:
    """The conditions that pick one reader's places of one kind in one story."""
    return (
        ReaderPlaceRow.reader_id == reader_id,
        ReaderPlaceRow.story_id == story_id,
        ReaderPlaceRow.kind == kind,
    )


def _reader_record(row: ReaderRow) -> Reader:
    """The `Reader` of a reader row (never its token hash)."""
    return Reader(id=row.id, name=row.name, created_at=row.created_at)


def _move_record(row: ReaderMoveRow) -> ReaderMove:
    """The `ReaderMove` of a reader move's row."""
    return ReaderMove(
        reader_id=row.reader_id, story_id=row.story_id, parent_step_id=row.parent_step_id,
        instruction=row.instruction, started_at=row.started_at, lease_until=row.lease_until,
    )


def _place_record(row: ReaderPlaceRow) -> ReaderPlace:
    """The `ReaderPlace` of a save slot's or a bookmark's row."""
    return ReaderPlace(
        id=row.id, story_id=row.story_id, step_id=row.step_id, kind=row.kind, name=row.name,
        created_at=row.created_at,
    )

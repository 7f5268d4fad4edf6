"""`SqlStore`: the engine's `StoryStore`, on any database SQLAlchemy speaks.

Every method opens its own short transaction and returns frozen dataclasses from
`longyarn.recurrent_core.types`, never ORM rows, so one store can serve many threads (and several
processes can share one SQLite file). Every change happens in one transaction, or not at all.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from longyarn.recurrent_core.errors import InvalidInput, StoryNotFound
from longyarn.recurrent_core.types import (
    MemoryEntry,
    NewStep,
    RecalledMemory,
    SectionRecord,
    Step,
    StepContext,
    Story,
)

from .db import BEGIN_IMMEDIATE, SQLITE_BEGIN_MODE, describe_location
from .models import (
    MemoryRow,
    ReaderGenerationRow,
    ReaderPlaceRow,
    ReaderProgressRow,
    ReaderRow,
    StepContextRow,
    StepRow,
    StoryRow,
)

# What `update_story` may change; the rest (head, memory_version, times) the store manages.
EDITABLE_STORY_FIELDS = frozenset(
    {"title", "premise", "genre", "outline", "settings", "readable", "reader_may_extend"}
)
STORY_ID_BYTES = 6  # 12 hex characters: short enough to type, 2**48 ids
EMBEDDING_DTYPE = np.dtype("<f4")  # stored little-endian whatever the machine


def new_story_id() -> str:
    """A short random id that people can type, e.g. '3f9c0a1b7e42'."""
    return secrets.token_hex(STORY_ID_BYTES)


def _new_row_id() -> str:
    return uuid.uuid4().hex


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SqlStore:
    """The `longyarn.recurrent_core.store.StoryStore` of longyarn, backed by SQLAlchemy.

    Build one with `longyarn.storage.db.open_store(url_or_path)`, which also migrates the schema.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._location = describe_location(engine.url)
        self._reading = sessionmaker(engine, expire_on_commit=False)
        # Writers take SQLite's write lock when they begin (see longyarn.storage.db).
        writer = engine.execution_options(**{SQLITE_BEGIN_MODE: BEGIN_IMMEDIATE})
        self._writing = sessionmaker(writer, expire_on_commit=False)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy Engine underneath, for tools and tests; code should use the methods."""
        return self._engine

    @property
    def location(self) -> str:
        """Where the data lives, as shown in messages (a file path, or a URL without password)."""
        return self._location

    def close(self) -> None:
        """Close every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        """'ok' when the database file is sound; SQLite's list of problems otherwise.

        Other databases guard their own files, so they always answer 'ok'.
        """
        if self._engine.dialect.name != "sqlite":
            return "ok"
        with self._engine.connect() as connection:
            problems = connection.exec_driver_sql("PRAGMA integrity_check").scalars().all()
        return "\n".join(problems)

    # ---- transactions ----

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._reading.begin() as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._writing.begin() as session:
            yield session

    # ---- stories ----

    def create_story(
        self,
        *,
        title: str,
        premise: str,
        genre: str,
        outline: str,
        settings: dict | None = None,
        readable: bool = False,
        reader_may_extend: bool = False,
    ) -> Story:
        """Store a new story with no paragraphs yet; its id is short enough to type."""
        now = _utcnow()
        for _attempt in range(5):  # a clash among 2**48 ids is rare, but cheap to survive
            row = StoryRow(
                id=new_story_id(),
                title=title,
                premise=premise,
                genre=genre,
                outline=outline,
                settings=dict(settings or {}),
                head_step_id=None,
                readable=readable,
                reader_may_extend=reader_may_extend,
                memory_version=0,
                created_at=now,
                updated_at=now,
            )
            try:
                with self._write() as session:
                    session.add(row)
                    session.flush()
                    return _story(row)
            except IntegrityError:
                with self._read() as session:
                    if session.get(StoryRow, row.id) is None:
                        raise  # not an id clash: a real fault
        raise RuntimeError("could not find an unused story id in 5 tries")

    def get_story(self, story_id: str) -> Story:
        with self._read() as session:
            return _story(self._story_row(session, story_id))

    def list_stories(self) -> list[Story]:
        """Most recently edited first."""
        with self._read() as session:
            rows = session.scalars(
                select(StoryRow).order_by(StoryRow.updated_at.desc(), StoryRow.id)
            )
            return [_story(row) for row in rows]

    def update_story(self, story_id: str, **fields: object) -> Story:
        """Change title, premise, genre, outline, settings, readable or reader_may_extend."""
        unknown = sorted(set(fields) - EDITABLE_STORY_FIELDS)
        if unknown:
            raise InvalidInput(
                f"A story has no editable field {unknown[0]!r}, so nothing was changed; "
                f"change one of {', '.join(sorted(EDITABLE_STORY_FIELDS))}."
            )
        if "settings" in fields and not isinstance(fields["settings"], dict):
            raise InvalidInput(
                "A story's settings must be a dictionary, so nothing was changed; "
                "pass settings as a dict of names to values."
            )
        with self._write() as session:
            row = self._story_row(session, story_id)
            for name, value in fields.items():
                setattr(row, name, dict(value) if isinstance(value, dict) else value)
            row.updated_at = _utcnow()
            session.flush()
            return _story(row)

    def delete_story(self, story_id: str) -> None:
        """Delete a story with all its steps and memories."""
        with self._write() as session:
            row = self._story_row(session, story_id)
            # Steps and memories go with it through ON DELETE CASCADE, in the same statement.
            session.delete(row)

    # ---- steps ----

    def get_step(self, step_id: str) -> Step:
        with self._read() as session:
            return _step(self._step_row(session, step_id))

    def branch(self, story_id: str, head_step_id: str | None = None) -> list[Step]:
        """Steps from the root to `head_step_id` (default: the story's head), oldest first.

        Deleted paragraphs are left out. One recursive query, however long the story.
        """
        with self._read() as session:
            head = self._resolve_head(session, story_id, head_step_id)
            if head is None:
                return []
            walk = _walk_to_root(story_id, head)
            steps = StepRow.__table__
            rows = session.connection().execute(  # Core rows: no ORM bookkeeping per step
                select(steps)
                .join(walk, steps.c.id == walk.c.id)
                .where(steps.c.deleted.is_(False))
                .order_by(walk.c.depth.desc())
            ).all()
            return [_step(row) for row in rows]

    def branch_step_ids(self, story_id: str, head_step_id: str | None = None) -> list[str]:
        """The ids of `branch()`'s steps, without loading their text: what recall needs."""
        with self._read() as session:
            head = self._resolve_head(session, story_id, head_step_id)
            if head is None:
                return []
            walk = _walk_to_root(story_id, head)
            return list(
                session.scalars(
                    select(walk.c.id)
                    .join(StepRow, StepRow.id == walk.c.id)
                    .where(StepRow.deleted.is_(False))
                    .order_by(walk.c.depth.desc())
                )
            )

    def count_steps(self, story_id: str, head_step_id: str | None = None) -> int:
        """How many paragraphs the branch ending at the head holds (deleted ones not counted)."""
        with self._read() as session:
            head = self._resolve_head(session, story_id, head_step_id)
            if head is None:
                return 0
            walk = _walk_to_root(story_id, head)
            return session.scalar(
                select(func.count())
                .select_from(walk)
                .join(StepRow, StepRow.id == walk.c.id)
                .where(StepRow.deleted.is_(False))
            ) or 0

    def children(self, story_id: str, parent_id: str | None) -> list[Step]:
        """The author's direct children of a step (roots when `parent_id` is None), oldest first.

        Readers' branches are left out (the reader sees them through `reader_children`), and so
        are deleted paragraphs, as everywhere a reader or writer looks.
        """
        with self._read() as session:
            if parent_id is not None:
                self._step_row(session, parent_id, story_id=story_id)
            return self._children(session, story_id, parent_id, StepRow.branch_owner.is_(None))

    def _children(self, session: Session, story_id: str, parent_id: str | None, owned_by) -> list[Step]:
        """A step's children (roots for None) that `owned_by` admits, oldest first, none deleted."""
        self._story_row(session, story_id)
        parent_matches = StepRow.parent_id.is_(None) if parent_id is None else StepRow.parent_id == parent_id
        rows = session.scalars(
            select(StepRow)
            .where(StepRow.story_id == story_id, parent_matches, StepRow.deleted.is_(False), owned_by)
            .order_by(StepRow.created_at, StepRow.id)
        )
        return [_step(row) for row in rows]

    def set_head(self, story_id: str, step_id: str | None) -> Story:
        """Move where writing continues: undo, redo and switching branches are all this."""
        with self._write() as session:
            row = self._story_row(session, story_id)
            if step_id is not None:
                self._step_row(session, step_id, story_id=story_id)
            row.head_step_id = step_id
            row.updated_at = _utcnow()
            session.flush()
            return _story(row)

    def commit_step(
        self,
        new_step: NewStep,
        *,
        embedding: np.ndarray,
        embedding_model: str,
        move_head: bool = True,
    ) -> Step:
        """Insert the step, its long-term memory and its context (if `new_step.context`), and
        move the head, in one transaction.

        If anything fails, nothing is written: not the step, its memory, its context, or the head.
        """
        embedding_bytes, dim = _embedding_bytes(embedding)
        next_instructions = _instructions(new_step.next_instructions)
        now = _utcnow()
        step_row = StepRow(
            id=_new_row_id(),
            story_id=new_step.story_id,
            parent_id=new_step.parent_id,
            instruction=new_step.instruction,
            paragraph=new_step.paragraph,
            short_term_memory=new_step.short_term_memory,
            memory_reason=new_step.memory_reason,
            next_instructions=next_instructions,
            backend=new_step.backend,
            model=new_step.model,
            fallbacks=[str(fallback) for fallback in new_step.fallbacks],
            created_at=now,
            deleted=False,
            branch_owner=new_step.branch_owner,
        )
        try:
            with self._write() as session:
                # A reader's paragraph is not an author's edit: the library order stays.
                self._bump_memory_version(
                    session, new_step.story_id, edited=new_step.branch_owner is None
                )
                self._check_embedding_dim(session, new_step.story_id, embedding_model, dim)
                # The parent's existence (in this story) is checked by a foreign key here.
                session.add(step_row)
                session.flush()
                session.add(
                    MemoryRow(
                        id=_new_row_id(),
                        story_id=new_step.story_id,
                        step_id=step_row.id,
                        text=new_step.paragraph,
                        embedding=embedding_bytes,
                        dim=dim,
                        embedding_model=embedding_model,
                        pinned=False,
                        excluded=False,
                        created_at=now,
                    )
                )
                if new_step.context is not None:
                    session.add(_context_row(new_step.context, new_step.story_id, step_row.id))
                session.flush()
                if move_head:  # last: the head must point at a step that already exists
                    session.execute(
                        update(StoryRow)
                        .where(StoryRow.id == new_step.story_id)
                        .values(head_step_id=step_row.id)
                    )
                return _step(step_row)
        except IntegrityError as error:
            if new_step.parent_id is not None and not self._step_in_story(
                new_step.parent_id, new_step.story_id
            ):
                raise self._step_not_found(
                    new_step.parent_id,
                    story_id=new_step.story_id,
                    kept="so the new paragraph was not saved",
                ) from error
            raise

    def edit_paragraph(
        self, step_id: str, paragraph: str, *, embedding: np.ndarray, embedding_model: str
    ) -> Step:
        """Replace a paragraph and its memory's text and embedding together."""
        embedding_bytes, dim = _embedding_bytes(embedding)
        with self._write() as session:
            step_row = self._step_row(session, step_id)
            self._bump_memory_version(session, step_row.story_id)
            memory_row = session.scalar(select(MemoryRow).where(MemoryRow.step_id == step_id))
            self._check_embedding_dim(
                session,
                step_row.story_id,
                embedding_model,
                dim,
                other_than=memory_row.id if memory_row else None,
            )
            step_row.paragraph = paragraph
            if memory_row is None:  # e.g. a step stored by a tool that wrote no memory
                memory_row = MemoryRow(
                    id=_new_row_id(),
                    story_id=step_row.story_id,
                    step_id=step_id,
                    pinned=False,
                    excluded=False,
                    created_at=step_row.created_at,  # memories sort in story order
                )
                session.add(memory_row)
            memory_row.text = paragraph
            memory_row.embedding = embedding_bytes
            memory_row.dim = dim
            memory_row.embedding_model = embedding_model
            session.flush()
            return _step(step_row)

    def delete_paragraph(self, step_id: str) -> None:
        """Hide a paragraph from the story and remove its memory from recall; the tree is kept."""
        with self._write() as session:
            step_row = self._step_row(session, step_id)
            self._bump_memory_version(session, step_row.story_id)  # first: see _bump_memory_version
            step_row.deleted = True

    def update_short_term_memory(self, step_id: str, short_term_memory: str) -> Step:
        """A person's edit of the short-term memory; the next step reads it."""
        with self._write() as session:
            step_row = self._step_row(session, step_id)
            session.execute(  # the story's row first: see _bump_memory_version
                update(StoryRow)
                .where(StoryRow.id == step_row.story_id)
                .values(updated_at=_utcnow())
            )
            step_row.short_term_memory = short_term_memory
            session.flush()
            return _step(step_row)

    def step_context(self, step_id: str) -> StepContext | None:
        """What the step's writer was given, as committed with it; None if it was not recorded.

        Each recalled memory carries its text as stored now, in one query with the record.
        """
        with self._read() as session:
            self._step_row(session, step_id)
            row = session.get(StepContextRow, step_id)
            if row is None:
                return None
            ids = [item["memory_id"] for item in row.recalled]
            memories = {
                memory.id: memory
                for memory in session.scalars(select(MemoryRow).where(MemoryRow.id.in_(ids)))
            } if ids else {}
            return _step_context(row, memories)

    # ---- long-term memory ----

    def memory_version(self, story_id: str) -> int:
        """A counter bumped in the same transaction as any change to the story's memories."""
        with self._read() as session:
            return self._story_row(session, story_id).memory_version

    def memory_vectors(
        self, story_id: str, embedding_model: str
    ) -> tuple[int, list[MemoryEntry], np.ndarray]:
        """(version, entries, float32 matrix of shape (len(entries), dim)) for one embedding model.

        Memories of deleted paragraphs are left out; excluded ones stay, flagged, so recall
        can skip them and a person can include them again. Oldest first. With no entries the
        matrix is (0, 0).
        """
        memories = MemoryRow.__table__
        with self._read() as session:
            # Version and rows come from one snapshot, so the version describes these rows.
            version = self._story_row(session, story_id).memory_version
            # A Core query on the session's connection: no ORM bookkeeping for 100,000 rows.
            # The index (story_id, embedding_model, created_at, id) yields rows already in
            # order, so the database never sorts the vectors.
            rows = session.connection().execute(
                select(
                    memories.c.id,
                    memories.c.step_id,
                    memories.c.text,
                    memories.c.pinned,
                    memories.c.excluded,
                    memories.c.dim,
                    memories.c.embedding,
                )
                .join(StepRow, StepRow.id == memories.c.step_id)
                .where(
                    memories.c.story_id == story_id,
                    memories.c.embedding_model == embedding_model,
                    StepRow.deleted.is_(False),
                )
                .order_by(memories.c.created_at, memories.c.id)
            ).all()
        entries = [
            MemoryEntry(
                id=memory_id,
                story_id=story_id,
                step_id=step_id,
                text=text,
                pinned=pinned,
                excluded=excluded,
            )
            for memory_id, step_id, text, pinned, excluded, _dim, _embedding in rows
        ]
        if not rows:
            return version, entries, np.zeros((0, 0), dtype=np.float32)
        # One copy of all vectors, into a writable buffer; no per-row arrays.
        joined = bytearray().join(row[6] for row in rows)
        matrix = np.frombuffer(joined, dtype=EMBEDDING_DTYPE).reshape(len(rows), rows[0].dim)
        return version, entries, matrix.astype(np.float32, copy=False)

    def memory_for_step(self, step_id: str) -> MemoryEntry | None:
        """The long-term memory made from a step's paragraph, if it has one."""
        with self._read() as session:
            self._step_row(session, step_id)
            row = session.scalar(select(MemoryRow).where(MemoryRow.step_id == step_id))
            return _memory(row) if row is not None else None

    def set_memory_flags(
        self, memory_id: str, *, pinned: bool | None = None, excluded: bool | None = None
    ) -> MemoryEntry:
        """Pin a memory (always recalled) or exclude it (never recalled); None leaves a flag."""
        with self._write() as session:
            row = session.get(MemoryRow, memory_id)
            if row is None:
                raise StoryNotFound(
                    f"No memory with id {memory_id!r} in {self._location}, so no flag was "
                    "changed; pick a memory from the story's memory list."
                )
            self._bump_memory_version(session, row.story_id)  # first: see _bump_memory_version
            if pinned is not None:
                row.pinned = pinned
            if excluded is not None:
                row.excluded = excluded
            session.flush()
            return _memory(row)

    def search_memories(self, story_id: str, text: str, limit: int = 20) -> list[MemoryEntry]:
        """Memories whose text contains `text` (case-insensitive), oldest first.

        Excluded memories are found too, flagged; memories of deleted paragraphs are not.
        """
        with self._read() as session:
            self._story_row(session, story_id)
            rows = session.scalars(
                select(MemoryRow)
                .join(StepRow, StepRow.id == MemoryRow.step_id)
                .where(
                    MemoryRow.story_id == story_id,
                    StepRow.deleted.is_(False),
                    # longyarn.storage.db gives SQLite a Unicode lower(); other databases have one.
                    func.lower(MemoryRow.text).contains(text.lower(), autoescape=True),
                )
                .order_by(StepRow.created_at, StepRow.id)
                .limit(limit)
            )
            return [_memory(row) for row in rows]

    # ---- helpers ----

    def _story_row(self, session: Session, story_id: str) -> StoryRow:
        row = session.get(StoryRow, story_id)
        if row is None:
            raise self._story_not_found(story_id)
        return row

    def _step_row(self, session: Session, step_id: str, *, story_id: str | None = None) -> StepRow:
        row = session.get(StepRow, step_id)
        if row is None or (story_id is not None and row.story_id != story_id):
            raise self._step_not_found(step_id, story_id=story_id)
        return row

    def _step_in_story(self, step_id: str, story_id: str) -> bool:
        with self._read() as session:
            row = session.get(StepRow, step_id)
            return row is not None and row.story_id == story_id

    def _resolve_head(
        self, session: Session, story_id: str, head_step_id: str | None
    ) -> str | None:
        story = self._story_row(session, story_id)
        if head_step_id is None:
            return story.head_step_id
        self._step_row(session, head_step_id, story_id=story_id)
        return head_step_id

    def _bump_memory_version(self, session: Session, story_id: str, *, edited: bool = True) -> None:
        # One UPDATE, not read-then-write: it also takes the row's write lock on PostgreSQL.
        # Every write to a story's steps or memories takes this lock before changing them, so
        # concurrent writers queue for the story and cannot deadlock (SQLite queues for the file).
        values: dict = {"memory_version": StoryRow.memory_version + 1}
        if edited:
            values["updated_at"] = _utcnow()
        bumped = session.execute(update(StoryRow).where(StoryRow.id == story_id).values(**values))
        if bumped.rowcount == 0:
            raise self._story_not_found(story_id)

    def _check_embedding_dim(
        self,
        session: Session,
        story_id: str,
        embedding_model: str,
        dim: int,
        *,
        other_than: str | None = None,
    ) -> None:
        """All of a story's vectors under one embedding model must have one length."""
        query = select(MemoryRow.dim).where(
            MemoryRow.story_id == story_id, MemoryRow.embedding_model == embedding_model
        )
        if other_than is not None:
            query = query.where(MemoryRow.id != other_than)
        stored_dim = session.scalar(query.limit(1))
        if stored_dim is not None and stored_dim != dim:
            raise InvalidInput(
                f"The embedding has {dim} values but this story's other {embedding_model!r} "
                f"embeddings have {stored_dim}, so nothing was saved; embed with the same "
                "model and settings as before."
            )

    def _story_not_found(self, story_id: str) -> StoryNotFound:
        return StoryNotFound(
            f"No story with id {story_id!r} in {self._location}; "
            "run `longyarn write` to see your stories."
        )

    def _step_not_found(
        self, step_id: str, *, story_id: str | None = None, kept: str = "so nothing was changed"
    ) -> StoryNotFound:
        where = f"story {story_id!r} in {self._location}" if story_id else self._location
        return StoryNotFound(
            f"No paragraph with id {step_id!r} in {where}, {kept}; "
            "reopen the story to see its current paragraphs."
        )

    # ---- readers (reader mode) ----
    #
    # A reader's steps are ordinary steps with `branch_owner` = the reader's id. Everything
    # below that takes a step checks that the reader may see it: the author's steps
    # (branch_owner NULL) and the reader's own, never another reader's.

    def create_reader(self, *, reader_id: str, name: str, token_hash: str) -> Reader:
        """Store a new reader; `token_hash` is the hex SHA-256 of their token's secret."""
        if len(token_hash) != 64:
            raise InvalidInput(
                "A reader's token hash must be 64 hex characters, so no reader was created; "
                "pass the SHA-256 hex digest of the token's secret."
            )
        row = ReaderRow(id=reader_id, name=name, token_hash=token_hash, created_at=_utcnow())
        try:
            with self._write() as session:
                session.add(row)
                session.flush()
                return _reader(row)
        except IntegrityError:
            raise InvalidInput(
                f"A reader with id {reader_id!r} already exists, so no reader was created; "
                "start again with a new reader link."
            ) from None

    def reader_exists(self, reader_id: str) -> bool:
        with self._read() as session:
            return session.get(ReaderRow, reader_id) is not None

    def reader_with_token(self, reader_id: str, token_hash: str) -> Reader | None:
        """The reader if `token_hash` is theirs, else None; the hashes are compared in constant time."""
        with self._read() as session:
            row = session.get(ReaderRow, reader_id)
            stored = row.token_hash if row is not None else "0" * 64
        # Compare even for an unknown id, so the answer takes as long either way.
        matches = hmac.compare_digest(stored.encode(), token_hash.encode())
        return _reader(row) if row is not None and matches else None

    def readable_stories(self) -> list[Story]:
        """Stories their authors marked readable, most recently edited first."""
        with self._read() as session:
            rows = session.scalars(
                select(StoryRow)
                .where(StoryRow.readable.is_(True))
                .order_by(StoryRow.updated_at.desc(), StoryRow.id)
            )
            return [_story(row) for row in rows]

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
                        updated_at=_utcnow(),
                    )
                )
            else:
                row.step_id = step_id
                row.updated_at = _utcnow()

    def save_reader_slot(self, reader_id: str, story_id: str, name: str, step_id: str) -> ReaderPlace:
        """Save the reader's place under `name`, replacing a slot of that name."""
        with self._write() as session:
            self._lock_reader(session, reader_id)  # else two saves could both keep their slot
            self._reader_visible_step(session, reader_id, story_id, step_id)
            session.execute(
                delete(ReaderPlaceRow).where(
                    ReaderPlaceRow.reader_id == reader_id,
                    ReaderPlaceRow.story_id == story_id,
                    ReaderPlaceRow.kind == SLOT,
                    ReaderPlaceRow.name == name,
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

    def reader_places(self, reader_id: str, story_id: str, kind: str) -> list[ReaderPlace]:
        """The reader's save slots (`kind="slot"`, by name) or bookmarks (`"bookmark"`, oldest first)."""
        order = (ReaderPlaceRow.name,) if kind == SLOT else (ReaderPlaceRow.created_at, ReaderPlaceRow.id)
        with self._read() as session:
            rows = session.scalars(
                select(ReaderPlaceRow)
                .where(
                    ReaderPlaceRow.reader_id == reader_id,
                    ReaderPlaceRow.story_id == story_id,
                    ReaderPlaceRow.kind == kind,
                )
                .order_by(*order)
            )
            return [_place(row) for row in rows]

    def delete_reader_place(self, reader_id: str, place_id: str) -> None:
        """Forget one of the reader's save slots or bookmarks (another reader's is untouched)."""
        with self._write() as session:
            session.execute(
                delete(ReaderPlaceRow).where(
                    ReaderPlaceRow.id == place_id, ReaderPlaceRow.reader_id == reader_id
                )
            )

    def reserve_reader_generation(
        self, reader_id: str, *, limit: int, window_s: float = 60.0, now: datetime | None = None
    ) -> float | None:
        """Count one generation for the reader if fewer than `limit` began in the last `window_s`.

        Returns None when it was counted (go ahead), else the seconds until the oldest counted
        one leaves the window. The check and the insert share one write transaction that holds
        the reader's lock, so concurrent processes on one database cannot overrun the limit.
        """
        now = now or _utcnow()
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
        self, session: Session, reader_id: str, story_id: str, step_id: str, kind: str, name: str
    ) -> ReaderPlace:
        row = ReaderPlaceRow(
            id=_new_row_id(), reader_id=reader_id, story_id=story_id, step_id=step_id,
            kind=kind, name=name, created_at=_utcnow(),
        )
        session.add(row)
        session.flush()
        return _place(row)

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

    # ---- many stories at once ----

    def paragraph_counts(self, story_ids: list[str] | None = None) -> dict[str, int]:
        """`count_steps` of many stories (default: all) at their heads, in one query.

        One recursive walk starts from every head at once, so a library of many long stories
        costs one round trip, not one per story. Deleted paragraphs are not counted; a story
        with no paragraphs counts 0; ids of stories that do not exist are left out.
        """
        if story_ids is not None and not story_ids:
            return {}
        stories = StoryRow.__table__
        steps = StepRow.__table__
        # Standard SQL (WITH RECURSIVE), as in _walk_to_root, with the story carried along.
        heads = select(
            stories.c.id.label("story_id"), steps.c.id, steps.c.parent_id
        ).join(steps, (steps.c.id == stories.c.head_step_id) & (steps.c.story_id == stories.c.id))
        if story_ids is not None:
            heads = heads.where(stories.c.id.in_(story_ids))
        walk = heads.cte("heads_walk", recursive=True)
        parent = aliased(steps)
        walk = walk.union_all(
            select(walk.c.story_id, parent.c.id, parent.c.parent_id).where(
                parent.c.id == walk.c.parent_id
            )
        )
        counted = aliased(steps)
        query = (
            select(stories.c.id, func.count(counted.c.id))
            .select_from(stories)
            .outerjoin(walk, walk.c.story_id == stories.c.id)
            .outerjoin(counted, (counted.c.id == walk.c.id) & counted.c.deleted.is_(False))
            .group_by(stories.c.id)
        )
        if story_ids is not None:
            query = query.where(stories.c.id.in_(story_ids))
        with self._read() as session:
            rows = session.connection().execute(query).all()
        return {story_id: count for story_id, count in rows}


# ---- queries ---------------------------------------------------------------------------


def _walk_to_root(story_id: str, head_step_id: str) -> Any:
    """A recursive CTE of (id, depth) from the head (depth 0) up to the root.

    Standard SQL (WITH RECURSIVE), so SQLite and PostgreSQL both run it as one query.
    """
    steps = StepRow.__table__
    walk = (
        select(steps.c.id, steps.c.parent_id, literal(0).label("depth"))
        .where(steps.c.id == head_step_id, steps.c.story_id == story_id)
        .cte("branch_walk", recursive=True)
    )
    parent = aliased(steps)
    return walk.union_all(
        select(parent.c.id, parent.c.parent_id, walk.c.depth + 1).where(
            parent.c.id == walk.c.parent_id
        )
    )


# ---- rows to engine types --------------------------------------------------------------


def _story(row: StoryRow) -> Story:
    return Story(
        id=row.id,
        title=row.title,
        premise=row.premise,
        genre=row.genre,
        outline=row.outline,
        head_step_id=row.head_step_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        readable=row.readable,
        reader_may_extend=row.reader_may_extend,
        settings=dict(row.settings),
    )


def _step(row: Any) -> Step:
    """From a StepRow, or a Core row of the steps table (same names)."""
    first, second, third = row.next_instructions
    return Step(
        id=row.id,
        story_id=row.story_id,
        parent_id=row.parent_id,
        instruction=row.instruction,
        paragraph=row.paragraph,
        short_term_memory=row.short_term_memory,
        memory_reason=row.memory_reason,
        next_instructions=(first, second, third),
        backend=row.backend,
        model=row.model,
        created_at=row.created_at,
        fallbacks=tuple(row.fallbacks),
        branch_owner=row.branch_owner,
    )


def _memory(row: MemoryRow) -> MemoryEntry:
    return MemoryEntry(
        id=row.id,
        story_id=row.story_id,
        step_id=row.step_id,
        text=row.text,
        pinned=row.pinned,
        excluded=row.excluded,
    )


def _context_row(context: StepContext, story_id: str, step_id: str) -> StepContextRow:
    return StepContextRow(
        step_id=step_id,
        story_id=story_id,
        sections=[
            {
                "name": section.name,
                "tokens": int(section.tokens),
                "chars": int(section.chars),
                "trimmed_chars": int(section.trimmed_chars),
                "fingerprint": section.fingerprint,
            }
            for section in context.sections
        ],
        # Ids and scores only: the texts are the memories' own, stored once.
        recalled=[
            {"memory_id": memory.memory_id, "score": round(float(memory.score), 4), "pinned": memory.pinned}
            for memory in context.recalled
        ],
    )


def _step_context(row: StepContextRow, memories: dict[str, MemoryRow]) -> StepContext:
    recalled = []
    for item in row.recalled:
        memory = memories.get(item["memory_id"])
        recalled.append(
            RecalledMemory(
                memory_id=item["memory_id"],
                step_id=memory.step_id if memory is not None else "",
                text=memory.text if memory is not None else "",
                score=float(item["score"]),
                pinned=bool(item["pinned"]),
            )
        )
    return StepContext(
        sections=tuple(
            SectionRecord(
                name=item["name"],
                tokens=int(item["tokens"]),
                chars=int(item["chars"]),
                trimmed_chars=int(item["trimmed_chars"]),
                fingerprint=str(item["fingerprint"]),
            )
            for item in row.sections
        ),
        recalled=tuple(recalled),
    )


# ---- input checks ----------------------------------------------------------------------


def _embedding_bytes(embedding: object) -> tuple[bytes, int]:
    """Validate an embedding and return its little-endian float32 bytes and length."""
    if not (
        isinstance(embedding, np.ndarray)
        and embedding.dtype == np.float32
        and embedding.ndim == 1
        and embedding.size > 0
    ):
        described = (
            f"a {embedding.dtype} array of shape {embedding.shape}"
            if isinstance(embedding, np.ndarray)
            else f"a {type(embedding).__name__}"
        )
        raise InvalidInput(
            f"An embedding must be a non-empty one-dimensional float32 array, not {described}, "
            "so nothing was saved; pass the embedder's vector for this one text."
        )
    if not np.isfinite(embedding).all():
        raise InvalidInput(
            "The embedding holds NaN or infinite values, so nothing was saved; "
            "check the embedding model's output."
        )
    return embedding.astype(EMBEDDING_DTYPE, copy=False).tobytes(), int(embedding.shape[0])


def _instructions(next_instructions: Sequence[str]) -> list[str]:
    if len(next_instructions) != 3 or not all(isinstance(i, str) for i in next_instructions):
        raise InvalidInput(
            f"A step needs exactly three next instructions as text, not {len(next_instructions)}, "
            "so nothing was saved; parse the planner's output into three options."
        )
    return list(next_instructions)


# ---- reader mode: plain records ---------------------------------------------------------

SLOT = "slot"
BOOKMARK = "bookmark"


@dataclass(frozen=True)
class Reader:
    """A reader of interactive fiction; their token is never kept, only its hash."""

    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ReaderPosition:
    """Where a reader is in a story: the last paragraph read (None: before the first)."""

    step_id: str | None
    updated_at: datetime


@dataclass(frozen=True)
class ReaderPlace:
    """A named save slot or a bookmark (`kind` is "slot" or "bookmark") on one paragraph."""

    id: str
    story_id: str
    step_id: str
    kind: str
    name: str
    created_at: datetime


def _reader(row: ReaderRow) -> Reader:
    return Reader(id=row.id, name=row.name, created_at=row.created_at)


def _place(row: ReaderPlaceRow) -> ReaderPlace:
    return ReaderPlace(
        id=row.id, story_id=row.story_id, step_id=row.step_id, kind=row.kind, name=row.name,
        created_at=row.created_at,
    )

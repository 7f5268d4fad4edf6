"""`SqlStories`: the engine's `StoryStore` (stories, their tree of steps, long-term memories).

Every method runs in one short transaction (see `longyarn.storage.sessions`): every change
happens in one transaction, or not at all.
"""

from __future__ import annotations

import secrets

import numpy as np
from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from longyarn.recurrent_core.errors import InvalidInput, StoryNotFound
from longyarn.recurrent_core.types import MemoryEntry, NewStep, Step, StepContext, Story

from .bible import SqlBible
from .models import MemoryRow, StepContextRow, StepRow, StoryRow
from .records import (
    EMBEDDING_DTYPE,
    encode_embedding,
    memory_record,
    new_row_id,
    step_context_record,
    step_context_row,
    step_record,
    story_record,
    three_instructions,
    utcnow,
)
from .tree import (
    BRANCH_LENGTH,
    BRANCH_STEP_IDS,
    BRANCH_STEPS,
    STEP_BY_ID,
    STORY_BY_ID,
    StoryTree,
    branch_parameters,
    paragraph_counts_query,
)

# What `update_story` may change; the rest (head, memory_version, times) the store manages.
EDITABLE_STORY_FIELDS = frozenset(
    {"title", "premise", "genre", "outline", "settings", "readable", "reader_may_extend"}
)
STORY_ID_BYTES = 6  # 12 hex characters: short enough to type, 2**48 ids
_HEAD_STAYS = object()  # for _set_deleted: the story's head is left where it is


def new_story_id() -> str:
    """A short random id that people can type, e.g. '3f9c0a1b7e42'."""
    return secrets.token_hex(STORY_ID_BYTES)


class SqlStories(SqlBible, StoryTree):
    """The `longyarn.recurrent_core.store.StoryStore` of longyarn, backed by SQLAlchemy (the
    story bible's methods come from `SqlBible`).

    `longyarn.storage.db.open_store(url_or_path)` builds one (as part of `SqlStore`).
    """

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
        now = utcnow()
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
                    return story_record(row)
            except IntegrityError:
                with self._read() as session:
                    if session.get(StoryRow, row.id) is None:
                        raise  # not an id clash: a real fault
        raise RuntimeError("could not find an unused story id in 5 tries")

    def get_story(self, story_id: str) -> Story:
        """The story; `StoryNotFound` names the id and the database if there is none."""
        with self._read_rows() as connection:
            row = connection.execute(STORY_BY_ID, {"id": story_id}).first()
        if row is None:
            raise self._story_not_found(story_id)
        return story_record(row)

    def list_stories(self) -> list[Story]:
        """Most recently edited first."""
        with self._read() as session:
            rows = session.scalars(
                select(StoryRow).order_by(StoryRow.updated_at.desc(), StoryRow.id)
            )
            return [story_record(row) for row in rows]

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
            row.updated_at = utcnow()
            session.flush()
            return story_record(row)

    def delete_story(self, story_id: str) -> None:
        """Delete a story with all its steps and memories."""
        with self._write() as session:
            row = self._story_row(session, story_id)
            # Steps and memories go with it through ON DELETE CASCADE, in the same statement.
            session.delete(row)

    # ---- steps ----

    def get_step(self, step_id: str) -> Step:
        """One step, deleted or not; `StoryNotFound` if there is none with that id."""
        with self._read_rows() as connection:
            row = connection.execute(STEP_BY_ID, {"id": step_id}).first()
        if row is None:
            raise self._step_not_found(step_id)
        return step_record(row)

    def branch(self, story_id: str, head_step_id: str | None = None) -> list[Step]:
        """Steps from the root to `head_step_id` (default: the story's head), oldest first.

        Deleted paragraphs are left out. One recursive query, however long the story.
        """
        with self._read_rows() as connection:  # Core rows: no ORM bookkeeping per step
            head = self._branch_head(connection, story_id, head_step_id)
            if head is None:
                return []
            rows = connection.execute(BRANCH_STEPS, branch_parameters(story_id, head)).all()
            return [step_record(row) for row in rows]

    def branch_step_ids(self, story_id: str, head_step_id: str | None = None) -> list[str]:
        """The ids of `branch()`'s steps, without loading their text: what recall needs."""
        with self._read_rows() as connection:
            head = self._branch_head(connection, story_id, head_step_id)
            if head is None:
                return []
            return list(connection.scalars(BRANCH_STEP_IDS, branch_parameters(story_id, head)))

    def count_steps(self, story_id: str, head_step_id: str | None = None) -> int:
        """How many paragraphs the branch ending at the head holds (deleted ones not counted)."""
        with self._read_rows() as connection:
            head = self._branch_head(connection, story_id, head_step_id)
            if head is None:
                return 0
            return connection.scalar(BRANCH_LENGTH, branch_parameters(story_id, head)) or 0

    def children(self, story_id: str, parent_id: str | None) -> list[Step]:
        """The author's direct children of a step (roots when `parent_id` is None), oldest first.

        Readers' branches are left out (the reader sees them through `reader_children`), and so
        are deleted paragraphs, as everywhere a reader or writer looks.
        """
        with self._read() as session:
            if parent_id is not None:
                self._step_row(session, parent_id, story_id=story_id)
            return self._children(session, story_id, parent_id, StepRow.branch_owner.is_(None))

    def set_head(self, story_id: str, step_id: str | None) -> Story:
        """Move where writing continues: undo, redo and switching branches are all this."""
        with self._write() as session:
            row = self._story_row(session, story_id)
            if step_id is not None:
                self._step_row(session, step_id, story_id=story_id)
            row.head_step_id = step_id
            row.updated_at = utcnow()
            session.flush()
            return story_record(row)

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
        embedding_bytes, dim = encode_embedding(embedding)
        next_instructions = three_instructions(new_step.next_instructions)
        now = utcnow()
        step_row = StepRow(
            id=new_row_id(),
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
                        id=new_row_id(),
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
                    session.add(step_context_row(new_step.context, new_step.story_id, step_row.id))
                session.flush()
                if move_head:  # last: the head must point at a step that already exists
                    session.execute(
                        update(StoryRow)
                        .where(StoryRow.id == new_step.story_id)
                        .values(head_step_id=step_row.id)
                    )
                return step_record(step_row)
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
        embedding_bytes, dim = encode_embedding(embedding)
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
                    id=new_row_id(),
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
            return step_record(step_row)

    def delete_paragraph(self, step_id: str, *, move_head: bool = False, new_head: str | None = None) -> None:
        """Hide a paragraph from the story and remove its memory from recall; the tree is kept.

        With `move_head`, writing continues from `new_head` (None: the story's start), in the
        same transaction: a failure leaves both the paragraph and the head as they were.
        """
        self._set_deleted(step_id, True, new_head if move_head else _HEAD_STAYS)

    def restore_paragraph(self, step_id: str, *, move_head: bool = False) -> Step:
        """Bring a deleted paragraph back, and its memory back into recall (the undo of
        `delete_paragraph`); with `move_head`, writing continues from it, in the same transaction."""
        return self._set_deleted(step_id, False, step_id if move_head else _HEAD_STAYS)

    def _set_deleted(self, step_id: str, deleted: bool, head: str | None | object) -> Step:
        with self._write() as session:
            step_row = self._step_row(session, step_id)
            self._bump_memory_version(session, step_row.story_id)  # first: see _bump_memory_version
            step_row.deleted = deleted
            if head is not _HEAD_STAYS:
                story_row = self._story_row(session, step_row.story_id)
                if head is not None:
                    self._step_row(session, head, story_id=step_row.story_id)  # type: ignore[arg-type]
                story_row.head_step_id = head  # type: ignore[assignment]
                story_row.updated_at = utcnow()
            session.flush()
            return step_record(step_row)

    def update_short_term_memory(self, step_id: str, short_term_memory: str) -> Step:
        """A person's edit of the short-term memory; the next step reads it."""
        with self._write() as session:
            step_row = self._step_row(session, step_id)
            session.execute(  # the story's row first: see _bump_memory_version
                update(StoryRow)
                .where(StoryRow.id == step_row.story_id)
                .values(updated_at=utcnow())
            )
            step_row.short_term_memory = short_term_memory
            session.flush()
            return step_record(step_row)

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
            return step_context_record(row, memories)

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
            return memory_record(row) if row is not None else None

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
            return memory_record(row)

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
                    # sessions.py gives SQLite a Unicode lower(); other databases have one.
                    func.lower(MemoryRow.text).contains(text.lower(), autoescape=True),
                )
                .order_by(StepRow.created_at, StepRow.id)
                .limit(limit)
            )
            return [memory_record(row) for row in rows]

    # ---- many stories at once ----

    def paragraph_counts(self, story_ids: list[str] | None = None) -> dict[str, int]:
        """`count_steps` of many stories (default: all) at their heads, in one query.

        One recursive walk starts from every head at once, so a library of many long stories
        costs one round trip, not one per story. Deleted paragraphs are not counted; a story
        with no paragraphs counts 0; ids of stories that do not exist are left out.
        """
        if story_ids is not None and not story_ids:
            return {}
        with self._read() as session:
            rows = session.connection().execute(paragraph_counts_query(story_ids)).all()
        return {story_id: count for story_id, count in rows}

    # ---- helpers ----

    def _step_in_story(self, step_id: str, story_id: str) -> bool:
        with self._read() as session:
            row = session.get(StepRow, step_id)
            return row is not None and row.story_id == story_id

    def _branch_head(self, connection: Connection, story_id: str, head_step_id: str | None) -> str | None:
        """The step a branch ends at: `head_step_id`, checked to be the story's, or the story's
        head (None while the story has no paragraphs)."""
        story = connection.execute(STORY_BY_ID, {"id": story_id}).first()
        if story is None:
            raise self._story_not_found(story_id)
        if head_step_id is None:
            return story.head_step_id
        step = connection.execute(STEP_BY_ID, {"id": head_step_id}).first()
        if step is None or step.story_id != story_id:
            raise self._step_not_found(head_step_id, story_id=story_id)
        return head_step_id

    def _bump_memory_version(self, session: Session, story_id: str, *, edited: bool = True) -> None:
        # One UPDATE, not read-then-write: it also takes the row's write lock on PostgreSQL.
        # Every write to a story's steps or memories takes this lock before changing them, so
        # concurrent writers queue for the story and cannot deadlock (SQLite queues for the file).
        values: dict = {"memory_version": StoryRow.memory_version + 1}
        if edited:
            values["updated_at"] = utcnow()
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


"""SQLAlchemy 2.0 models: a story, its tree of steps, and the long-term memories they left.

These rows never leave `storage`: the stores turn them into the frozen dataclasses of
`longyarn.recurrent_core.types`, so no session or lazy load crosses a thread.

Integrity lives in the schema, not only in Python:
- a step's parent must be a step *of the same story*: a composite foreign key
  (story_id, parent_id) -> steps(story_id, id);
- a story's head must be one of its own steps: (id, head_step_id) -> steps(story_id, id);
- a memory belongs to its step and story the same way, and goes when they go (ON DELETE CASCADE).
A NULL in a composite key (a root step, an empty story) switches that check off, as standard
SQL's MATCH SIMPLE says, on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so that migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 32  # room for a uuid4 hex; story ids are shorter (see stories.new_story_id)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no zone, PostgreSQL's timestamptz does; this makes both return the same thing.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite
            return value.replace(tzinfo=timezone.utc)
        # PostgreSQL answers in the session's time zone (the server's, by default).
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _cascading_key(table: str, column: str, referred_table: str) -> ForeignKeyConstraint:
    """`column` -> `referred_table`.id; the row goes when the row it refers to goes.

    Named fk_<table>_<column>_<referred_table>, the name the migrations gave it.
    """
    return ForeignKeyConstraint(
        [column], [f"{referred_table}.id"], name=f"fk_{table}_{column}_{referred_table}",
        ondelete="CASCADE",
    )


def _step_of_same_story(table: str, step_column: str = "step_id") -> ForeignKeyConstraint:
    """(story_id, `step_column`) -> steps(story_id, id): a step of the row's own story; the row
    goes when that step goes.

    Named fk_<table>_<step_column without _id>_steps, the name the migrations gave it.
    """
    step = step_column.removesuffix("_id")
    return ForeignKeyConstraint(
        ["story_id", step_column], ["steps.story_id", "steps.id"], name=f"fk_{table}_{step}_steps",
        ondelete="CASCADE",
    )


class StoryRow(Base):
    __tablename__ = "stories"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    premise: Mapped[str] = mapped_column(Text)
    genre: Mapped[str] = mapped_column(Text)
    outline: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict] = mapped_column(JSON)
    head_step_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    readable: Mapped[bool] = mapped_column(Boolean)
    reader_may_extend: Mapped[bool] = mapped_column(Boolean)
    # Bumped in the same transaction as any change to the story's long-term memories, so a
    # cached embedding matrix knows when it is stale.
    memory_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # Stories and steps refer to each other; use_alter lets create_all and migrations
        # add this one after both tables exist.
        ForeignKeyConstraint(
            ["id", "head_step_id"],
            ["steps.story_id", "steps.id"],
            name="fk_stories_head_step_steps",
            use_alter=True,
        ),
    )


class StepRow(Base):
    """One node of a story's tree: the instruction it followed and what the model made of it."""

    __tablename__ = "steps"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    parent_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    instruction: Mapped[str] = mapped_column(Text)
    paragraph: Mapped[str] = mapped_column(Text)
    short_term_memory: Mapped[str] = mapped_column(Text)
    memory_reason: Mapped[str] = mapped_column(Text)
    next_instructions: Mapped[list] = mapped_column(JSON)  # three strings
    backend: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    fallbacks: Mapped[list] = mapped_column(JSON)  # strings: what was retried or replaced
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A deleted paragraph leaves the story and recall, but its node stays so the tree holds.
    deleted: Mapped[bool] = mapped_column(Boolean)
    # A reader's id for a reader's own branch; NULL for the author's steps.
    branch_owner: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        _cascading_key("steps", "story_id", "stories"),
        # The target of the composite keys below.
        UniqueConstraint("story_id", "id", name="uq_steps_story_id_id"),
        _step_of_same_story("steps", "parent_id"),
        Index("ix_steps_story_id_parent_id", "story_id", "parent_id"),
        Index("ix_steps_story_id_branch_owner", "story_id", "branch_owner"),
    )


class MemoryRow(Base):
    """A long-term memory: a paragraph's text and its embedding under one embedding model."""

    __tablename__ = "memories"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    step_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32, `dim` values
    dim: Mapped[int] = mapped_column(Integer)
    embedding_model: Mapped[str] = mapped_column(String(200))
    pinned: Mapped[bool] = mapped_column(Boolean)
    excluded: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        _step_of_same_story("memories"),
        # One memory per step: editing a paragraph replaces its memory.
        UniqueConstraint("step_id", name="uq_memories_step_id"),
        # Serves memory_vectors: its rows, already in the order it returns them.
        Index(
            "ix_memories_story_id_embedding_model_created_at_id",
            "story_id",
            "embedding_model",
            "created_at",
            "id",
        ),
    )


class StepContextRow(Base):
    """What a step's writer prompt held, stored with the step: per section its size, what was
    trimmed and a fingerprint, and the recalled memories' ids and scores. The texts are rebuilt
    from the story, the previous step and the memories (see longyarn.recurrent_core.context), so a
    step's context costs a few hundred bytes. Steps stored before revision 0004 have none."""

    __tablename__ = "step_contexts"

    step_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    # [{"name", "tokens", "chars", "trimmed_chars", "fingerprint"}], in prompt order; or, for
    # steps that recorded the prompt's details, {"sections": [...], "template", "budget_tokens",
    # "prompt_tokens", "trimmed_elsewhere"} (see records.step_context_record)
    sections: Mapped[list | dict] = mapped_column(JSON)
    # [{"memory_id", "score", "pinned"}], in the order they were recalled
    recalled: Mapped[list] = mapped_column(JSON)

    __table_args__ = (
        _step_of_same_story("step_contexts"),
    )


# ---- the story bible and chapters (see longyarn.recurrent_core.bible) ---------------------


class BibleEntryRow(Base):
    """A character, place, object, group, lore or rule of a story; it goes with the story.

    Names and aliases are unique per story case-insensitively; the store checks that while it
    holds the story's row lock (aliases live in a JSON list, out of an index's reach).
    """

    __tablename__ = "bible_entries"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(16))  # character, place, object, group, lore, rule
    name: Mapped[str] = mapped_column(Text)
    aliases: Mapped[list] = mapped_column(JSON)  # strings
    secondary_keys: Mapped[list] = mapped_column(JSON)  # strings
    description: Mapped[str] = mapped_column(Text)
    notes: Mapped[str] = mapped_column(Text)
    always: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        _cascading_key("bible_entries", "story_id", "stories"),
        # The target of the facts' composite key; also serves "the entries of a story".
        UniqueConstraint("story_id", "id", name="uq_bible_entries_story_id_id"),
    )


class BibleFactRow(Base):
    """A dated fact of an entry: from paragraph N on, through paragraph M if it has an end.

    A fact learned after a step belongs to that step's branch and goes when the step goes;
    a writer's fact has no step and holds on every branch.
    """

    __tablename__ = "bible_facts"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    entry_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    text: Mapped[str] = mapped_column(Text)
    from_paragraph: Mapped[int] = mapped_column(Integer)
    until_paragraph: Mapped[int | None] = mapped_column(Integer)
    step_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    branch_owner: Mapped[str | None] = mapped_column(String(64))  # the step's, copied
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # An entry of the fact's own story; the fact goes with it.
        ForeignKeyConstraint(
            ["story_id", "entry_id"], ["bible_entries.story_id", "bible_entries.id"],
            name="fk_bible_facts_entry_bible_entries", ondelete="CASCADE",
        ),
        _step_of_same_story("bible_facts"),
        CheckConstraint("from_paragraph >= 1", name="from_paragraph_positive"),
        CheckConstraint(
            "until_paragraph IS NULL OR until_paragraph >= from_paragraph", name="ends_after_start"
        ),
        Index("ix_bible_facts_entry_id", "entry_id"),
        Index("ix_bible_facts_story_id_step_id", "story_id", "step_id"),
    )


class ChapterRow(Base):
    """A chapter: where it starts (NULL: the story's start), its title and summary."""

    __tablename__ = "chapters"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    start_step_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    closed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        _cascading_key("chapters", "story_id", "stories"),
        _step_of_same_story("chapters", "start_step_id"),
        # One chapter per starting paragraph; also serves "the chapters of a story".
        UniqueConstraint("story_id", "start_step_id", name="uq_chapters_story_id_start_step_id"),
    )


class ProposedBibleUpdateRow(Base):
    """An update the model proposed for the bible, and what the writer decided of it: NULL
    while it waits, so the writers' queue outlives the session. `update` is the update as the
    writers' session writes it (see longyarn.app.session.bible); `problem` says why accepting
    it failed."""

    __tablename__ = "proposed_bible_updates"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    step_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))  # the paragraph it came from
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime)
    arrival: Mapped[int] = mapped_column(Integer)  # its place among those that arrived together
    update: Mapped[dict] = mapped_column(JSON)
    decision: Mapped[str | None] = mapped_column(String(16))  # "accepted", "rejected"; NULL: waits
    problem: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        _cascading_key("proposed_bible_updates", "story_id", "stories"),
        _step_of_same_story("proposed_bible_updates"),
        Index("ix_proposed_bible_updates_story_id", "story_id"),
    )


# ---- reader mode -----------------------------------------------------------------------


class ReaderRow(Base):
    """A reader of interactive fiction: a display name and the hash of their secret token.

    The token itself is never stored: only its SHA-256, which is enough for a random secret.
    """

    __tablename__ = "readers"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the token's secret
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReaderProgressRow(Base):
    """Where a reader is in a story: the last paragraph they read (NULL: before the first)."""

    __tablename__ = "reader_progress"

    reader_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    step_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        _cascading_key("reader_progress", "reader_id", "readers"),
        _cascading_key("reader_progress", "story_id", "stories"),
        _step_of_same_story("reader_progress"),
    )


class ReaderPlaceRow(Base):
    """A place a reader kept in a story: a named save slot, or a bookmark on a paragraph.

    Save slots are unique by name per reader and story (saving again overwrites); bookmarks
    are a list.
    """

    __tablename__ = "reader_places"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    reader_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    step_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(16))  # "slot" or "bookmark"
    name: Mapped[str] = mapped_column(Text)  # the slot's name, or the bookmark's note
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        _cascading_key("reader_places", "reader_id", "readers"),
        _step_of_same_story("reader_places"),
        Index("ix_reader_places_reader_id_story_id_kind", "reader_id", "story_id", "kind"),
    )


class ReaderGenerationRow(Base):
    """When a reader started a generation: the rate limit counts these across processes."""

    __tablename__ = "reader_generations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reader_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        _cascading_key("reader_generations", "reader_id", "readers"),
        Index("ix_reader_generations_reader_id_started_at", "reader_id", "started_at"),
    )


class ReaderMoveRow(Base):
    """A paragraph being written for a reader: at most one per reader and story, in any process.

    The process writing it renews `lease_until` while it works; a row whose lease has run out
    belongs to a process that stopped (killed mid-paragraph, say), and the next move replaces it.
    """

    __tablename__ = "reader_moves"

    reader_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    story_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    parent_step_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))  # NULL: the first paragraph
    instruction: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        _cascading_key("reader_moves", "reader_id", "readers"),
        _cascading_key("reader_moves", "story_id", "stories"),
    )

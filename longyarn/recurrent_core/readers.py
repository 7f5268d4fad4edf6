"""The persistence interface of reader mode: readers, their places and their own branches.

The engine never calls it; it lives beside `StoryStore` so that the reader front end
(`longyarn.app.reader`) and storage can share it without either importing the other.
`longyarn.storage.readers.SqlReaders` implements it with SQLAlchemy.

A reader's own paragraphs are ordinary steps whose `branch_owner` is the reader's id. Every
method that takes a step lets a reader reach the author's steps and their own, never another
reader's. Methods are synchronous and thread-safe; every change happens in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from .store import StoryStore
from .types import Step, Story

PlaceKind = Literal["slot", "bookmark"]
SLOT: PlaceKind = "slot"
BOOKMARK: PlaceKind = "bookmark"


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
class ReaderOpening:
    """What opening a story shows a reader, read in one snapshot.

    `path` runs from the first paragraph to `saved.step_id`, deleted ones left out (empty if
    nothing is saved, or the saved paragraph is not in the story). `start` is where a first
    visit begins (the first paragraph of the author's line, else the oldest first paragraph the
    reader may see); it is read only when nothing is saved.
    """

    story: Story
    saved: ReaderPosition | None
    path: list[Step]
    start: Step | None = None


@dataclass(frozen=True)
class ReaderPlace:
    """A named save slot or a bookmark (`kind` is "slot" or "bookmark") on one paragraph."""

    id: str
    story_id: str
    step_id: str
    kind: PlaceKind
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ReaderMove:
    """A paragraph being written for a reader, in whichever server process took it on.

    `parent_step_id` is the paragraph it follows (None: the story's first); the move is live
    until `lease_until`, which the process writing it keeps pushing forward.
    """

    reader_id: str
    story_id: str
    parent_step_id: str | None
    instruction: str
    started_at: datetime
    lease_until: datetime


class ReaderStore(Protocol):
    # ---- readers ----
    def create_reader(self, *, reader_id: str, name: str, token_hash: str) -> Reader:
        """Store a new reader; `token_hash` is the hex SHA-256 of their token's secret."""

    def reader_exists(self, reader_id: str) -> bool: ...

    def reader_with_token(self, reader_id: str, token_hash: str) -> Reader | None:
        """The reader if `token_hash` is theirs, else None (compared in constant time)."""

    # ---- what a reader may read ----
    def readable_stories(self) -> list[Story]:
        """Stories their authors marked readable, most recently edited first."""

    def reader_children(self, story_id: str, parent_id: str | None, reader_id: str) -> list[Step]:
        """What follows a step for one reader: the author's children and the reader's own."""

    # ---- where a reader is, and the places they kept ----
    def reader_opening(self, reader_id: str, story_id: str) -> ReaderOpening:
        """The story, where the reader last was in it and the path there, in one snapshot
        (`StoryNotFound` if there is no such story)."""

    def reader_position(self, reader_id: str, story_id: str) -> ReaderPosition | None:
        """Where the reader last was in the story; None if they never opened it."""

    def set_reader_position(self, reader_id: str, story_id: str, step_id: str | None) -> None:
        """Raises `StoryNotFound` unless the step is one the reader may see."""

    def save_reader_slot(
        self, reader_id: str, story_id: str, name: str, step_id: str
    ) -> ReaderPlace:
        """Save the reader's place under `name`, replacing a slot of that name."""

    def add_reader_bookmark(
        self, reader_id: str, story_id: str, step_id: str, note: str = ""
    ) -> ReaderPlace: ...

    def reader_places(self, reader_id: str, story_id: str, kind: PlaceKind) -> list[ReaderPlace]:
        """Save slots by name, or bookmarks oldest first."""

    def delete_reader_place(self, reader_id: str, place_id: str) -> None: ...

    # ---- the paragraph being written for a reader ----
    def begin_reader_move(
        self, reader_id: str, story_id: str, parent_step_id: str | None, instruction: str,
        *, lease_s: float, now: datetime | None = None,
    ) -> ReaderMove | None:
        """Claim the reader's one move in the story for `lease_s` seconds; None (nothing
        claimed) while another live move holds it. A move whose lease ran out is replaced."""

    def renew_reader_move(
        self, reader_id: str, story_id: str, *, lease_s: float, now: datetime | None = None
    ) -> None:
        """Keep the reader's move live for `lease_s` more seconds."""

    def end_reader_move(self, reader_id: str, story_id: str) -> None:
        """The move is over (written, failed or stopped): the reader may move again."""

    def reader_move(
        self, reader_id: str, story_id: str, *, now: datetime | None = None
    ) -> ReaderMove | None:
        """The reader's live move in the story, if one is being written anywhere."""

    # ---- rate limit ----
    def reserve_reader_generation(
        self, reader_id: str, *, limit: int, window_s: float = 60.0, now: datetime | None = None
    ) -> float | None:
        """None when one more generation fits in the window (and is counted); else the seconds
        until one would."""


class StoryAndReaderStore(StoryStore, ReaderStore, Protocol):
    """What reader mode needs of one database: the stories' trees and the readers' rows."""

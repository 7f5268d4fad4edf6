"""`SqlBible`: the story bible's part of the engine's `StoryStore` (entries, facts, chapters).

Entries belong to the story; a fact learned after a step is seen only on branches through that
step (see `longyarn.recurrent_core.bible`). Every method runs in one short transaction. Writers
of a story's bible first take the story's row lock (one UPDATE), so two processes cannot both
give a name to two entries; SQLite has one writer at a time anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from longyarn.recurrent_core.bible import (
    EDITABLE_CHAPTER_FIELDS,
    EDITABLE_ENTRY_FIELDS,
    EDITABLE_FACT_FIELDS,
    BibleEntry,
    BibleFact,
    Chapter,
    EntryDraft,
    FactDraft,
    KeptUpdate,
    check_draft,
    check_drafts_apart,
    edited_draft,
    check_fact_range,
    check_fact_text,
    check_names_free,
    entry_order,
)
from longyarn.recurrent_core.errors import BibleError, InvalidInput

from .models import BibleEntryRow, BibleFactRow, ChapterRow, ProposedBibleUpdateRow, StoryRow
from .records import new_row_id, utcnow
from .tree import LIVE_BRANCH, WHOLE_BRANCH, StoryTree, branch_parameters

RowT = TypeVar("RowT", BibleEntryRow, BibleFactRow, ChapterRow, ProposedBibleUpdateRow)

_FACT_ORDER = (BibleFactRow.from_paragraph, BibleFactRow.created_at, BibleFactRow.id)
# Built once (see tree.py): story-wide facts, and those learned on a live step of the branch.
FACTS_ON_BRANCH = (
    select(BibleFactRow)
    .where(
        BibleFactRow.story_id == bindparam("branch_story_id"),
        or_(BibleFactRow.step_id.is_(None), BibleFactRow.step_id.in_(select(LIVE_BRANCH.c.id))),
    )
    .order_by(*_FACT_ORDER)
)
WAITING_ON_BRANCH = (
    select(ProposedBibleUpdateRow)
    .where(
        ProposedBibleUpdateRow.story_id == bindparam("branch_story_id"),
        ProposedBibleUpdateRow.decision.is_(None),
        or_(
            ProposedBibleUpdateRow.step_id.is_(None),
            ProposedBibleUpdateRow.step_id.in_(select(LIVE_BRANCH.c.id)),
        ),
    )
    .order_by(ProposedBibleUpdateRow.arrived_at, ProposedBibleUpdateRow.arrival)
)


class SqlBible(StoryTree):
    """Bible entries, their facts and chapters, for `SqlStories`."""

    # ---- entries ----

    def list_entries(self, story_id: str) -> list[BibleEntry]:
        """The story's bible entries, by kind (in ENTRY_KINDS order), then by name."""
        with self._read() as session:
            self._story_row(session, story_id)
            return self._entries(session, story_id)

    def get_entry(self, entry_id: str) -> BibleEntry:
        with self._read() as session:
            return entry_record(self._entry_row(session, entry_id))

    def add_entry(
        self,
        story_id: str,
        *,
        name: str,
        kind: str,
        aliases: Sequence[str] = (),
        secondary_keys: Sequence[str] = (),
        description: str = "",
        notes: str = "",
        always: bool = False,
        facts: Sequence[FactDraft] = (),
    ) -> BibleEntry:
        """A new entry and its writer-entered (story-wide) facts, in one transaction."""
        draft = check_draft(
            EntryDraft(
                name=name, kind=kind, aliases=tuple(aliases), secondary_keys=tuple(secondary_keys),
                description=description, notes=notes, always=always, facts=tuple(facts),
            )
        )
        with self._write() as session:
            self._lock_story(session, story_id)
            check_names_free(self._entries(session, story_id), (draft.name, *draft.aliases))
            return entry_record(self._insert_draft(session, story_id, draft))

    def update_entry(self, entry_id: str, **fields: object) -> BibleEntry:
        """Change name, kind, aliases, secondary_keys, description, notes or always."""
        _refuse_unknown_fields(fields, EDITABLE_ENTRY_FIELDS, "bible entry")
        with self._write() as session:
            row = self._entry_row(session, entry_id)
            self._lock_story(session, row.story_id)
            draft = edited_draft(entry_record(row), fields)
            check_names_free(
                self._entries(session, row.story_id), (draft.name, *draft.aliases), entry_id=entry_id
            )
            for name in EDITABLE_ENTRY_FIELDS:
                value = getattr(draft, name)
                setattr(row, name, list(value) if isinstance(value, tuple) else value)
            row.updated_at = utcnow()
            session.flush()
            return entry_record(row)

    def remove_entry(self, entry_id: str) -> None:
        """Remove the entry and all its facts, on every branch (ON DELETE CASCADE)."""
        with self._write() as session:
            row = self._entry_row(session, entry_id)
            self._lock_story(session, row.story_id)
            session.execute(delete(BibleEntryRow).where(BibleEntryRow.id == entry_id))

    def import_entries(
        self, story_id: str, drafts: Sequence[EntryDraft], *, replace: bool = False
    ) -> list[BibleEntry]:
        """Add many entries with their facts in one transaction; with `replace`, the story's
        entries (and their facts) go first. All or nothing."""
        cleaned = [check_draft(draft) for draft in drafts]
        check_drafts_apart(cleaned)
        with self._write() as session:
            self._lock_story(session, story_id)
            if replace:
                session.execute(delete(BibleEntryRow).where(BibleEntryRow.story_id == story_id))
            else:
                existing = self._entries(session, story_id)
                for draft in cleaned:
                    check_names_free(existing, (draft.name, *draft.aliases))
            rows = [self._insert_draft(session, story_id, draft) for draft in cleaned]
            return sorted((entry_record(row) for row in rows), key=entry_order)

    # ---- facts ----

    def add_fact(
        self,
        entry_id: str,
        text: str,
        *,
        from_paragraph: int,
        until_paragraph: int | None = None,
        step_id: str | None = None,
    ) -> BibleFact:
        """A fact of the entry; with `step_id`, learned after that paragraph, seen only on
        branches through it, and owned by that step's branch owner."""
        text = check_fact_text(text)
        check_fact_range(from_paragraph, until_paragraph)
        with self._write() as session:
            entry = self._entry_row(session, entry_id)
            owner = None
            if step_id is not None:
                owner = self._step_row(session, step_id, story_id=entry.story_id).branch_owner
            # A reader's branch learning a fact is no author's edit: the library order stays.
            self._lock_story(session, entry.story_id, edited=owner is None)
            row = BibleFactRow(
                id=new_row_id(), story_id=entry.story_id, entry_id=entry_id, text=text,
                from_paragraph=from_paragraph, until_paragraph=until_paragraph,
                step_id=step_id, branch_owner=owner, created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return fact_record(row)

    def end_fact(self, fact_id: str, until_paragraph: int) -> BibleFact:
        """The fact holds through paragraph `until_paragraph` and no further."""
        return self.edit_fact(fact_id, until_paragraph=until_paragraph)

    def edit_fact(self, fact_id: str, **fields: object) -> BibleFact:
        """Change text, from_paragraph or until_paragraph (None: it still holds)."""
        _refuse_unknown_fields(fields, EDITABLE_FACT_FIELDS, "fact")
        with self._write() as session:
            row = self._fact_row(session, fact_id)
            text = check_fact_text(fields["text"]) if "text" in fields else row.text  # type: ignore[arg-type]
            start = fields.get("from_paragraph", row.from_paragraph)
            end = fields.get("until_paragraph", row.until_paragraph)
            check_fact_range(start, end)  # type: ignore[arg-type]
            self._lock_story(session, row.story_id, edited=row.branch_owner is None)
            row.text, row.from_paragraph, row.until_paragraph = text, start, end  # type: ignore[assignment]
            session.flush()
            return fact_record(row)

    def remove_fact(self, fact_id: str) -> None:
        with self._write() as session:
            row = self._fact_row(session, fact_id)
            self._lock_story(session, row.story_id, edited=row.branch_owner is None)
            session.delete(row)

    def facts_on_branch(self, story_id: str, head_step_id: str | None) -> list[BibleFact]:
        """The facts seen on the branch from the root to `head_step_id` (None: before the first
        paragraph, so only story-wide ones). A fact learned after a deleted paragraph is out
        of sight until the paragraph is restored, as its memory is."""
        with self._read() as session:
            self._story_row(session, story_id)
            if head_step_id is None:
                rows = session.scalars(
                    select(BibleFactRow)
                    .where(BibleFactRow.story_id == story_id, BibleFactRow.step_id.is_(None))
                    .order_by(*_FACT_ORDER)
                )
            else:
                self._step_row(session, head_step_id, story_id=story_id)
                rows = session.scalars(FACTS_ON_BRANCH, branch_parameters(story_id, head_step_id))
            return [fact_record(row) for row in rows]

    def entry_facts(self, entry_id: str) -> list[BibleFact]:
        """Every fact of the entry, on every branch (readers' too), in `facts_on_branch` order."""
        with self._read() as session:
            self._entry_row(session, entry_id)
            rows = session.scalars(
                select(BibleFactRow).where(BibleFactRow.entry_id == entry_id).order_by(*_FACT_ORDER)
            )
            return [fact_record(row) for row in rows]

    def restore_entry(self, entry: BibleEntry, facts: Sequence[BibleFact] = ()) -> BibleEntry:
        """Put back an entry that `remove_entry` removed, with its facts, ids and times as they
        were, in one transaction (the undo of a removal); its names must still be free."""
        with self._write() as session:
            self._lock_story(session, entry.story_id)
            if session.get(BibleEntryRow, entry.id) is not None:
                raise BibleError(
                    f"The {entry.kind} {entry.name!r} is in the story's bible already, so nothing "
                    "was changed; there is nothing to put back."
                )
            check_names_free(self._entries(session, entry.story_id), entry.names)
            row = BibleEntryRow(
                id=entry.id, story_id=entry.story_id, kind=entry.kind, name=entry.name,
                aliases=list(entry.aliases), secondary_keys=list(entry.secondary_keys),
                description=entry.description, notes=entry.notes, always=entry.always,
                created_at=entry.created_at, updated_at=entry.updated_at,
            )
            session.add(row)
            session.flush()  # the entry first: the facts' key refers to it
            session.add_all(_restored_fact_row(fact, entry.story_id) for fact in facts)
            session.flush()
            return entry_record(row)

    def restore_fact(self, fact: BibleFact) -> BibleFact:
        """Put back a fact that `remove_fact` removed, id and all (the undo of a removal)."""
        with self._write() as session:
            entry = self._entry_row(session, fact.entry_id)
            self._lock_story(session, entry.story_id, edited=fact.branch_owner is None)
            if session.get(BibleFactRow, fact.id) is not None:
                raise BibleError(
                    f"The fact {fact.text!r} is in the story's bible already, so nothing was "
                    "changed; there is nothing to put back."
                )
            row = _restored_fact_row(fact, entry.story_id)
            session.add(row)
            session.flush()
            return fact_record(row)

    # ---- proposed updates ----

    def keep_proposed_updates(self, story_id: str, updates: Sequence[KeptUpdate]) -> None:
        if not updates:
            return
        with self._write() as session:
            self._story_row(session, story_id)
            now = utcnow()
            session.add_all(
                ProposedBibleUpdateRow(
                    id=kept.id, story_id=story_id, step_id=kept.step_id, arrived_at=now, arrival=index,
                    update=kept.update, decision=None, problem=kept.problem,
                )
                for index, kept in enumerate(updates)
            )

    def decide_proposed_update(self, update_id: str, decision: str | None, problem: str | None = None) -> None:
        if decision not in (None, "accepted", "rejected"):
            raise InvalidInput(f"A proposed update is accepted or rejected, not {decision!r}; nothing was changed.")
        with self._write() as session:
            row = self._row(session, ProposedBibleUpdateRow, update_id, "proposed bible update",
                            "reopen the story to see the updates that wait")
            row.decision, row.problem = decision, problem

    def waiting_updates(self, story_id: str, head_step_id: str | None) -> list[KeptUpdate]:
        with self._read() as session:
            self._story_row(session, story_id)
            if head_step_id is None:
                rows = session.scalars(
                    select(ProposedBibleUpdateRow)
                    .where(ProposedBibleUpdateRow.story_id == story_id, ProposedBibleUpdateRow.decision.is_(None),
                           ProposedBibleUpdateRow.step_id.is_(None))
                    .order_by(ProposedBibleUpdateRow.arrived_at, ProposedBibleUpdateRow.arrival)
                )
            else:
                self._step_row(session, head_step_id, story_id=story_id)
                rows = session.scalars(WAITING_ON_BRANCH, branch_parameters(story_id, head_step_id))
            return [KeptUpdate(row.id, row.step_id, row.update, row.problem) for row in rows]

    # ---- chapters ----

    def list_chapters(self, story_id: str) -> list[Chapter]:
        """Every chapter of the story, on any branch, oldest first."""
        with self._read() as session:
            self._story_row(session, story_id)
            rows = session.scalars(
                select(ChapterRow)
                .where(ChapterRow.story_id == story_id)
                .order_by(ChapterRow.created_at, ChapterRow.id)
            )
            return [chapter_record(row) for row in rows]

    def get_chapter(self, chapter_id: str) -> Chapter:
        with self._read() as session:
            return chapter_record(self._chapter_row(session, chapter_id))

    def add_chapter(
        self,
        story_id: str,
        *,
        title: str,
        summary: str = "",
        start_step_id: str | None = None,
        closed: bool = False,
    ) -> Chapter:
        """A chapter starting at `start_step_id` (None: the story's start)."""
        now = utcnow()
        with self._write() as session:
            self._lock_story(session, story_id)
            self._check_chapter_start(session, story_id, start_step_id)
            row = ChapterRow(
                id=new_row_id(), story_id=story_id, title=str(title).strip(),
                summary=str(summary).strip(), start_step_id=start_step_id, closed=bool(closed),
                created_at=now, updated_at=now,
            )
            session.add(row)
            session.flush()
            return chapter_record(row)

    def update_chapter(self, chapter_id: str, **fields: object) -> Chapter:
        """Change title, summary, start_step_id or closed."""
        _refuse_unknown_fields(fields, EDITABLE_CHAPTER_FIELDS, "chapter")
        with self._write() as session:
            row = self._chapter_row(session, chapter_id)
            self._lock_story(session, row.story_id)
            if "start_step_id" in fields and fields["start_step_id"] != row.start_step_id:
                self._check_chapter_start(session, row.story_id, fields["start_step_id"])  # type: ignore[arg-type]
                row.start_step_id = fields["start_step_id"]  # type: ignore[assignment]
            for name in ("title", "summary"):
                if name in fields:
                    setattr(row, name, str(fields[name]).strip())
            if "closed" in fields:
                row.closed = bool(fields["closed"])
            row.updated_at = utcnow()
            session.flush()
            return chapter_record(row)

    def remove_chapter(self, chapter_id: str) -> None:
        with self._write() as session:
            row = self._chapter_row(session, chapter_id)
            self._lock_story(session, row.story_id)
            session.delete(row)

    def chapters_on_branch(self, story_id: str, head_step_id: str | None) -> list[tuple[Chapter, int]]:
        """The chapters that start on the branch ending at `head_step_id`, in story order, each
        with the number of its first paragraph (1-based; one past the last for an empty one).

        A chapter that starts at a deleted paragraph stays, starting at the next live one.
        """
        with self._read() as session:
            self._story_row(session, story_id)
            walk = []
            if head_step_id is not None:
                self._step_row(session, head_step_id, story_id=story_id)
                walk = session.connection().execute(
                    WHOLE_BRANCH, branch_parameters(story_id, head_step_id)
                ).all()
            first_paragraph: dict[str | None, tuple[int, int]] = {None: (-1, 1)}
            live_before = 0
            for position, (step_id, deleted) in enumerate(walk):
                first_paragraph[step_id] = (position, live_before + 1)
                live_before += not deleted
            rows = session.scalars(
                select(ChapterRow)
                .where(ChapterRow.story_id == story_id)
                .order_by(ChapterRow.created_at, ChapterRow.id)
            )
            placed = [
                (first_paragraph[row.start_step_id], chapter_record(row))
                for row in rows
                if row.start_step_id in first_paragraph
            ]
        placed.sort(key=lambda item: item[0][0])  # stable: NULL starts keep their age order
        return [(chapter, number) for (_position, number), chapter in placed]

    # ---- helpers ----

    def _entries(self, session: Session, story_id: str) -> list[BibleEntry]:
        rows = session.scalars(select(BibleEntryRow).where(BibleEntryRow.story_id == story_id))
        return sorted((entry_record(row) for row in rows), key=entry_order)

    def _insert_draft(self, session: Session, story_id: str, draft: EntryDraft) -> BibleEntryRow:
        now = utcnow()
        row = BibleEntryRow(
            id=new_row_id(), story_id=story_id, kind=draft.kind, name=draft.name,
            aliases=list(draft.aliases), secondary_keys=list(draft.secondary_keys),
            description=draft.description, notes=draft.notes, always=draft.always,
            created_at=now, updated_at=now,
        )
        session.add(row)
        session.flush()  # the entry first: the facts' key refers to it
        session.add_all(
            BibleFactRow(
                id=new_row_id(), story_id=story_id, entry_id=row.id, text=fact.text,
                from_paragraph=fact.from_paragraph, until_paragraph=fact.until_paragraph,
                step_id=None, branch_owner=None,
                # A microsecond apart: facts are listed in the order they were given.
                created_at=now + timedelta(microseconds=index),
            )
            for index, fact in enumerate(draft.facts)
        )
        session.flush()
        return row

    def _lock_story(self, session: Session, story_id: str, *, edited: bool = True) -> None:
        # One UPDATE: it takes the story row's write lock on PostgreSQL, so bible writers of a
        # story queue (as step writers do, see SqlStories._bump_memory_version).
        values = {"updated_at": utcnow()} if edited else {"readable": StoryRow.readable}
        locked = session.execute(update(StoryRow).where(StoryRow.id == story_id).values(**values))
        if locked.rowcount == 0:
            raise self._story_not_found(story_id)

    def _check_chapter_start(self, session: Session, story_id: str, start_step_id: str | None) -> None:
        if start_step_id is not None:
            self._step_row(session, start_step_id, story_id=story_id)
        taken = session.scalar(
            select(ChapterRow.title).where(
                ChapterRow.story_id == story_id,
                ChapterRow.start_step_id.is_(None)
                if start_step_id is None
                else ChapterRow.start_step_id == start_step_id,
            ).limit(1)
        )
        if taken is not None:
            raise InvalidInput(
                f"The chapter {taken!r} already starts at that paragraph, so nothing was changed; "
                "start the new chapter at another paragraph, or edit that one."
            )

    def _entry_row(self, session: Session, entry_id: str) -> BibleEntryRow:
        return self._row(session, BibleEntryRow, entry_id, "bible entry", "list the story's bible to see its entries")

    def _fact_row(self, session: Session, fact_id: str) -> BibleFactRow:
        return self._row(session, BibleFactRow, fact_id, "bible fact", "list the story's bible to see its facts")

    def _chapter_row(self, session: Session, chapter_id: str) -> ChapterRow:
        return self._row(session, ChapterRow, chapter_id, "chapter", "reopen the story to see its chapters",
                         error=InvalidInput)

    def _row(self, session: Session, row_class: type[RowT], row_id: str, what: str, see: str,
             error: type[InvalidInput] = BibleError) -> RowT:
        row = session.get(row_class, row_id)
        if row is None:
            raise error(f"No {what} with id {row_id!r} in {self._location}, so nothing was changed; {see}.")
        return row


def _restored_fact_row(fact: BibleFact, story_id: str) -> BibleFactRow:
    return BibleFactRow(
        id=fact.id, story_id=story_id, entry_id=fact.entry_id, text=fact.text,
        from_paragraph=fact.from_paragraph, until_paragraph=fact.until_paragraph,
        step_id=fact.step_id, branch_owner=fact.branch_owner, created_at=fact.created_at,
    )


def _refuse_unknown_fields(fields: dict, editable: frozenset[str], what: str) -> None:
    unknown = sorted(set(fields) - editable)
    if unknown:
        raise BibleError(
            f"A {what} has no editable field {unknown[0]!r}, so nothing was changed; "
            f"change one of {', '.join(sorted(editable))}."
        )


# ---- rows to engine types ---------------------------------------------------------------


def entry_record(row: BibleEntryRow) -> BibleEntry:
    return BibleEntry(
        id=row.id, story_id=row.story_id, kind=row.kind,  # type: ignore[arg-type]
        name=row.name, aliases=tuple(row.aliases), secondary_keys=tuple(row.secondary_keys),
        description=row.description, notes=row.notes, always=row.always,
        created_at=row.created_at, updated_at=row.updated_at,
    )


def fact_record(row: BibleFactRow) -> BibleFact:
    return BibleFact(
        id=row.id, entry_id=row.entry_id, text=row.text, from_paragraph=row.from_paragraph,
        until_paragraph=row.until_paragraph, step_id=row.step_id, branch_owner=row.branch_owner,
        created_at=row.created_at,
    )


def chapter_record(row: ChapterRow) -> Chapter:
    return Chapter(
        id=row.id, story_id=row.story_id, title=row.title, summary=row.summary,
        start_step_id=row.start_step_id, closed=row.closed,
        created_at=row.created_at, updated_at=row.updated_at,
    )

"""The story bible as a writer changes it, and the updates the model proposes for it.

Every change (an entry added, edited, pinned or removed; an update accepted or rejected) is
one undoable step of the writer's history, in the order made, beside the paragraphs and
edits (see `history`). The writes themselves, each checked before the first, are in
`bible_writes`, which `longyarn bible` uses too.

Proposed updates (new entries, new facts, facts that end) wait in `pending` for the writer
to accept, edit or reject each, unless `auto_accept` is on (batch: always). An accepted
update is applied through the same undoable path; undoing it puts it back in the queue. The
store keeps the queue and what was decided of each update, so quitting loses none of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, TypeVar

from longyarn.recurrent_core.bible import (
    BibleEntry,
    BibleFact,
    EntryDraft,
    FactDraft,
    KeptUpdate,
    facts_by_entry,
    find_entry,
    name_key,
)
from longyarn.recurrent_core.errors import BibleError, LongyarnError
from longyarn.recurrent_core.store import StoryStore

from .bible_writes import (
    BibleWrite,
    EntryEdit,
    check_entry_edit,
    redo_writes,
    undo_writes,
    write_entry_edit,
    write_new_entry,
    write_removal,
)
from .history import Change, History

T = TypeVar("T")
UpdateKind = Literal["new_entry", "new_fact", "end_fact"]


@dataclass(frozen=True)
class BibleChange(Change):
    """A change to the bible or to its waiting updates: what the bible's screens may undo."""


@dataclass(frozen=True)
class BibleView:
    """The bible as the writer sees it at the head: entries, and the facts on the branch."""

    entries: list[BibleEntry]
    facts: list[BibleFact]
    paragraphs: int  # paragraphs on the branch (0: none yet)

    @property
    def paragraph(self) -> int:
        """The paragraph facts are shown "in force" at: the newest (the first, before any)."""
        return max(1, self.paragraphs)

    @cached_property
    def _facts_by_entry(self) -> dict[str, list[BibleFact]]:
        return facts_by_entry(self.facts)  # grouped once: the panel asks for every entry's

    def facts_of(self, entry: BibleEntry) -> list[BibleFact]:
        return self._facts_by_entry.get(entry.id, [])


@dataclass(frozen=True)
class BibleUpdate:
    """A change to the bible that the model proposed after a paragraph, waiting for the writer.

    - "new_entry": `entry` (with its facts);
    - "new_fact": the fact `text` of the entry named `entry_name`, from `from_paragraph`
      (default: the paragraph it came from) through `until_paragraph`, if given;
    - "end_fact": the entry's fact `text` ends at `until_paragraph` (default: its paragraph).
    Facts it adds are learned after `step_id`, so only branches through that paragraph see them.
    """

    kind: UpdateKind
    entry_name: str
    entry: EntryDraft | None = None
    text: str = ""
    from_paragraph: int | None = None
    until_paragraph: int | None = None
    step_id: str | None = None  # the paragraph it came from
    paragraph: int = 0  # that paragraph's number (0: not known)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def describe(self) -> str:
        """What it does, as "a new character, 'Tobias'" or "a fact of 'Mara': ..."."""
        if self.kind == "new_entry" and self.entry is not None:
            facts = len(self.entry.facts)
            with_facts = f" with {facts} fact{'s' if facts != 1 else ''}" if facts else ""
            return f"a new {self.entry.kind}, {self.entry.name!r}{with_facts}"
        if self.kind == "new_fact":
            return f"a fact of {self.entry_name!r}: {self.text}"
        return f"the end of {self.entry_name!r}'s fact {self.text!r} at paragraph {self.ends_at}"

    @property
    def starts_at(self) -> int:
        return self.from_paragraph or self.paragraph or 1

    @property
    def ends_at(self) -> int | None:
        if self.kind == "end_fact":
            return self.until_paragraph or self.paragraph or 1
        return self.until_paragraph


class StoryBible:
    """One writer's changes to one story's bible, each recorded in `history` as it is made."""

    def __init__(
        self,
        store: StoryStore,
        story_id: str,
        history: History,
        where: Callable[[], tuple[str | None, int]],
        *,
        auto_accept: bool,
        keep_queue: bool = True,
    ) -> None:
        """`where()` says where the writer is: (the head step's id, paragraphs on the branch).
        With `keep_queue`, the store keeps the waiting updates (see `load_queue`)."""
        self.store = store
        self.story_id = story_id
        self.history = history
        self.where = where
        self.auto_accept = auto_accept
        self.keep_queue = keep_queue
        self.pending: list[BibleUpdate] = []
        self.problems: dict[str, str] = {}  # an update's id: why it could not be accepted
        self._listeners: list[Callable[[], None]] = []

    # ---- who hears of changes ----

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after every change, undo and redo of the bible or its queue; returns
        the call that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    # ---- reading ----

    async def read(self) -> BibleView:
        head, paragraphs = self.where()

        def read() -> BibleView:
            entries = self.store.list_entries(self.story_id)
            return BibleView(entries, self.store.facts_on_branch(self.story_id, head), paragraphs)

        return await asyncio.to_thread(read)

    # ---- the writer's changes ----

    async def add_entry(self, draft: EntryDraft) -> BibleEntry:
        """A new entry with its (story-wide) facts; `BibleError` if a name is taken."""
        return await self._apply(
            f"adding the {draft.kind.strip().lower()} {' '.join(draft.name.split())!r}",
            lambda done: write_new_entry(self.store, self.story_id, draft, done),
        )

    async def edit_entry(self, entry: BibleEntry, edit: EntryEdit) -> BibleEntry:
        """Change the entry's fields and facts in one step, every part checked before the first
        write; `BibleError` (nothing changed) for the first problem."""

        def write(done: list[BibleWrite]) -> BibleEntry:
            check_entry_edit(self.store.list_entries(self.story_id), entry, edit)
            return write_entry_edit(self.store, entry, edit, done)

        return await self._apply(f"the edit of the {entry.kind} {entry.name!r}", write)

    async def set_always(self, entry: BibleEntry, always: bool) -> BibleEntry:
        """Pin the entry to every prompt, or unpin it."""
        what = f"pinning {entry.name!r} to every prompt" if always else f"unpinning {entry.name!r}"

        def write(done: list[BibleWrite]) -> BibleEntry:
            stored = self.store.get_entry(entry.id)  # as stored: a second press changes nothing
            if stored.always == always:
                return stored
            return write_entry_edit(self.store, stored, EntryEdit({"always": always}), done)

        return await self._apply(what, write)

    async def remove_entry(self, entry: BibleEntry) -> None:
        """Remove the entry and its facts on every branch (undo puts them all back)."""
        await self._apply(
            f"removing the {entry.kind} {entry.name!r}", lambda done: write_removal(self.store, entry, done)
        )

    async def _apply(self, description: str, write: Callable[[list[BibleWrite]], T]) -> T:
        """Run `write` in a thread and record what it wrote as one change, even when it failed
        part way (so undo can take back the part)."""
        done: list[BibleWrite] = []
        try:
            return await asyncio.to_thread(write, done)
        finally:
            if done:
                self.history.record(self._change(description, done))
                self._changed()

    def _change(
        self, description: str, writes: Sequence[BibleWrite], *,
        undo_also: Callable[[], Awaitable[None]] | None = None, redo_also: Callable[[], Awaitable[None]] | None = None,
    ) -> BibleChange:
        async def undo() -> None:
            await asyncio.to_thread(undo_writes, self.store, writes)
            if undo_also is not None:
                await undo_also()
            self._changed()

        async def redo() -> None:
            await asyncio.to_thread(redo_writes, self.store, writes)
            if redo_also is not None:
                await redo_also()
            self._changed()

        return BibleChange(description, undo=undo, redo=redo)

    # ---- undo and redo from the bible's screens ----

    def can_undo(self) -> bool:
        """Whether the newest change of the writer's history is a change to the bible."""
        return isinstance(self.history.next_undo(), BibleChange)

    def can_redo(self) -> bool:
        return isinstance(self.history.next_redo(), BibleChange)

    def newest_change(self) -> str | None:
        """What undo would take back now, if anything (it may be no bible change)."""
        change = self.history.next_undo()
        return change.description if change else None

    async def undo(self) -> str | None:
        """Undo the newest change if it is the bible's; what was undone."""
        if not self.can_undo():
            return None
        change = await self.history.undo()
        return change.description if change else None

    async def redo(self) -> str | None:
        if not self.can_redo():
            return None
        change = await self.history.redo()
        return change.description if change else None

    # ---- proposed updates ----

    async def load_queue(self) -> None:
        """Read the waiting updates the store keeps for the branch the writer is on (an update
        the store cannot read back, written by another version, is left where it is)."""
        if not self.keep_queue:
            return
        head, _ = self.where()
        kept = await asyncio.to_thread(self.store.waiting_updates, self.story_id, head)
        pending, problems = [], {}
        for record in kept:
            update = update_from_json(record.update)
            if update is None:
                continue
            pending.append(update)
            if record.problem:
                problems[update.id] = record.problem
        self.pending, self.problems = pending, problems
        self._changed()

    async def propose(self, updates: Iterable[BibleUpdate]) -> None:
        """Updates the model proposed: they wait for the writer, or, with `auto_accept`, are
        accepted at once (one that cannot be stays waiting, with its problem in `problems`)."""
        arrived = list(updates)
        if not arrived:
            return
        await self._store_waiting(arrived)
        self.pending.extend(arrived)
        self._changed()
        if self.auto_accept:
            await self.accept_all(arrived)

    async def keep_for_later(self, updates: Sequence[BibleUpdate]) -> None:
        """Updates of a paragraph off the writer's branch (a version not chosen): kept waiting
        for when the writer turns to it, not shown before."""
        await self._store_waiting(updates)

    async def _store_waiting(self, updates: Sequence[BibleUpdate]) -> None:
        if self.keep_queue and updates:
            kept = [KeptUpdate(update.id, update.step_id, update_json(update)) for update in updates]
            await asyncio.to_thread(self.store.keep_proposed_updates, self.story_id, kept)

    async def accept_all(self, updates: Iterable[BibleUpdate] | None = None) -> int:
        """Accept each waiting update (or each of `updates`), each its own undoable step; how
        many were accepted. Those that cannot be stay, with their problems."""
        accepted = 0
        for update in list(self.pending if updates is None else updates):
            try:
                await self.accept(update)
            except Exception:  # noted in `problems`; the others go on
                continue
            accepted += 1
        return accepted

    async def accept(self, update: BibleUpdate, edited: BibleUpdate | None = None) -> None:
        """Apply `update`, or the writer's edit of it, as one undoable step; it leaves the queue.
        On a problem it stays, `problems` says why, and the error goes on (nothing changed)."""
        if update not in self.pending:
            raise BibleError(
                "That update no longer waits (it was accepted or rejected already), so nothing "
                "was changed."
            )
        chosen = edited or update
        done: list[BibleWrite] = []

        def write() -> None:
            self._write_update(chosen, done)
            self._decide(update, "accepted")

        try:
            await asyncio.to_thread(write)
        except Exception as error:
            if done:  # a failure part way: take the part back, so the update waits as it came
                await asyncio.to_thread(undo_writes, self.store, done)
            self.problems[update.id] = _sentence(error)
            await self._decide_quietly(update, None, self.problems[update.id])
            self._changed()
            raise
        index = self.pending.index(update)
        self.pending.remove(update)
        self.problems.pop(update.id, None)

        async def undone() -> None:
            await asyncio.to_thread(self._decide, update, None)
            self._put_back(update, index)

        async def redone() -> None:
            await asyncio.to_thread(self._decide, update, "accepted")
            self._take_out(update)

        self.history.record(self._change(f"accepting {chosen.describe()}", done, undo_also=undone, redo_also=redone))
        self._changed()

    async def reject(self, update: BibleUpdate) -> None:
        """Drop a waiting update (an undoable step: undo puts it back in the queue)."""
        if update not in self.pending:
            return
        index = self.pending.index(update)
        await asyncio.to_thread(self._decide, update, "rejected")
        self._take_out(update)

        async def undo() -> None:
            await asyncio.to_thread(self._decide, update, None)
            self._put_back(update, index)
            self._changed()

        async def redo() -> None:
            await asyncio.to_thread(self._decide, update, "rejected")
            self._take_out(update)
            self._changed()

        self.history.record(BibleChange(f"rejecting {update.describe()}", undo=undo, redo=redo))
        self._changed()

    def _decide(self, update: BibleUpdate, decision: str | None, problem: str | None = None) -> None:
        """Record in the store what became of `update` (in a thread)."""
        if self.keep_queue:
            self.store.decide_proposed_update(update.id, decision, problem)

    async def _decide_quietly(self, update: BibleUpdate, decision: str | None, problem: str | None) -> None:
        """`_decide`, for a problem already being told: a second failure adds nothing to say."""
        try:
            await asyncio.to_thread(self._decide, update, decision, problem)
        except Exception:  # the first failure goes on to the writer
            pass

    def _put_back(self, update: BibleUpdate, index: int) -> None:
        if update not in self.pending:
            self.pending.insert(min(index, len(self.pending)), update)

    def _take_out(self, update: BibleUpdate) -> None:
        if update in self.pending:
            self.pending.remove(update)
        self.problems.pop(update.id, None)

    def _write_update(self, update: BibleUpdate, done: list[BibleWrite]) -> None:
        """Check the update against the bible as stored, then write it (in a thread)."""
        if update.kind == "new_entry":
            if update.entry is None:
                raise BibleError("The proposed entry has no name or kind, so nothing was changed; reject it.")
            write_new_entry(self.store, self.story_id, update.entry, done, step_id=update.step_id)
            return
        entries = self.store.list_entries(self.story_id)
        try:
            entry = find_entry(entries, update.entry_name)
        except BibleError:
            raise BibleError(
                f"The story bible has no entry called {update.entry_name.strip()!r}, so nothing was "
                "changed; edit the update to name one of its entries, or reject it."
            ) from None
        if update.kind == "new_fact":
            edit = EntryEdit(added=(FactDraft(update.text, update.starts_at, update.until_paragraph),))
        else:
            edit = EntryEdit(changed=((self._fact_named(entry, update.text), {"until_paragraph": update.ends_at}),))
        check_entry_edit(entries, entry, edit)
        write_entry_edit(self.store, entry, edit, done, step_id=update.step_id)

    def _fact_named(self, entry: BibleEntry, text: str) -> BibleFact:
        head, _ = self.where()
        wanted = name_key(text)
        for fact in self.store.facts_on_branch(self.story_id, head):
            if fact.entry_id == entry.id and name_key(fact.text) == wanted:
                return fact
        raise BibleError(
            f"{entry.name!r} has no fact {text.strip()!r} on this branch, so nothing was changed; "
            "edit the update, or reject it."
        )


def update_json(update: BibleUpdate) -> dict:
    """The update as the store keeps it while it waits (`update_from_json` reads it back)."""
    return dataclasses.asdict(update)


def update_from_json(data: dict) -> BibleUpdate | None:
    """The update kept as `update_json` wrote it; None for one it cannot read."""
    try:
        entry = data.get("entry")
        draft = None
        if entry is not None:
            draft = EntryDraft(**{
                **entry, "aliases": tuple(entry["aliases"]), "secondary_keys": tuple(entry["secondary_keys"]),
                "facts": tuple(FactDraft(**fact) for fact in entry["facts"]),
            })
        return BibleUpdate(**{**data, "entry": draft})
    except (AttributeError, KeyError, TypeError):
        return None


def pending_label(count: int) -> str:
    return f"{count} bible update{'s' if count != 1 else ''} wait{'s' if count == 1 else ''}"


def _sentence(error: Exception) -> str:
    """One sentence for a failure (the UI's own wording is not the session's to import)."""
    if isinstance(error, LongyarnError):
        return str(error)
    cause = getattr(error, "orig", None) or error
    return f"The update could not be stored ({cause}), so nothing was changed; it waits; try again."


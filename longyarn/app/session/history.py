"""The writer's history: every change they make to a story, in the order made, undone and redone
one at a time.

A change is anything the writer did: a paragraph written (or a version of one), a move between
versions, a paragraph deleted or edited, the outline, the short-term memory, a long-term memory's
pin or exclusion, the author's note. Each knows how to undo and redo itself against the store;
none deletes anything (a deleted paragraph is hidden, a moved head leaves its steps), so undo
and redo are always possible. A new change after an undo ends the way forward, as in any editor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Apply = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Change:
    """One change: what to call it ("the deletion of paragraph 5"), and how to undo and redo it."""

    description: str
    undo: Apply
    redo: Apply


class History:
    """The changes made in a writing session, newest last, and those undone, ready to redo."""

    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self._done: list[Change] = []
        self._undone: list[Change] = []

    def record(self, change: Change) -> None:
        """A new change: it can be undone; what was undone before it can no longer be redone."""
        self._done.append(change)
        del self._done[: -self.limit]
        self._undone.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def next_undo(self) -> Change | None:
        return self._done[-1] if self._done else None

    def next_redo(self) -> Change | None:
        return self._undone[-1] if self._undone else None

    async def undo(self) -> Change | None:
        """Undo the newest change (it stays in the history if undoing it fails)."""
        change = self.next_undo()
        if change is None:
            return None
        await change.undo()
        # By itself, not by place: a change recorded while this one was undone (a paragraph of
        # Keep writing landing, an accepted bible update) stays done.
        if change in self._done:
            self._done.remove(change)
        self._undone.append(change)
        return change

    async def redo(self) -> Change | None:
        """Redo the change undone last (it stays ready to redo if redoing it fails)."""
        change = self.next_redo()
        if change is None:
            return None
        await change.redo()
        if change in self._undone:
            self._undone.remove(change)
        self._done.append(change)
        return change

    async def undo_outside(self, change: Change) -> None:
        """Undo a change made before this history began (say, a paragraph written in an earlier
        session), so that redo brings it back."""
        await change.undo()
        self._undone.append(change)

    async def redo_outside(self, change: Change) -> None:
        """Redo a change undone before this history began, so that undo takes it back."""
        await change.redo()
        self._done.append(change)

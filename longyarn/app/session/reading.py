"""One reader in one story: their path, the choices in front of them, and the next paragraph.

`ReadingSession` holds no UI: the terminal app, the browser sessions and the tests drive it.

How a reader moves through the story tree
-----------------------------------------
A reader's position is a step. What they read is the branch from the story's first paragraph
to that step; what they can do next is computed from it:

- Existing continuations come first: the step's children that the reader may see (the
  author's, and the reader's own from earlier visits; never another reader's). Children with
  the same instruction (an author's retries) count once, preferring the author's main line.
- If the author lets readers extend the story (`reader_may_extend`), the step's three
  candidate instructions that no child followed yet are offered too, and so is a free-text
  action; taking one generates a new paragraph on the reader's own branch
  (`branch_owner` = the reader's id, `move_head=False`: the author's head never moves).
- Otherwise the reader follows written paragraphs only; where the author stopped, the story
  ends for now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncContextManager, AsyncIterator, Callable

from longyarn.recurrent_core.engine import Engine
from longyarn.recurrent_core.errors import StoryNotFound
from longyarn.recurrent_core.readers import BOOKMARK, SLOT, Reader, ReaderPlace, StoryAndReaderStore
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Step, StepCompleted, StepEvent, Story

from .bible_learning import learn_on_own_branch
from .reader_errors import (
    CannotExtend,
    ChoiceOutdated,
    MoveInFlight,
    NothingToSave,
    PlaceGone,
    ReaderProblem,
    ReaderRateLimited,
    StoryClosed,
)
from .reader_text import (
    DEFAULT_ACTION_CHARS,
    as_reader_choice,
    clean_action,
    same_instruction,
    strip_control_characters,
)

DEFAULT_STEPS_PER_MINUTE = 6
RATE_WINDOW_S = 60.0
# A move's claim lives this long unless the process writing it renews it (a third of it at a
# time); a process killed mid-paragraph frees the reader to move again after at most this.
DEFAULT_MOVE_LEASE_S = 30.0

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Engine]
# Waits for a turn to write (the web reader's bound on steps at once); entered after the move
# is claimed and held until the paragraph is stored.
Turn = Callable[[], AsyncContextManager[object]]


@dataclass(frozen=True)
class Choice:
    """One option under "What happens next?".

    `step_id` is an existing paragraph the choice leads to (reading it needs no model);
    None means choosing it writes a new paragraph that follows `instruction`.
    """

    label: str
    instruction: str | None
    step_id: str | None = None

    @property
    def writes(self) -> bool:
        return self.step_id is None


BEGIN_LABEL = "Begin the story"
_PLACE_CHANGED = (
    "Your place in this story changed since that page was shown (in another tab or window, "
    "perhaps); nothing was written; here is where you are now: choose again."
)


class ReadingSession:
    """A reader's way through one story; every change of place is saved at once."""

    def __init__(
        self,
        store: StoryAndReaderStore,
        reader: Reader,
        story_id: str,
        *,
        engine_factory: EngineFactory | None = None,
        steps_per_minute: int = DEFAULT_STEPS_PER_MINUTE,
        action_chars: int = DEFAULT_ACTION_CHARS,
        move_lease_s: float = DEFAULT_MOVE_LEASE_S,
    ) -> None:
        self.store = store
        self.move_lease_s = move_lease_s
        self.reader = reader
        self.story_id = story_id
        self.engine_factory = engine_factory
        self.steps_per_minute = steps_per_minute
        self.action_chars = action_chars
        self.story: Story = readable_story(store, story_id)
        self.position: Step | None = None
        self.path: list[Step] = []
        self._engine: Engine | None = None

    # ---- where the reader is ----

    def open(self) -> None:
        """Resume where the reader left off, or start at the story's first paragraph."""
        try:
            opening = self.store.reader_opening(self.reader.id, self.story_id)  # one snapshot
        except StoryNotFound:
            raise _story_closed() from None
        self.story = _open_to_readers(opening.story)
        saved = opening.saved
        if saved is not None and saved.step_id is None:
            self.position, self.path = None, []
            return
        if saved is not None:
            # Read only: a page view must not write (a web reader opens the story on every page).
            path = opening.path
            if path and path[-1].id == saved.step_id and all(
                step.branch_owner in (None, self.reader.id) for step in path
            ):
                self.position, self.path = path[-1], path
                return
            start = self._first_paragraph()  # the author deleted that paragraph: from the top
        else:
            start = opening.start
        # The first paragraph of a line has no live paragraph before it.
        self.position, self.path = start, [start] if start else []
        self._save_position()

    def go_to(self, step_id: str | None) -> None:
        """Move to a paragraph the reader may see (a save slot, a bookmark, a choice).

        Raises `PlaceGone` if it is not in the story, or not the reader's to see.
        """
        try:
            self.store.set_reader_position(self.reader.id, self.story_id, step_id)
        except StoryNotFound:
            raise PlaceGone(
                "That paragraph is no longer in the story; you are still where you were; "
                "choose another place."
            ) from None
        self._show(self.store.get_step(step_id) if step_id else None)

    def back(self) -> bool:
        """Step back one paragraph, to choose differently; False at the first one."""
        if self.position is None or self.position.parent_id is None:
            return False
        self.go_to(self.position.parent_id)
        return True

    def _first_paragraph(self) -> Step | None:
        author_line = self.store.branch(self.story_id)
        if author_line:
            return author_line[0]
        roots = self.store.reader_children(self.story_id, None, self.reader.id)
        return roots[0] if roots else None

    def _show(self, step: Step | None) -> None:
        self.position = step
        self.path = self.store.branch(self.story_id, step.id) if step else []
        self.story = readable_story(self.store, self.story_id)

    def _save_position(self) -> None:
        self.store.set_reader_position(
            self.reader.id, self.story_id, self.position.id if self.position else None
        )

    # ---- what can happen next ----

    @property
    def may_extend(self) -> bool:
        """Whether the author lets readers have new paragraphs written for them."""
        return self.story.reader_may_extend

    def choices(self) -> list[Choice]:
        """The options after the current paragraph, existing continuations first."""
        parent_id = self.position.id if self.position else None
        children = self.store.reader_children(self.story_id, parent_id, self.reader.id)
        # The author's main line first, then the author's other versions, then the reader's;
        # the main line decides an order only among two or more of the author's.
        main_line: set[str] = set()
        if sum(1 for step in children if step.branch_owner is None) > 1:
            main_line = set(self.store.branch_step_ids(self.story_id))
        children.sort(key=lambda step: (step.id not in main_line, step.branch_owner is not None))
        choices: list[Choice] = []
        for child in children:
            if not any(same_instruction(child.instruction, c.instruction or "") for c in choices):
                choices.append(Choice(as_reader_choice(child.instruction), child.instruction, child.id))
        if not self.may_extend:
            return choices
        if self.position is None:
            if not choices:
                choices.append(Choice(BEGIN_LABEL, None))
            return choices
        for candidate in self.position.next_instructions:
            if not any(same_instruction(candidate, c.instruction or "") for c in choices):
                choices.append(Choice(as_reader_choice(candidate), candidate))
        return choices

    @property
    def at_the_end(self) -> bool:
        """Nothing follows for this reader: the author stopped here and readers cannot extend."""
        return not self.choices()

    # ---- moving on ----

    def choice_at(self, index: int, after_step_id: str | None) -> Choice:
        """The choice numbered `index` (from 0) as the reader saw it after `after_step_id`.

        Raises `ChoiceOutdated` if the reader has moved since (another tab or window), or if
        there is no such choice now.
        """
        self.check_place(after_step_id)
        choices = self.choices()
        if not 0 <= index < len(choices):
            raise ChoiceOutdated(_PLACE_CHANGED)
        return choices[index]

    def check_place(self, after_step_id: str | None) -> None:
        """Raise `ChoiceOutdated` unless the reader is still after `after_step_id`, the
        paragraph the page they act from was showing."""
        if after_step_id != (self.position.id if self.position else None):
            raise ChoiceOutdated(_PLACE_CHANGED)

    async def choose(self, choice: Choice) -> AsyncIterator[StepEvent]:
        """Take a choice: read the existing paragraph it leads to, or have one written.

        Yields the step's events when a paragraph is written (nothing when it exists already);
        either way the reader's position has moved when the iteration ends.
        """
        if choice.step_id is not None:
            await asyncio.to_thread(self.go_to, choice.step_id)
            return
        await asyncio.to_thread(self.claim_move, choice.instruction)
        async for event in self.write_claimed(choice.instruction):
            yield event

    async def act(self, text: str) -> AsyncIterator[StepEvent]:
        """The reader's own action ("What do you do?"): a new paragraph on their branch."""
        action = clean_action(text, self.action_chars)
        await asyncio.to_thread(self.claim_move, action)
        async for event in self.write_claimed(action):
            yield event

    # ---- writing a new paragraph, in two halves ----
    # `claim_move` checks everything that can refuse the move and claims it in the database;
    # `write_claimed` writes it. A web request claims and answers at once, and a task of the
    # process writes the paragraph, which outlives the request (and a reloaded page).

    def claim_move(self, instruction: str | None) -> None:
        """Claim a new paragraph after the current one, following `instruction`.

        Raises `CannotExtend` if the author does not allow it, `MoveInFlight` while one is
        being written for this reader in this story (by any server process), and
        `ReaderRateLimited` past the per-reader limit. Nothing is written here.
        """
        if not self.may_extend:
            raise CannotExtend(
                "The author keeps this story to the paragraphs they wrote; nothing new was "
                "written; pick one of the choices shown."
            )
        parent_id = self.position.id if self.position else None
        try:
            claimed = self.store.begin_reader_move(
                self.reader.id, self.story_id, parent_id, instruction or "",
                lease_s=self.move_lease_s,
            )
        except StoryNotFound:
            raise PlaceGone(
                "The paragraph you were reading is no longer in the story; nothing was written; "
                "open the story again from the library."
            ) from None
        if claimed is None:
            raise MoveInFlight(
                "A paragraph is already being written for you in this story; nothing else was "
                "started; it appears here as soon as it is written."
            )
        wait_s = self.store.reserve_reader_generation(
            self.reader.id, limit=self.steps_per_minute, window_s=RATE_WINDOW_S
        )
        if wait_s is not None:
            self.store.end_reader_move(self.reader.id, self.story_id)
            raise ReaderRateLimited(self.steps_per_minute, wait_s)

    async def write_claimed(
        self, instruction: str | None, *, turn: Turn | None = None
    ) -> AsyncIterator[StepEvent]:
        """Write the paragraph `claim_move` claimed, on the reader's own branch.

        Waits for `turn` first, if given. The claim is renewed while this runs and ended
        when it ends, however it ends; the reader's place moves to the paragraph once stored.
        """
        renewing = asyncio.create_task(self._keep_move_claimed())
        try:
            async with (turn() if turn is not None else contextlib.nullcontext()):
                engine = await asyncio.to_thread(self._engine_now)  # a local model loads for seconds
                parent_id = self.position.id if self.position else None
                async for event in engine.step(
                    self.story_id,
                    instruction,
                    parent_step_id=parent_id,
                    branch_owner=self.reader.id,
                    move_head=False,
                ):
                    if isinstance(event, StepCompleted):
                        await asyncio.to_thread(self.go_to, event.step.id)
                        # The reader's own branch learns its own facts (auto-accepted: no queue here).
                        await learn_on_own_branch(self.store, event.step, event.bible_updates)
                    yield event
        finally:
            renewing.cancel()
            ending = asyncio.ensure_future(
                asyncio.to_thread(self.store.end_reader_move, self.reader.id, self.story_id)
            )
            with contextlib.suppress(Exception):
                await asyncio.shield(ending)  # a cancelled move still frees the reader

    async def _keep_move_claimed(self) -> None:
        while True:
            await asyncio.sleep(self.move_lease_s / 3)
            try:
                await asyncio.to_thread(
                    self.store.renew_reader_move, self.reader.id, self.story_id,
                    lease_s=self.move_lease_s,
                )
            except Exception:  # the database is busy or gone: the step itself will say so
                log.warning("renewing a reader's move failed", exc_info=True)

    def _engine_now(self) -> Engine:
        if self._engine is None:
            if self.engine_factory is None:
                raise ReaderProblem(
                    "No model is set up for this reading room, so nothing new can be written; "
                    "pick one of the written choices, or ask the host to set up a model."
                )
            self._engine = self.engine_factory()
        return self._engine

    # ---- save slots and bookmarks ----

    def save_slot(self, name: str) -> ReaderPlace:
        """Save the current place under a name (saving under a used name replaces it)."""
        if self.position is None:
            raise NothingToSave(
                "There is nothing to save before the first paragraph; nothing was saved; "
                "read on, then save."
            )
        name = strip_control_characters(name)[:60] or "Saved place"
        return self.store.save_reader_slot(self.reader.id, self.story_id, name, self.position.id)

    def bookmark(self, step_id: str | None = None, note: str = "") -> ReaderPlace:
        """Bookmark a paragraph on the reader's path (default: the current one)."""
        target = step_id or (self.position.id if self.position else None)
        if target is None:
            raise NothingToSave(
                "There is no paragraph to bookmark yet; nothing was saved; read on, then bookmark."
            )
        return self.store.add_reader_bookmark(self.reader.id, self.story_id, target, note)

    def save_slots(self) -> list[ReaderPlace]:
        return self.store.reader_places(self.reader.id, self.story_id, SLOT)

    def bookmarks(self) -> list[ReaderPlace]:
        return self.store.reader_places(self.reader.id, self.story_id, BOOKMARK)

    def forget_place(self, place: ReaderPlace) -> None:
        self.store.delete_reader_place(self.reader.id, place.id)


def readable_story(store: StoryStore, story_id: str) -> Story:
    """The story, if its author opened it to readers; else `StoryClosed`."""
    try:
        story = store.get_story(story_id)
    except StoryNotFound:
        story = None
    return _open_to_readers(story)


def _open_to_readers(story: Story | None) -> Story:
    """`story`, if there is one and its author opened it to readers; else `StoryClosed`."""
    if story is None or not story.readable:
        raise _story_closed()
    return story


def _story_closed() -> StoryClosed:
    return StoryClosed(
        "There is no story with that id open to readers; nothing was changed; "
        "choose a story from the library."
    )

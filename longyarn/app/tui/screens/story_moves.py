"""The writer's moves in the story's tree, for the writing screen: undo, redo, versions, and
editing or deleting a paragraph. Every move is a move of the head; nothing is deleted by them."""

from __future__ import annotations

from textual import work

from longyarn.app.session.writing import NoModel, WritingSession
from longyarn.app.ui.formatting import store_failure
from longyarn.app.ui.widgets import ParagraphView, StoryView
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.types import Step

from .cowriting import CoWritingEditor
from .dialogs import ConfirmDialog
from .help import key_for


class StoryMoves:
    """Mixed into `WritingScreen`, whose session, story view, flags, `_show_session`, `save_memory_edit`,
    `_show_header`, `_show_status` and `_has_model` it uses."""

    session: WritingSession
    story_view: StoryView
    generating: bool
    moving: bool

    def move_head(self, step_id: str | None, done: str = "", description: str = "the move") -> None:
        """Move where writing continues to `step_id` (an undoable change), then show the
        branch there and `done`.

        The memory edit is stored first (it belongs to the step it was made on). The story's
        actions wait, greyed out, until the move is stored and shown.
        """
        if self.moving or self.generating:
            return
        self.moving = True
        self.save_memory_edit()
        self._store_move(step_id, done, description)

    @work(group="history", exit_on_error=False)
    async def _store_move(self, step_id: str | None, done: str, description: str) -> None:
        try:
            if not await self.session.memory_edit_stored():
                return  # the notice says why; the writer's words stay on this paragraph
            await self.session.move_head(step_id, description)
            await self._show_session()
        except Exception as error:
            self.notify(store_failure(error, "move to that paragraph"), title="The story is as it was",
                        severity="error", timeout=12)
        else:
            if done:
                self._show_status(done)
        finally:
            self.moving = False

    def action_undo(self) -> None:
        """Undo the newest change made here: a paragraph, a version, a deletion, an edit..."""
        self._history_step("undo")

    def action_redo(self) -> None:
        """Redo the change undone last."""
        self._history_step("redo")

    def _history_step(self, which: str) -> None:
        possible = self.session.can_undo() if which == "undo" else self.session.can_redo()
        if self.moving or self.generating or not possible:
            return
        self.moving = True
        self.save_memory_edit()  # an edit in the memory panel is the newest change
        self._apply_history_step(which)

    @work(group="history", exit_on_error=False)
    async def _apply_history_step(self, which: str) -> None:
        try:
            done = await (self.session.undo() if which == "undo" else self.session.redo())
            await self._show_session()
        except NoModel as error:  # re-embedding an edited paragraph needs the model
            self.notify(str(error), title="The story is as it was", severity="warning", timeout=12)
        except Exception as error:
            problem = str(error) if isinstance(error, LongyarnError) else store_failure(error, f"{which} the change")
            self.notify(problem, title="The story is as it was", severity="error", timeout=12)
        else:
            if done and which == "undo":
                self._show_status(f"Undone: {done}; {self.key_for('redo')} redoes it.")
            elif done:
                self._show_status(f"Redone: {done}; {self.key_for('undo')} undoes it again.")
        finally:
            self.moving = False

    def key_for(self, binding_id: str) -> str:
        """How the key of a binding of this screen shows, the writer's keymap applied."""
        return key_for(self.app, type(self), binding_id)

    def action_previous_branch(self) -> None:
        self._switch_version(-1)

    def action_next_branch(self) -> None:
        self._switch_version(+1)

    def _switch_version(self, offset: int) -> None:
        target = self.session.version_target(offset)
        if target is not None:
            step_id, number, total = target
            self.move_head(step_id, f"Version {number} of {total}.", f"the switch to version {number} of {total}")

    def selected_paragraph(self) -> ParagraphView | None:
        """The paragraph selected in the story, else the newest one."""
        selected = self.story_view.selected
        if selected is not None:
            return selected
        views = self.story_view.paragraph_views
        return views[-1] if views else None

    def action_edit_paragraph(self) -> None:
        view = self.selected_paragraph()
        if view is None or self.generating or not self._has_model():
            return
        step_id = view.step.id

        async def store_edit(text: str) -> bool:
            return await self.store_paragraph_edit(step_id, text)

        def propose(text: str, start: int, end: int, task, wish: str):  # noqa: ANN001, ANN202
            return self.session.propose_change(step_id, text, start, end, task, wish)

        self.app.push_screen(CoWritingEditor(view.step.paragraph, store_edit, propose))

    async def store_paragraph_edit(self, step_id: str, text: str) -> bool:
        """Store the writer's edit of a paragraph, re-embedding its memory; False, having said
        why, if it could not be (the editor then keeps the words)."""
        try:
            updated = await self.session.edit_paragraph(step_id, text)
        except NoModel as error:  # replaced by a model that is still loading
            self.notify(str(error), title="Your edit is still in the editor", severity="warning", timeout=12)
            return False
        except Exception as error:  # e.g. the database stayed locked: say so, keep the words
            problem = str(error) if isinstance(error, LongyarnError) else store_failure(error, "save the paragraph")
            self.notify(problem, title="Your edit is still in the editor", severity="error", timeout=15)
            return False
        if self.is_attached:
            self.story_view.replace_step(updated)
            self._show_status("Saved the edit; its long-term memory was updated too.")
            self.refresh_bindings()
        return True

    def action_delete_paragraph(self) -> None:
        view = self.selected_paragraph()
        if view is None or self.generating or self.moving:
            return
        step = view.step

        def delete(confirmed: bool | None) -> None:
            if confirmed and not (self.generating or self.moving):
                self.moving = True
                self.delete_paragraph(step)

        self.app.push_screen(
            ConfirmDialog(
                "Delete this paragraph? It leaves the story and is no longer recalled as a "
                "memory; the paragraphs after it stay."
            ),
            delete,
        )

    @work(group="history", exit_on_error=False)
    async def delete_paragraph(self, step: Step) -> None:
        """Delete the paragraph (and its memory); writing continues from the one before it
        when it was the newest, as after an undo."""
        try:
            if await self.session.delete_paragraph(step):
                await self._show_session()
            else:
                await self.story_view.remove_step(step.id)
                self._show_header()
                self.refresh_bindings()
        except Exception as error:
            self.notify(store_failure(error, "delete the paragraph"), title="The paragraph is still there",
                        severity="error", timeout=12)
            return
        finally:
            self.moving = False
        self._show_status(f"Deleted the paragraph; it is no longer recalled; {self.key_for('undo')} brings it back.")

"""The writing screen's craft tools: versions of the next paragraph at once, the author's note,
goals and counts. Mixed into `WritingScreen`, whose session, status line and notices it uses."""

from __future__ import annotations

from textual import work
from textual.widgets import Static

from longyarn.app.session.continuity import contradictions_of
from longyarn.app.session.counts import story_goal
from longyarn.app.session.writing import WritingSession
from longyarn.app.ui.formatting import store_failure
from longyarn.recurrent_core.role_prompts import AuthorsNote

from longyarn.recurrent_core.types import Step

from ..notices import tell_fallbacks
from .alternatives import AlternativesScreen
from .craft_dialogs import AuthorsNoteDialog, Goals, GoalsDialog


class CraftTools:
    """Mixed into `WritingScreen`."""

    session: WritingSession

    # ---- counts in the status line ----

    def show_counts(self) -> None:
        """The story's words against its goal, today's, and this session's against its goal."""
        if not self.is_attached:  # type: ignore[attr-defined]
            return
        self.query_one("#counts", Static).update(self.session.word_counts().line())  # type: ignore[attr-defined]

    # ---- versions at once ----

    def action_alternatives(self) -> None:
        """Write several versions of the next paragraph at once, side by side, and pick one."""
        if not self._has_model() or self.generating or self.moving:  # type: ignore[attr-defined]
            return
        self.save_memory_edit()  # type: ignore[attr-defined]
        instruction = self.chosen_instruction()  # type: ignore[attr-defined]

        def kept(result: tuple[Step, tuple[str, ...]] | None) -> None:
            if result is not None:
                self.show_kept_version(*result)

        self.app.push_screen(AlternativesScreen(self.session, instruction), kept)  # type: ignore[attr-defined]

    @work(group="versions-shown", exit_on_error=False)
    async def show_kept_version(self, step: Step, fallbacks: tuple[str, ...]) -> None:
        await self._show_session()  # type: ignore[attr-defined]
        if self.instruction_input.value.strip() == step.instruction:  # type: ignore[attr-defined]
            self.instruction_input.value = ""  # type: ignore[attr-defined]
        tell_fallbacks(self, self.session.host, fallbacks)  # type: ignore[arg-type]
        number, total = self.session.position.version
        self._show_status(  # type: ignore[attr-defined]
            f"Kept version {number} of {total}; the others are beside it (alt+←/→)."
        )
        if contradictions_of(self.session, step.id):
            self.show_contradictions(step.id)  # type: ignore[attr-defined]

    # ---- goals ----

    def action_goals(self) -> None:
        """Set a word goal for the story and one for this session."""
        goals = Goals(story_goal(self.session.story), self.session.session_goal)

        def save(chosen: Goals | None) -> None:
            if chosen is not None:
                self.save_goals(chosen)

        self.app.push_screen(GoalsDialog(goals, self.session.word_counts().line()), save)  # type: ignore[attr-defined]

    @work(group="goals", exit_on_error=False)
    async def save_goals(self, goals: Goals) -> None:
        self.session.session_goal = goals.session_words
        try:
            await self.session.save_word_goal(goals.story_words)
        except Exception as error:
            self.notify(store_failure(error, "save the story's word goal"), severity="error", timeout=12)  # type: ignore[attr-defined]
        self.show_counts()
        self.refresh_bindings()  # type: ignore[attr-defined]

    # ---- the author's note ----

    def action_authors_note(self) -> None:
        """Edit the story's author's note: style, tone, point of view, tense, at a depth."""

        def save(note: AuthorsNote | None) -> None:
            if note is not None:
                self.save_authors_note(note)

        self.app.push_screen(AuthorsNoteDialog(self.session.authors_note()), save)  # type: ignore[attr-defined]

    @work(group="note", exit_on_error=False)
    async def save_authors_note(self, note: AuthorsNote) -> None:
        try:
            await self.session.save_authors_note(note.text, note.depth)
        except Exception as error:
            self.notify(store_failure(error, "save the author's note"), title="The note is as it was",  # type: ignore[attr-defined]
                        severity="error", timeout=12)
            return
        self.refresh_bindings()  # type: ignore[attr-defined]
        said = "Saved the author's note; the next paragraph is written with it." if note.text else (
            "Removed the author's note."
        )
        self._show_status(said)  # type: ignore[attr-defined]

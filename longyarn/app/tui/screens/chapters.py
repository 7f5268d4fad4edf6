"""Chapters on the writing screen: ending the chapter being written with its summary (typed, or
the model's), and, on a paragraph selected in the story, a chapter's title and summary, starting
a chapter there, merging a chapter with the next, and moving where a chapter begins.

Every change is the session's (`ChapterEdits`), so it is undoable like any other; bad input is
one sentence in a notice, and nothing changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static, TextArea

from longyarn.app.session.writing import NoModel, WritingSession
from longyarn.app.ui.formatting import store_failure
from longyarn.app.ui.widgets import ProseArea, StoryView
from longyarn.recurrent_core.chapter_memory import ChapterPlace
from longyarn.recurrent_core.chapter_summaries import ChapterSummary
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.types import StepCompleted

from ..notices import tell_fallbacks
from .dialogs import EditingDialog

# The screen's chapter actions: none runs while a paragraph is being written.
CHAPTER_ACTIONS = (
    "end_chapter", "chapter_details", "split_chapter", "merge_chapter", "chapter_begins_here",
    "next_chapter_begins_here",
)
NO_CHAPTERS = (
    "The story has no chapters yet: ctrl+t ends the first one here, or c (in the story) starts "
    "one at the selected paragraph."
)


@dataclass(frozen=True)
class ChapterEdit:
    title: str
    summary: str


class ChapterDialog(EditingDialog):
    """A chapter's title and summary; with `ending`, saving ends the chapter. Ctrl+R asks the
    model for a summary (and a title, where there is none), to edit before saving."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="chapter-save"),
        Binding("ctrl+r", "draft", "Ask the model", id="chapter-draft",
                tooltip="Ask the model for the chapter's summary (and a title, where it has none)"),
    ]

    unsaved_question = "You changed the chapter's title or summary. Save the change?"

    def __init__(
        self,
        heading: str,
        name: str,
        title: str,
        summary: str,
        *,
        ending: bool,
        draft: Callable[[], Awaitable[ChapterSummary]],
        tell: Callable[[tuple[str, ...]], None],
    ) -> None:
        super().__init__(id="chapter-dialog")
        self.heading = heading
        self.chapter_name = name
        self.chapter_title = title
        self.summary = summary
        self.ending = ending
        self.draft = draft
        self.tell = tell
        self.unsaved_save_label = "End the chapter" if ending else "Save"

    def edit(self) -> ChapterEdit:
        return ChapterEdit(
            " ".join(self.query_one("#chapter-title", Input).value.split()),
            " ".join(self.query_one("#chapter-summary", TextArea).text.split()),
        )

    @property
    def changed(self) -> bool:
        return self.is_mounted and self.edit() != ChapterEdit(self.chapter_title, self.summary)

    def save_edit(self) -> None:
        self.action_save()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.heading, classes="dialog-title", markup=False)
            yield Label(f"Title (left empty, it is called {self.chapter_name})", markup=False)
            yield Input(self.chapter_title, placeholder=self.chapter_name, id="chapter-title")
            yield Label("Summary: one paragraph that later paragraphs are written with in view")
            yield ProseArea(self.summary, id="chapter-summary")
            yield Static("", id="chapter-status", classes="hint", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Ask the model  ^r", id="draft")
                yield Button(f"{self.unsaved_save_label}  ^s", id="save", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#chapter-summary", TextArea).focus()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        self.dismiss(self.edit())

    @on(Button.Pressed, "#draft")
    def action_draft(self) -> None:
        self.query_one("#chapter-status", Static).update("The model is summarising the chapter…")
        self.ask_model()

    @work(exclusive=True, group="chapter-draft", exit_on_error=False)
    async def ask_model(self) -> None:
        status = self.query_one("#chapter-status", Static)
        try:
            drafted = await self.draft()
        except (NoModel, LongyarnError) as error:
            status.update("")
            self.notify(str(error), title="No summary was written", severity="warning", timeout=12)
            return
        except Exception as error:  # a failure must not leave the dialog waiting
            status.update("")
            self.notify(f"The model could not summarise the chapter ({error}); type the summary.",
                        severity="error", timeout=12)
            return
        self.query_one("#chapter-summary", TextArea).load_text(drafted.summary)
        title = self.query_one("#chapter-title", Input)
        if drafted.title and not title.value.strip():
            title.value = drafted.title
        status.update("The model's summary: edit it, then save.")
        self.tell(drafted.fallbacks)


class ChapterActions:
    """Mixed into `WritingScreen`, whose session, story view, flags and notices it uses."""

    session: WritingSession
    story_view: StoryView
    generating: bool
    moving: bool

    def chapter_label(self) -> list[str]:
        """The header's word on chapters: the one being written, or the one the next begins."""
        chapters = self.session.chapters
        if not chapters:
            return []
        last = chapters[-1]
        if last.chapter.closed:
            return [f"chapter {last.number + 1} begins next"]
        return [last.name]

    def tell_chapter_end(self, event: StepCompleted) -> None:
        """Say when the model marked its paragraph as the end of a chapter (a story with chapters)."""
        chapters = self.session.chapters
        if event.chapter_ends and chapters and not chapters[-1].chapter.closed:
            self.notify(  # type: ignore[attr-defined]
                f"The model ended {chapters[-1].name} with this paragraph; "
                f"{self.key_for('end-chapter')} ends it with its summary.",  # type: ignore[attr-defined]
                title="A chapter's end", timeout=10,
            )

    def _busy(self) -> bool:
        return self.generating or self.moving

    def _selected_step_id(self) -> str | None:
        view = self.selected_paragraph()  # type: ignore[attr-defined]
        return view.step.id if view is not None else None

    def _selected_chapter(self) -> ChapterPlace | None:
        step_id = self._selected_step_id()
        place = self.session.chapter_of_step(step_id) if step_id else None
        if place is None:
            self.notify(NO_CHAPTERS, title="Chapters", timeout=10)  # type: ignore[attr-defined]
        return place

    def _chapter_dialog(self, place: ChapterPlace | None, *, ending: bool) -> ChapterDialog:
        name = place.name if place is not None else "Chapter 1"
        number = place.number if place is not None else 1
        default = f"Chapter {number}"
        last = len(self.session.branch)
        first = place.first if place is not None else 1
        span = f"paragraph {first}" if first == last else f"paragraphs {first} to {last}"
        heading = f"End {name} after paragraph {last} ({span})" if ending else f"{name}: title and summary"
        chapter_id = place.chapter.id if place is not None else None

        def tell(fallbacks: tuple[str, ...]) -> None:
            tell_fallbacks(self, self.session.host, fallbacks)  # type: ignore[arg-type]

        return ChapterDialog(
            heading, default, place.chapter.title if place is not None else "",
            place.chapter.summary if place is not None else "", ending=ending,
            draft=lambda: self.session.draft_chapter_summary(chapter_id), tell=tell,
        )

    # ---- ending the chapter being written ----

    def action_end_chapter(self) -> None:
        """End the chapter being written here, with its summary: the next paragraph begins a new one."""
        if self._busy():
            return
        if not self.session.branch:
            self.notify("The story has no paragraphs yet, so no chapter can end.", title="Chapters")  # type: ignore[attr-defined]
            return
        chapters = self.session.chapters
        if chapters and chapters[-1].chapter.closed:
            self.notify(  # type: ignore[attr-defined]
                f"{chapters[-1].name} has ended already; the next paragraph begins chapter {chapters[-1].number + 1}.",
                title="Chapters",
            )
            return

        def ended(edit: ChapterEdit | None) -> None:
            if edit is not None:
                self._change_chapters(lambda: self.session.end_chapter(edit.summary, edit.title or None),
                                      "Ended the chapter; the next paragraph begins a new one.")

        self.app.push_screen(self._chapter_dialog(chapters[-1] if chapters else None, ending=True), ended)  # type: ignore[attr-defined]

    # ---- on the selected paragraph ----

    def action_chapter_details(self) -> None:
        """The title and summary of the selected paragraph's chapter."""
        if self._busy():
            return
        place = self._selected_chapter()
        if place is None:
            return

        async def save(edit: ChapterEdit) -> None:
            if edit.title != place.chapter.title and (edit.title or place.chapter.title):
                await self.session.rename_chapter(place.chapter.id, edit.title)
            if edit.summary != place.chapter.summary:
                await self.session.save_chapter_summary(place.chapter.id, edit.summary)

        def saved(edit: ChapterEdit | None) -> None:
            if edit is not None:
                self._change_chapters(lambda: save(edit), "Saved the chapter; the next paragraph is written with it.")

        self.app.push_screen(self._chapter_dialog(place, ending=False), saved)  # type: ignore[attr-defined]

    def action_split_chapter(self) -> None:
        """Start a new chapter at the selected paragraph."""
        step_id = self._selected_step_id()
        if step_id is not None and not self._busy():
            self._change_chapters(lambda: self.session.split_chapter(step_id), "A new chapter begins here.")

    def action_merge_chapter(self) -> None:
        """Merge the selected paragraph's chapter with the next one."""
        place = None if self._busy() else self._selected_chapter()
        if place is not None:
            self._change_chapters(lambda: self.session.merge_chapter_with_next(place.chapter.id),
                                  f"Merged {place.name} with the chapter after it.")

    def action_chapter_begins_here(self) -> None:
        """Move the start of the selected paragraph's chapter to it (later)."""
        step_id = self._selected_step_id()
        place = None if self._busy() else self._selected_chapter()
        if place is not None and step_id is not None:
            self._change_chapters(lambda: self.session.move_chapter_start(place.chapter.id, step_id),
                                  f"{place.name} now begins here.")

    def action_next_chapter_begins_here(self) -> None:
        """Move the start of the chapter after the selected paragraph's to it (earlier)."""
        step_id = self._selected_step_id()
        place = None if self._busy() else self._selected_chapter()
        if place is None or step_id is None:
            return
        if place.number == len(self.session.chapters):
            self.notify(f"{place.name} is the last chapter: no chapter comes after it.", title="Chapters")  # type: ignore[attr-defined]
            return
        following = self.session.chapters[place.number]
        self._change_chapters(lambda: self.session.move_chapter_start(following.chapter.id, step_id),
                              f"{following.name} now begins here.")

    def _change_chapters(self, change: Callable[[], Awaitable[object]], done: str) -> None:
        self.moving = True
        self._store_chapter_change(change, done)

    @work(group="chapters", exit_on_error=False)
    async def _store_chapter_change(self, change: Callable[[], Awaitable[object]], done: str) -> None:
        selected = self._selected_step_id()
        try:
            await change()
        except LongyarnError as error:
            self.notify(str(error), title="Nothing was changed", severity="warning", timeout=12)  # type: ignore[attr-defined]
            return
        except Exception as error:
            self.notify(store_failure(error, "change the chapters"), title="The chapters are as they were",  # type: ignore[attr-defined]
                        severity="error", timeout=12)
            return
        finally:
            self.moving = False
        await self._show_session()  # type: ignore[attr-defined]
        if selected is not None:
            view = next((v for v in self.story_view.paragraph_views if v.step.id == selected), None)
            if view is not None and self.story_view.has_focus:
                self.story_view.select(view)
        self._show_status(f"{done} {self.key_for('undo')} undoes it.")  # type: ignore[attr-defined]

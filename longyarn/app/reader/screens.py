"""The reading room: the reader's path through a story, what happens next, and saved places."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from longyarn.app.export import downloads_folder, render_story
from longyarn.app.session.reader_chapters import chapter_headings
from longyarn.app.session.reader_errors import ReaderProblem, message_for_reader
from longyarn.app.session.reading import Choice, ReadingSession
from longyarn.app.ui.formatting import one_line
from longyarn.app.ui.step_events import StepRenderer
from longyarn.app.ui.widgets import StoryView
from longyarn.recurrent_core.readers import ReaderPlace
from longyarn.recurrent_core.types import StepCompleted

from .room import ReadingRoom

log = logging.getLogger(__name__)


# ---- reading ---------------------------------------------------------------------------


class PassageView(StoryView, inherit_bindings=False):
    """The reader's path so far: the writers' story view without its editing keys."""

    BINDINGS = [
        Binding("up", "scroll_up", "Scroll up", show=False),
        Binding("down", "scroll_down", "Scroll down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "End", show=False),
    ]

    def select(self, view) -> None:  # noqa: ANN001
        """Readers do not select paragraphs: there is nothing to edit."""

    async def action_scroll_up(self) -> None:  # type: ignore[override]
        if self.scroll_y <= 0 and self.first_shown > 0:
            await self.load_earlier()
        super().action_scroll_up()


class ChoiceList(OptionList):
    """The options under "What happens next?"; 1 to 9 pick one directly."""

    BINDINGS = [Binding(str(n), f"pick({n - 1})", show=False) for n in range(1, 10)]

    def show_choices(self, choices: list[Choice]) -> None:
        self.clear_options()
        self.add_options(
            Option(Content(f"{number}. {choice.label}"), id=str(number - 1))
            for number, choice in enumerate(choices, start=1)
        )
        self.highlighted = 0 if choices else None

    def action_pick(self, index: int) -> None:
        if index < self.option_count:
            self.highlighted = index
            self.action_select()


class ActionInput(Input):
    """The reader's own action: typing takes every letter key, so its footer names the two keys
    that still work here."""

    BINDINGS = [
        Binding("enter", "submit", "Act", id="act-submit"),
        Binding("escape", "screen.escape", "Choices", id="act-leave"),
    ]


class ReadingScreen(Screen):
    """A story in a clean reading layout, then what happens next."""

    BINDINGS = [
        Binding("escape", "escape", "Cancel", id="cancel", show=False, priority=True),
        Binding("b", "back", "Back", id="back"),
        Binding("s", "save", "Save", id="save"),
        Binding("m", "bookmark", "Bookmark", id="bookmark"),
        Binding("o", "places", "Saved places", id="places"),
        Binding("a", "act", "Your action", id="act"),
        Binding("x", "export", "Export", id="export"),
        Binding("l", "library", "Library", id="library"),
        Binding("pageup", "page(-1)", "Page up", id="page-up", show=False, priority=True),
        Binding("pagedown", "page(1)", "Page down", id="page-down", show=False, priority=True),
    ]

    generating: reactive[bool] = reactive(False, init=False)

    def __init__(self, room: ReadingRoom, story_id: str) -> None:
        super().__init__(id="reading")
        self.room = room
        self.story_id = story_id
        self.session: ReadingSession | None = None
        self.choices: list[Choice] = []
        self.step_worker: Worker | None = None
        self._step_settled: asyncio.Event | None = None  # set once the move is stored or over

    async def settle_writing(self, timeout_s: float) -> None:
        """Let a paragraph being written finish and be stored (at most `timeout_s`), so that a
        reader whose page went away finds it, and their place moved to it, when they return."""
        if not self.generating or self._step_settled is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._step_settled.wait(), timeout_s)

    def compose(self) -> ComposeResult:
        yield Static("", id="reading-header", classes="screen-title", markup=False)
        yield PassageView(id="passage")
        with Vertical(id="next"):
            yield Label("What happens next?", id="choices-title", classes="panel-title")
            yield ChoiceList(id="choices")
            yield ActionInput(
                placeholder="What do you do? (Enter to act)",
                id="action",
                max_length=self.room.action_chars,
            )
        yield Static("", id="reading-status", markup=False)
        yield Footer(compact=True)

    @property
    def passage(self) -> PassageView:
        return self.query_one("#passage", PassageView)

    @property
    def choice_list(self) -> ChoiceList:
        return self.query_one("#choices", ChoiceList)

    @property
    def action_input(self) -> Input:
        return self.query_one("#action", Input)

    async def on_mount(self) -> None:
        try:
            self.session = self.room.session(self.story_id)
            await asyncio.to_thread(self.session.open)
        except Exception as error:
            self._tell(error)
            self.app.pop_screen()
            return
        await self.show_path()
        self.choice_list.focus()

    async def on_unmount(self) -> None:
        if self.step_worker is not None and self.step_worker.is_running:
            self.step_worker.cancel()

    # ---- showing ----

    async def show_path(self) -> None:
        """Show the reader's path and the choices after it."""
        session = self.session
        assert session is not None
        headings = await asyncio.to_thread(chapter_headings, session.store, session.story_id, session.path)
        await self.passage.show_branch(session.path, headings=headings)
        self._after_move()
        self.call_after_refresh(self._show_start_of_current)

    def _show_start_of_current(self) -> None:
        """A paragraph taller than the view is shown from its first line, not its last."""
        views = self.passage.paragraph_views
        if not views or not self.is_attached:
            return
        current = views[-1]
        if current.outer_size.height > self.passage.scrollable_content_region.height:
            self.passage.scroll_to_widget(current, top=True, animate=False, immediate=True)

    def action_page(self, direction: int) -> None:
        """PageUp/PageDown read on, whichever part of the screen has the focus."""
        if direction < 0:
            self.passage.scroll_page_up(animate=False)
        else:
            self.passage.scroll_page_down(animate=False)

    def _after_move(self) -> None:
        session = self.session
        assert session is not None
        story = session.story
        header = [story.title]
        if story.genre:
            header.append(story.genre)
        header.append(f"¶ {len(session.path):,}")
        self.query_one("#reading-header", Static).update(" · ".join(header))
        self.choices = session.choices()
        self.choice_list.show_choices(self.choices)
        self.action_input.display = session.may_extend
        title = self.query_one("#choices-title", Label)
        if self.choices:
            title.update("What happens next?" if session.position else "How does it begin?")
        elif session.position is None:
            title.update("This story has not begun yet.")
        else:
            title.update("The end, for now: the author has not written further.")
        self._status("")
        self.refresh_bindings()

    def _status(self, text: str) -> None:
        self.query_one("#reading-status", Static).update(text)

    def _tell(self, error: BaseException, title: str = "") -> None:
        if not isinstance(error, ReaderProblem):
            log.warning("reader step failed: %s", error, exc_info=error)
        self.notify(message_for_reader(error), title=title, severity="warning", timeout=12)

    # ---- what can be done now ----

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        session = self.session
        if action == "escape":
            return True
        if self.generating and action in ("back", "places", "act", "library"):
            return None  # greyed out until the paragraph is written
        if session is None:
            return action == "library"
        if action == "back":
            return session.position is not None and session.position.parent_id is not None
        if action in ("save", "bookmark", "export"):
            return session.position is not None
        if action == "act":
            return session.may_extend
        return True

    def watch_generating(self, generating: bool) -> None:
        self.set_class(generating, "-generating")
        self.choice_list.disabled = generating
        self.action_input.disabled = generating
        self.refresh_bindings()

    # ---- moving on ----

    @on(OptionList.OptionSelected, "#choices")
    def _choice_taken(self, event: OptionList.OptionSelected) -> None:
        if self.generating or event.option_index >= len(self.choices):
            return
        self._start(self.choices[event.option_index], None)

    @on(Input.Submitted, "#action")
    def _action_taken(self, event: Input.Submitted) -> None:
        if self.generating:
            return
        if not event.value.strip():
            self.choice_list.focus()
            return
        self._start(None, event.value)

    def _start(self, choice: Choice | None, action: str | None) -> None:
        self.generating = True
        self._step_settled = asyncio.Event()
        self.step_worker = self.run_move(choice, action)

    @work(exclusive=True, group="reader-step", exit_on_error=False)
    async def run_move(self, choice: Choice | None, action: str | None) -> None:
        session = self.session
        assert session is not None
        before = session.position
        renderer = StepRenderer(self.passage, self._status, "reader")
        try:
            events = session.choose(choice) if choice is not None else session.act(action or "")
            async for event in events:
                if isinstance(event, StepCompleted):
                    # Stored, and the reader's place moved to it (ReadingSession._write).
                    self._settled()
                renderer.show(event)
        except asyncio.CancelledError:
            if self.is_attached:
                self.passage.streaming.end()
                await self._moved(before)
                self._status("Stopped; nothing new was written.")
            raise
        except Exception as error:
            self._tell(error, title="The story did not go on")
            if self.is_attached:
                self.passage.streaming.end()
                self._status("Your story is as it was.")
        else:
            self.action_input.value = ""
            await self._moved(before, renderer.streamed)
        finally:
            self._settled()
            self.generating = False
            if self.is_attached:
                self.choice_list.focus()

    def _settled(self) -> None:
        if self._step_settled is not None:
            self._step_settled.set()

    async def _moved(self, before, streamed: bool = False) -> None:  # noqa: ANN001
        """Show the session's new position: one more paragraph, or a different path."""
        session = self.session
        assert session is not None
        now = session.position
        if now is not None and before is not None and now.parent_id == before.id:
            self.passage.headings = await asyncio.to_thread(
                chapter_headings, session.store, session.story_id, session.path
            )
            await self.passage.append_step(now)
            self._after_move()
            if not streamed:  # one streamed was followed as it came
                self.call_after_refresh(self._show_start_of_current)
        elif now is not None and before is not None and now.id == before.id:
            self._after_move()
        else:
            await self.show_path()

    def action_escape(self) -> None:
        if self.generating:
            if self.step_worker is not None:
                self.step_worker.cancel()
        elif self.action_input.has_focus:
            self.choice_list.focus()
        else:
            self.action_library()

    async def action_back(self) -> None:
        session = self.session
        if session is None or self.generating:
            return
        try:
            moved = await asyncio.to_thread(session.back)
        except Exception as error:
            self._tell(error)
            return
        if moved:
            await self.show_path()
            self._status("One paragraph back: choose again.")

    def action_act(self) -> None:
        if self.session is not None and self.session.may_extend:
            self.action_input.focus()

    def action_library(self) -> None:
        if not self.generating:
            self.app.pop_screen()

    # ---- saved places ----

    def action_save(self) -> None:
        session = self.session
        if session is None or session.position is None:
            return
        default = f"Paragraph {len(session.path)}"

        def save(name: str | None) -> None:
            if name is None:
                return
            try:
                place = session.save_slot(name)
            except Exception as error:
                self._tell(error)
                return
            self.notify(f"Saved as “{place.name}”.", title="Saved")

        self.app.push_screen(SaveSlotDialog(default), save)

    def action_bookmark(self) -> None:
        session = self.session
        if session is None or session.position is None:
            return
        try:
            session.bookmark()
        except Exception as error:
            self._tell(error)
            return
        self.notify(f"Bookmarked paragraph {len(session.path)}.", title="Bookmark")

    def action_places(self) -> None:
        session = self.session
        if session is None:
            return

        async def go(place: ReaderPlace | None) -> None:
            if place is None:
                return
            try:
                await asyncio.to_thread(session.go_to, place.step_id)
            except Exception as error:
                self._tell(error)
                return
            await self.show_path()
            self._status(f"Back at “{one_line(place.name or 'your bookmark', 40)}”.")

        self.app.push_screen(PlacesDialog(session), go)

    # ---- export ----

    def action_export(self) -> None:
        """Your path as markdown: a download in a browser, the downloads folder in a terminal."""
        session = self.session
        if session is None or not session.path:
            return
        text = render_story(session.story, session.path, "md", headings=self.passage.headings)
        name = "".join(c if c.isalnum() else "-" for c in session.story.title.lower()).strip("-")
        self.app.deliver_text(
            io.StringIO(text),
            save_directory=None if self.room.in_browser else downloads_folder(),
            save_filename=f"{name or 'story'}.md",
            mime_type="text/markdown",
            encoding="utf-8",
        )


class SaveSlotDialog(ModalScreen[str | None]):
    """Name the place to save (a name used before is replaced)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="cancel-save")]

    def __init__(self, default: str) -> None:
        super().__init__(id="save-slot")
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Save your place as", classes="panel-title")
            yield Input(self.default, id="slot-name", max_length=60)
            yield Static("Enter saves; Escape cancels.", classes="hint")

    def on_mount(self) -> None:
        name = self.query_one("#slot-name", Input)
        name.focus()
        name.select_all()  # typing replaces the suggested name

    @on(Input.Submitted, "#slot-name")
    def _save(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PlacesDialog(ModalScreen[ReaderPlace | None]):
    """The reader's save slots and bookmarks in this story: Enter goes there, d forgets it."""

    BINDINGS = [
        Binding("escape", "cancel", "Close", id="close-places"),
        Binding("d,delete", "forget", "Forget", id="forget-place"),
    ]

    def __init__(self, session: ReadingSession) -> None:
        super().__init__(id="places")
        self.session = session
        self.places: list[ReaderPlace] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Your saved places and bookmarks", classes="panel-title")
            yield OptionList(id="place-list")
            yield Static("Enter goes there; d forgets it; Escape closes.", classes="hint")

    def on_mount(self) -> None:
        self._load()
        self.query_one("#place-list", OptionList).focus()

    def _load(self) -> None:
        session = self.session
        self.places = session.save_slots() + session.bookmarks()
        options = []
        for place in self.places:
            if place.kind == "slot":
                label = f"Saved · {place.name}"
            else:
                label = f"Bookmark · {place.name or 'paragraph'}"
            preview = one_line(session.store.get_step(place.step_id).paragraph, 50)
            options.append(Option(Content(f"{label} — {preview}")))
        place_list = self.query_one("#place-list", OptionList)
        place_list.clear_options()
        if options:
            place_list.add_options(options)
            place_list.highlighted = 0
        else:
            place_list.add_option(Option("Nothing saved yet: s saves your place, m bookmarks a paragraph.", disabled=True))

    @on(OptionList.OptionSelected, "#place-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option_index < len(self.places):
            self.dismiss(self.places[event.option_index])

    def action_forget(self) -> None:
        index = self.query_one("#place-list", OptionList).highlighted
        if index is not None and index < len(self.places):
            self.session.forget_place(self.places[index])
            self._load()

    def action_cancel(self) -> None:
        self.dismiss(None)

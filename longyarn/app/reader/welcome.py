"""Who is reading: a new reader names themselves; a link whose secret is not theirs is refused."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static

from longyarn.app.session.reader_text import NAME_CHARS


class WelcomeScreen(Screen[str | None]):
    """A new reader: ask for the name to read under."""

    BINDINGS = [Binding("escape", "leave", "Leave", id="leave")]

    def __init__(self, *, in_browser: bool) -> None:
        super().__init__(id="welcome")
        self.in_browser = in_browser

    def compose(self) -> ComposeResult:
        with Vertical(id="welcome-box"):
            yield Static("Welcome to the reading room", classes="screen-title")
            yield Static(
                "Here stories go where you take them. Each choice you make writes your own "
                "path through the story; nobody else's changes.",
                classes="hint",
            )
            if self.in_browser:
                yield Static(
                    "Bookmark this page now: its address is your key to come back to your "
                    "stories. Keep it to yourself, because whoever has it reads as you.",
                    id="welcome-bookmark",
                    classes="hint",
                )
            yield Label("What should the stories call you?", classes="panel-title")
            yield Input(placeholder="Your name", id="reader-name", max_length=NAME_CHARS)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#reader-name", Input).focus()

    @on(Input.Submitted, "#reader-name")
    def _named(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value)
        else:
            self.notify("Type a name to read under, then press Enter.")

    def action_leave(self) -> None:
        self.dismiss(None)


class RefusedScreen(Screen[bool]):
    """The reader link names a reader, but its secret is not theirs."""

    BINDINGS = [
        Binding("enter", "fresh", "Start as a new reader", id="start-fresh"),
        Binding("escape", "leave", "Leave", id="leave"),
    ]

    def __init__(self, *, in_browser: bool) -> None:
        super().__init__(id="refused")
        self.in_browser = in_browser

    def compose(self) -> ComposeResult:
        where = "This reader link" if self.in_browser else "The saved reader identity"
        yield Static("This is not your reading room", classes="screen-title")
        yield Static(
            f"{where} does not match its reader, so nothing was opened; check that you "
            "copied the whole address, or press Enter to start as a new reader.",
            id="refused-text",
            classes="problem",
        )
        yield Footer(compact=True)

    def action_fresh(self) -> None:
        self.dismiss(True)

    def action_leave(self) -> None:
        self.dismiss(False)

"""The reader's Textual app, `longyarn read`: a library of readable stories and a reading room.

The same app runs in a terminal and, one process per browser session, behind
`longyarn read --serve`. It offers no author tools: no memories, no prompts, no settings,
no command palette; it never shows a key or a file path.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from textual import events, messages
from textual.app import App
from textual.binding import Binding

from longyarn.app.session.engine_host import EngineHost, close_backend
from longyarn.app.session.reader_errors import message_for_reader
from longyarn.app.session.reader_identity import ReaderToken, TokenRefused, new_token, reader_for_token, register_reader
from longyarn.app.session.reader_text import DEFAULT_ACTION_CHARS
from longyarn.app.session.reading import DEFAULT_STEPS_PER_MINUTE, EngineFactory
from longyarn.recurrent_core.readers import Reader, StoryAndReaderStore

from .library import LibraryScreen
from .room import ReadingRoom
from .screens import ReadingScreen
from .welcome import RefusedScreen, WelcomeScreen

log = logging.getLogger(__name__)

# A browser session ends when its page goes away (a reload, a closed tab, a lost connection):
# a paragraph being written then gets this long to finish and be stored before the session
# closes. A reader quitting in a terminal stops it at once, as Escape does.
LEAVING_PAGE_FINISH_S = 120.0


class ReaderApp(App[None]):
    """Read stories as interactive fiction, choosing what happens next."""

    CSS_PATH = "reader.tcss"
    TITLE = "longyarn · reading room"
    ENABLE_COMMAND_PALETTE = False  # it would offer screenshots (a file path) and app internals
    NOTIFICATION_TIMEOUT = 8
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", id="quit", show=False)]

    def __init__(
        self,
        *,
        store: StoryAndReaderStore,
        token: ReaderToken | None,
        engine_factory: EngineFactory | None = None,
        story_id: str | None = None,
        on_new_token: Callable[[ReaderToken], None] | None = None,
        steps_per_minute: int = DEFAULT_STEPS_PER_MINUTE,
        action_chars: int = DEFAULT_ACTION_CHARS,
        in_browser: bool = False,
    ) -> None:
        """`token` proves who reads (None: a new reader); `on_new_token` keeps a new one
        (the terminal saves it in a file; in a browser it is already in the page's address).
        `engine_factory` builds the room's one engine, on the first new paragraph a reader asks
        for, so reading alone needs no model."""
        super().__init__()
        factory = (lambda _settings: engine_factory()) if engine_factory is not None else None
        self.room = ReadingRoom(
            store=store,
            host=EngineHost(None, factory=factory),
            steps_per_minute=steps_per_minute,
            action_chars=action_chars,
            in_browser=in_browser,
        )
        self.token = token
        self.initial_story_id = story_id
        self.on_new_token = on_new_token
        self.in_browser = in_browser
        self._leaving_by_choice = False  # the reader quit (or declined a name): see on_exit_app

    @property
    def store(self) -> StoryAndReaderStore:
        return self.room.store

    @property
    def reader(self) -> Reader | None:
        return self.room.reader

    def exit(self, result: None = None, return_code: int = 0, message=None) -> None:  # noqa: ANN001
        self._leaving_by_choice = True  # a page that went away posts ExitApp without exit()
        super().exit(result, return_code, message)

    async def on_exit_app(self, event: messages.ExitApp) -> None:
        # Runs before App's own handler, which closes the app. A reader who quits stops the
        # paragraph, as Escape does; only a page that went away lets it finish.
        if self.in_browser and not self._leaving_by_choice:
            for screen in self.screen_stack:
                if isinstance(screen, ReadingScreen):
                    await screen.settle_writing(LEAVING_PAGE_FINISH_S)

    async def on_unmount(self) -> None:
        if self.room.host.engine is not None:
            await close_backend(self.room.host.engine)

    def get_default_screen(self) -> LibraryScreen:
        return LibraryScreen(self.room)

    async def on_mount(self) -> None:
        if self.token is None:
            self.token = new_token()
        try:
            self.room.reader = reader_for_token(self.store, self.token)
        except TokenRefused:
            self.push_screen(RefusedScreen(in_browser=self.in_browser), self._refused)
            return
        if self.reader is None:
            self.push_screen(WelcomeScreen(in_browser=self.in_browser), self._named)
            return
        await self._arrived()

    async def _named(self, name: str | None) -> None:
        if name is None:
            self.exit()
            return
        assert self.token is not None
        self.room.reader = register_reader(self.store, self.token, name)
        if self.on_new_token is not None:
            try:
                self.on_new_token(self.token)
            except Exception as error:  # reading works without it; say so and carry on
                self.notify(message_for_reader(error), severity="warning")
        await self._arrived()

    def _refused(self, start_fresh: bool | None) -> None:
        if not start_fresh:
            self.exit()
        elif self.in_browser:
            self.open_url("/", new_tab=False)  # the server hands out a new reader link there
        else:
            self.token = None
            self.call_later(self.on_mount)

    async def _arrived(self) -> None:
        """The reader is known: greet them, and open the story they asked for, if any."""
        assert self.reader is not None
        self.sub_title = f"reading as {self.reader.name}"
        library = self.screen if isinstance(self.screen, LibraryScreen) else None
        if library is not None:
            library.refresh_stories()
        if self.initial_story_id is not None:
            story_id, self.initial_story_id = self.initial_story_id, None
            self.push_screen(ReadingScreen(self.room, story_id))

    def on_delivery_complete(self, event: events.DeliveryComplete) -> None:
        if self.in_browser:
            self.notify("Your copy of the story is downloading.", title="Exported")
        else:
            # In a terminal the reader is on their own machine: say where the file is.
            self.notify(f"Saved your copy of the story as {event.path}.", title="Exported", timeout=12)

    def on_delivery_failed(self, event: events.DeliveryFailed) -> None:
        log.warning("export failed: %s", event.exception)
        error = event.exception
        if self.in_browser:
            reason = "the download could not be prepared"
        elif isinstance(error, OSError):
            where = f" {error.filename}" if error.filename else ""
            reason = f"could not write{where}: {error.strerror or error}"
        else:
            reason = f"{type(error).__name__}: {error}"
        self.notify(
            f"Your copy of the story was not saved ({reason}); your place in the story is kept"
            + ("." if self.in_browser else "; start `longyarn read` in a folder you can write to."),
            title="Not exported",
            severity="error",
            timeout=15,
        )


def make_reader_app(**options: Any) -> ReaderApp:
    """The reader app, shared by `longyarn read`, its browser sessions and the tests (options:
    `ReaderApp`'s)."""
    return ReaderApp(**options)

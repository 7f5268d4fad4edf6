"""The writers' terminal UI, `longyarn write`.

`make_app` builds it for the CLI and for tests alike. The app holds the desk its screens share:
the store, the `EngineHost` (the engine, None while no model is usable or while one loads:
stories can still be read and exported), the clock, and a signal when the model changes. Work
that talks to the model holds the engine through `EngineHost.in_use`, so saving settings
meanwhile never changes or closes the model under a running step. Nothing slow runs on the
event loop: the engine is built, and the store is written, in threads, so typing and scrolling
never wait for a model load or a locked database.
"""

from __future__ import annotations

import logging
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.signal import Signal

from longyarn.app.session.engine_host import EngineFactory, EngineHost, engine_factory_for
from longyarn.app.settings import Settings, config_path
from longyarn.recurrent_core.engine import Engine
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.store import StoryStore

from .commands import LongyarnCommands
from .desk import Desk, LoadModel
from .screens.help import HelpScreen, help_rows
from .screens.library import LibraryScreen
from .screens.sampling import SamplingScreen
from .screens.settings import SettingsScreen
from .screens.welcome import WelcomeScreen
from .screens.writing import WritingScreen

log = logging.getLogger(__name__)


class LongyarnApp(App[None]):
    """Write stories with a language model, one paragraph at a time."""

    CSS_PATH = "app.tcss"
    TITLE = "longyarn"
    COMMANDS = App.COMMANDS | {LongyarnCommands}
    COMMAND_PALETTE_BINDING = "ctrl+p"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    NOTIFICATION_TIMEOUT = 6

    BINDINGS = [
        Binding("f5", "settings", "Settings", id="settings"),
        Binding("f9", "sampling", "Sampling", id="sampling", show=False,
                tooltip="Sampling: presets and values per role (min-p, penalties, stop sequences)"),
        Binding("f1", "help", "Help", id="help", tooltip="Every key of this screen"),
    ]

    def __init__(
        self,
        *,
        store: StoryStore,
        settings: Settings,
        engine: Engine | None = None,
        engine_factory: EngineFactory | None = None,
        story_id: str | None = None,
        keymap: Mapping[str, str] | None = None,
        first_run: bool | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        """Pass `engine` to use one as is, or `engine_factory` to build one from the settings
        (and again whenever they change). `keymap` defaults to the config file's `[keymap]`
        table; `first_run` defaults to "the config file does not exist yet"."""
        super().__init__()
        host = EngineHost(settings, engine=engine, factory=engine_factory, on_change=self._model_changed)
        self.desk = Desk(
            store=store,
            host=host,
            model_changed=Signal(self, "model-changed"),
            now=now or (lambda: datetime.now(timezone.utc)),
        )
        self.initial_story_id = story_id
        self.keymap = dict(load_keymap() if keymap is None else keymap)
        self.first_run = (not config_path().exists()) if first_run is None else first_run
        self._quit_despite_unsaved = False  # a second Ctrl+Q quits even if an edit could not be stored

    @property
    def engine(self) -> Engine | None:
        return self.desk.host.engine

    @property
    def settings(self) -> Settings:
        """The settings in force (saved ones apply from the next paragraph)."""
        assert self.desk.host.settings is not None
        return self.desk.host.settings

    def _model_changed(self) -> None:
        self.refresh_bindings()
        self.desk.model_changed.publish(None)

    def get_default_screen(self) -> LibraryScreen:
        return LibraryScreen(self.desk)

    async def on_mount(self) -> None:
        host = self.desk.host
        if self.keymap:
            self.set_keymap(self.keymap)
        if host.loading:
            self.load_engine(host.settings, first=True)
        if self.initial_story_id is not None:
            try:
                self.desk.store.get_story(self.initial_story_id)
            except LongyarnError as error:
                self.notify(str(error), severity="error", timeout=10)
            else:
                await self.push_screen(WritingScreen(self.desk.session(self.initial_story_id)))
        if self.first_run or host.problem:
            self.push_screen(WelcomeScreen(host.settings.describe_model(), host.problem), self._welcomed)

    def _welcomed(self, choice: str | None) -> None:
        if choice == "settings":
            self.action_settings()

    async def on_unmount(self) -> None:
        await self.desk.host.aclose()

    def on_load_model(self, message: LoadModel) -> None:
        self.load_engine(message.settings, first=False)

    @work(group="load-model", exit_on_error=False)
    async def load_engine(self, settings: Settings, *, first: bool) -> None:
        """Build the engine for `settings` (in a thread); a failure becomes one sentence: on the
        welcome screen at start-up (`first`), else a notice."""
        problem = await self.desk.host.load(settings)
        if problem is None:
            return
        if not first:
            self.notify(problem, title="No model is usable (F5 opens the settings)", severity="warning", timeout=15)
        elif isinstance(self.screen, WelcomeScreen):
            self.screen.show_problem(problem)
        else:
            self.push_screen(WelcomeScreen(settings.describe_model(), problem), self._welcomed)

    async def action_quit(self) -> None:
        """Quit, storing first the edits still open: a short-term memory edit in its panel, a
        paragraph in its editor (each is stored on leaving it, and quitting never leaves it).
        A screen holding such an edit has `keep_edits()`: store it, False if it could not be."""
        for screen in self.screen_stack:
            keep_edits = getattr(screen, "keep_edits", None)
            if keep_edits is None:
                continue
            if not await keep_edits() and not self._quit_despite_unsaved:
                self._quit_despite_unsaved = True
                self.notify(
                    "longyarn is still open so that your edit is not lost; "
                    "press Ctrl+Q again to quit without it.",
                    title="Not quit",
                    severity="warning",
                    timeout=15,
                )
                return
        self.exit()

    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, HelpScreen):
            screen.dismiss(None)
            return
        title = getattr(screen, "HELP_TITLE", "Keys")
        self.push_screen(HelpScreen(title, help_rows(self, screen)))

    def action_settings(self) -> None:
        if not isinstance(self.screen, SettingsScreen):
            self.push_screen(SettingsScreen(self.desk))

    def action_sampling(self) -> None:
        if not isinstance(self.screen, SamplingScreen):
            self.push_screen(SamplingScreen(self.desk))


def load_keymap(path: Path | None = None) -> dict[str, str]:
    """The `[keymap]` table of the config file: binding ids to keys, e.g. `undo = "ctrl+u"`."""
    path = path or config_path()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    table = document.get("keymap")
    if not isinstance(table, dict):
        return {}
    return {str(binding_id): str(keys) for binding_id, keys in table.items() if isinstance(keys, str)}


def make_app(**options: Any) -> LongyarnApp:
    """The writers' app, shared by `longyarn write` and the tests (options: `LongyarnApp`'s)."""
    return LongyarnApp(**options)


def run_write(settings: Settings, story_id: str | None = None) -> None:
    """Open the store and run the app until the writer quits (what `longyarn write` calls)."""
    from longyarn.storage.db import open_store

    store = open_store(settings.db)
    try:
        make_app(store=store, settings=settings, engine_factory=engine_factory_for(store), story_id=story_id).run()
    finally:
        store.close()

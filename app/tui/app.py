"""The writers' terminal UI, `longyarn write`.

`make_app` builds it for the CLI and for tests alike. The app holds the store, the settings
and the engine (None while no model is usable: stories can still be read and exported).
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

from textual import work
from textual.app import App
from textual.binding import Binding

from app.export import render_story, write_atomically
from app.settings import Settings, config_path
from recurrent_core.engine import Engine
from recurrent_core.errors import LongyarnError
from recurrent_core.store import StoryStore

from .commands import LongyarnCommands
from .screens.dialogs import ExportDialog, ExportRequest
from .screens.library import LibraryScreen
from .screens.settings import SettingsScreen
from .screens.welcome import WelcomeScreen
from .screens.writing import WritingScreen

EngineFactory = Callable[[Settings], Engine]
"""Builds an engine for settings; raises `LongyarnError` when the model cannot be used."""


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
        first_run: bool = False,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.engine = engine
        self.engine_factory = engine_factory
        self.engine_problem: str | None = None
        self.initial_story_id = story_id
        self.keymap = dict(keymap or {})
        self.first_run = first_run
        self.now = now or (lambda: datetime.now(timezone.utc))
        if engine is None and engine_factory is not None:
            self._build_engine(settings)
        elif engine is None:
            self.engine_problem = "No model is configured; open the settings (F5) to choose one."

    def _build_engine(self, settings: Settings) -> None:
        try:
            self.engine = self.engine_factory(settings) if self.engine_factory else None
            self.engine_problem = None
        except LongyarnError as error:
            self.engine = None
            self.engine_problem = str(error)

    def get_default_screen(self) -> LibraryScreen:
        return LibraryScreen()

    async def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        if self.initial_story_id is not None:
            try:
                self.store.get_story(self.initial_story_id)
            except LongyarnError as error:
                self.notify(str(error), severity="error", timeout=10)
            else:
                await self.push_screen(WritingScreen(self.initial_story_id))
        if self.first_run or self.engine_problem:
            self.push_screen(WelcomeScreen(self.settings.describe_model(), self.engine_problem), self._welcomed)

    def _welcomed(self, choice: str | None) -> None:
        if choice == "settings":
            self.action_settings()

    async def on_unmount(self) -> None:
        if self.engine is not None:
            await self.engine.backend.aclose()

    # ---- shared by the screens ----

    def model_summary(self) -> str:
        if self.engine_problem:
            return f"{self.engine_problem}  (F5: settings)"
        return self.settings.describe_model()

    def explain_no_model(self) -> None:
        self.notify(
            self.engine_problem or "No model is configured.",
            title="No model to write with (F5 opens the settings)",
            severity="warning",
            timeout=12,
        )

    def open_story(self, story_id: str, *, write_first: bool = False) -> None:
        self.push_screen(WritingScreen(story_id, write_first=write_first))

    def apply_settings(self, settings: Settings) -> None:
        """Use new settings from now on: a new engine when the app can build one."""
        old_engine = self.engine
        self.settings = settings
        if self.engine_factory is not None:
            self._build_engine(settings)
            if old_engine is not None and old_engine is not self.engine:
                self.run_worker(old_engine.backend.aclose(), group="close-backend")
        elif self.engine is not None:
            self.engine.config = settings.engine_config()
            self.engine_problem = None
        self.refresh_bindings()

    def action_settings(self) -> None:
        if not isinstance(self.screen, SettingsScreen):
            self.push_screen(SettingsScreen())

    def export_story(self, story_id: str) -> None:
        story = self.store.get_story(story_id)
        default = Path.home() / f"{slug(story.title)}.md"

        def export(request: ExportRequest | None) -> None:
            if request is not None:
                self.write_export(story_id, request)

        self.push_screen(ExportDialog(default), export)

    @work(group="export", exit_on_error=False)
    async def write_export(self, story_id: str, request: ExportRequest) -> None:
        story = self.store.get_story(story_id)
        try:
            text = render_story(story, self.store.branch(story_id), request.fmt)  # type: ignore[arg-type]
            write_atomically(request.path, text)
        except OSError as error:
            self.notify(
                f"Could not write {request.path} ({error.strerror or error}); the story is unchanged; "
                "choose another path.",
                title="Not exported",
                severity="error",
                timeout=12,
            )
            return
        self.notify(f"Wrote {request.path}.", title="Exported")


def slug(title: str) -> str:
    """A file name from a title: lower case words joined by hyphens."""
    words = re.findall(r"[\w]+", title.lower())
    return "-".join(words)[:60] or "story"


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


def make_app(
    *,
    store: StoryStore,
    settings: Settings,
    engine: Engine | None = None,
    engine_factory: EngineFactory | None = None,
    story_id: str | None = None,
    keymap: Mapping[str, str] | None = None,
    first_run: bool | None = None,
    now: Callable[[], datetime] | None = None,
) -> LongyarnApp:
    """The writers' app, shared by `longyarn write` and the tests.

    Pass `engine` to use one as is, or `engine_factory` to build one from the settings (and
    again whenever they change). `keymap` defaults to the config file's `[keymap]` table;
    `first_run` defaults to "the config file does not exist yet".
    """
    return LongyarnApp(
        store=store,
        settings=settings,
        engine=engine,
        engine_factory=engine_factory,
        story_id=story_id,
        keymap=load_keymap() if keymap is None else keymap,
        first_run=(not config_path().exists()) if first_run is None else first_run,
        now=now,
    )


def run_write(settings: Settings, story_id: str | None = None) -> None:
    """Open the store and run the app until the writer quits (what `longyarn write` calls)."""
    from recurrent_core.embeddings import default_embedder
    from storage.db import open_store

    from app.models import make_backend

    store = open_store(settings.db)
    embedder = default_embedder()

    def build_engine(chosen: Settings) -> Engine:
        return Engine(store, make_backend(chosen), embedder, chosen.engine_config())

    try:
        make_app(store=store, settings=settings, engine_factory=build_engine, story_id=story_id).run()
    finally:
        store.close()

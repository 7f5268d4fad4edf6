"""The writers' terminal UI, `longyarn write`.

`make_app` builds it for the CLI and for tests alike. The app holds the store, the settings
and the engine (None while no model is usable or while one loads: stories can still be read and
exported). Work that talks to the model holds the engine through `engine_in_use`, so that saving
settings meanwhile never changes or closes the model under a running step: the old engine is
closed (or reconfigured) once its last user is done, and the new settings apply from the next
step. Nothing slow runs on the event loop: the engine is built, and the store is written, in
threads, so typing and scrolling never wait for a model load or a locked database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import tomllib
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.signal import Signal

from longyarn.app.export import render_story, write_atomically
from longyarn.app.settings import Settings, config_path
from longyarn.recurrent_core import parsing
from longyarn.recurrent_core.engine import Engine, EngineConfig
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.store import StoryStore

from .commands import LongyarnCommands
from .formatting import store_failure
from .screens.dialogs import ExportDialog, ExportRequest
from .screens.help import HelpScreen, help_rows
from .screens.library import LibraryScreen
from .screens.settings import SettingsScreen
from .screens.welcome import WelcomeScreen
from .screens.writing import WritingScreen

log = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Engine]
"""Builds an engine for settings; raises `LongyarnError` when the model cannot be used.

It runs in a thread (a local model imports torch and reads its weights), never on the loop.
"""


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
        first_run: bool = False,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.engine = engine
        self.engine_factory = engine_factory
        self.engine_problem: str | None = None
        # True from asking the factory for an engine until it answers (on_mount starts it).
        self.model_loading = engine is None and engine_factory is not None
        # Published whenever the engine, the problem or `model_loading` changes.
        self.model_changed_signal: Signal[None] = Signal(self, "model-changed")
        self.initial_story_id = story_id
        self.keymap = dict(keymap or {})
        self.first_run = first_run
        self.now = now or (lambda: datetime.now(timezone.utc))
        # How many tasks (a step, a new story's outline) use each engine right now.
        self._engine_users: dict[Engine, int] = {}
        # Replaced engines still in use: closed when their last user is done.
        self._retired: set[Engine] = set()
        # Settings saved mid-step for an engine the app cannot rebuild (no factory).
        self._pending_config: EngineConfig | None = None
        self._quit_despite_unsaved = False  # a second Ctrl+Q quits even if an edit could not be stored
        self._standing_fallbacks_told: set[str] = set()  # see `tell_fallbacks`
        if engine is None and engine_factory is None:
            self.engine_problem = "No model is configured; open the settings (F5) to choose one."

    def get_default_screen(self) -> LibraryScreen:
        return LibraryScreen()

    async def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        if self.model_loading:
            self.load_engine(self.settings, retiring=None, first=True)
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
        engines = self._retired | ({self.engine} if self.engine is not None else set())
        self._retired.clear()
        for engine in engines:
            await _close_backend(engine)

    # ---- the engine's users ----

    @contextlib.asynccontextmanager
    async def engine_in_use(self) -> AsyncIterator[Engine | None]:
        """The current engine (None if there is none), kept as it is until the block ends.

        Settings saved meanwhile take effect for later users; this one finishes on the model
        it began with, whose backend is closed only after its last user is done.
        """
        engine = self.engine
        if engine is None:
            yield None
            return
        self._engine_users[engine] = self._engine_users.get(engine, 0) + 1
        try:
            yield engine
        finally:
            users = self._engine_users.pop(engine) - 1
            if users:
                self._engine_users[engine] = users
            elif engine in self._retired:
                self._retired.discard(engine)
                # Shielded: a cancelled step must still close what it kept open.
                await asyncio.shield(_close_backend(engine))
            elif engine is self.engine and self._pending_config is not None:
                engine.config, self._pending_config = self._pending_config, None

    def engine_busy(self) -> str | None:
        """The model a running task is using, if any (for the notice when settings change)."""
        busy = next(iter(self._engine_users), None)
        return busy.backend.info.model if busy is not None else None

    async def _retire(self, engine: Engine) -> None:
        """Close a replaced engine's backend now, or when its last user is done."""
        if self._engine_users.get(engine):
            self._retired.add(engine)
        else:
            await _close_backend(engine)

    # ---- shared by the screens ----

    def model_summary(self) -> str:
        if self.model_loading:
            return f"Loading the model… {self.settings.describe_model()}"
        if self.engine_problem:
            return f"{self.engine_problem}  (F5: settings)"
        return self.settings.describe_model()

    def explain_no_model(self) -> None:
        if self.model_loading:
            self.notify(
                "The model is still loading; you can write as soon as it is ready.",
                title="Loading the model…",
                timeout=6,
            )
            return
        self.notify(
            self.engine_problem or "No model is configured.",
            title="No model to write with (F5 opens the settings)",
            severity="warning",
            timeout=12,
        )

    def tell_fallbacks(self, sentences: tuple[str, ...]) -> None:
        """A notice for each fallback a step took; one that describes the model (a prose-only
        model's memory and instructions, `parsing.MODEL_FALLBACKS`) only the first time since
        the model was chosen: with every paragraph, several at once while keeping writing,
        it would bury the story."""
        for sentence in parsing.fallbacks_to_tell(sentences, self._standing_fallbacks_told):
            self.notify(sentence, severity="warning", timeout=8)

    def open_story(self, story_id: str, *, write_first: bool = False) -> None:
        self.push_screen(WritingScreen(story_id, write_first=write_first))

    def apply_settings(self, settings: Settings) -> None:
        """Use new settings from now on: a new engine when the app can build one.

        The engine is then built in a worker; `model_loading` holds until it lands, and
        `model_changed_signal` tells the screens when it has (or why it could not). A step
        already running finishes on the engine it began with (see `engine_in_use`).
        """
        self.settings = settings
        self._standing_fallbacks_told.clear()  # another model: tell what it cannot do, once
        if self.engine_factory is not None:
            retiring = self.engine
            self.engine, self.engine_problem, self.model_loading = None, None, True
            self._pending_config = None
            self.load_engine(settings, retiring=retiring, first=False)
            self.model_changed_signal.publish(None)
        elif self.engine is not None:
            config = settings.engine_config()
            if self._engine_users.get(self.engine):
                self._pending_config = config  # a running step reads its config as it goes
            else:
                self.engine.config = config
            self.engine_problem = None
        self.refresh_bindings()

    @work(group="load-model", exit_on_error=False)
    async def load_engine(self, settings: Settings, *, retiring: Engine | None, first: bool) -> None:
        """Build the engine for `settings` in a thread, then use it (and close `retiring`'s backend).

        A failure becomes one sentence: on the welcome screen at start-up (`first`), else a notice.
        """
        assert self.engine_factory is not None
        engine: Engine | None = None
        problem: str | None = None
        try:
            engine = await asyncio.to_thread(self.engine_factory, settings)
        except LongyarnError as error:
            problem = str(error)
        except Exception as error:  # a bug in a backend must not leave the app loading forever
            log.exception("building the engine failed")
            problem = (
                f"The model could not be loaded ({type(error).__name__}: {error}); the settings "
                "were kept; check them (F5) and try again."
            )
        if settings is not self.settings:
            # Newer settings were saved while this loaded: their engine is the one to use.
            for unused in (engine, retiring):
                if unused is not None:
                    await self._retire(unused)
            return
        self.engine, self.engine_problem, self.model_loading = engine, problem, False
        self.refresh_bindings()
        self.model_changed_signal.publish(None)
        if retiring is not None:
            await self._retire(retiring)
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
        """Read the branch, render it and write the file in a thread; say how it went."""
        try:
            await asyncio.to_thread(self._export, story_id, request)
        except OSError as error:
            problem = (
                f"Could not write {request.path} ({error.strerror or error}); the story is unchanged; "
                "choose another path."
            )
        except Exception as error:
            problem = store_failure(error, f"read the story to export it to {request.path}")
        else:
            self.notify(f"Wrote {request.path}.", title="Exported")
            return
        self.notify(problem, title="Not exported", severity="error", timeout=12)

    def _export(self, story_id: str, request: ExportRequest) -> None:
        story = self.store.get_story(story_id)
        text = render_story(story, self.store.branch(story_id), request.fmt)  # type: ignore[arg-type]
        write_atomically(request.path, text)


async def _close_backend(engine: Engine) -> None:
    try:
        await engine.backend.aclose()
    except Exception:  # closing must never take the app down; the log says what happened
        log.exception("closing the model backend failed")


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
    from longyarn.recurrent_core.embeddings import default_embedder
    from longyarn.storage.db import open_store

    from longyarn.app.models import make_backend

    store = open_store(settings.db)
    embedder = default_embedder()

    def build_engine(chosen: Settings) -> Engine:
        return Engine(store, make_backend(chosen), embedder, chosen.engine_config())

    try:
        make_app(store=store, settings=settings, engine_factory=build_engine, story_id=story_id).run()
    finally:
        store.close()

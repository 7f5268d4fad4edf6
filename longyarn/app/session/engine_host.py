"""Building the engine, and owning its lifecycle for the front ends that share it.

Every front end builds its engine the same way (`make_engine`): the store, the backend the
settings ask for, the one offline embedder of the process, and the settings' engine config.

`EngineHost` is what a long-running front end (the writers' UI) holds instead of an engine: it
builds one from the settings in a thread, hands it to work that needs a model (`in_use`), and
swaps it when the settings change. Work holding an engine finishes on the model it began with:
a replaced engine's backend is closed once its last user is done, and new settings apply from
the next user. Nothing here knows about Textual; the UI turns `on_change` into its own signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Callable, Iterable

from longyarn.app.settings import Settings
from longyarn.recurrent_core.engine import Engine, EngineConfig
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.replies.fallbacks import fallbacks_to_tell
from longyarn.recurrent_core.store import StoryStore

log = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Engine]
"""Builds an engine for settings; raises `LongyarnError` when the model cannot be used.

It runs in a thread (a local model imports torch and reads its weights), never on the loop.
"""

NO_MODEL = "No model is configured; open the settings (F5) to choose one."


class NoModel(LongyarnError):
    """Work that needs a model found none ready (still loading, or none usable)."""


def make_engine(store: StoryStore, settings: Settings) -> Engine:
    """The engine for `settings` over `store`: what the CLI, the writers' UI and the reader use."""
    from longyarn.app.models import make_backend
    from longyarn.recurrent_core.embeddings import default_embedder

    return Engine(store, make_backend(settings), default_embedder(), settings.engine_config())


def engine_factory_for(store: StoryStore) -> EngineFactory:
    """An `EngineFactory` that builds engines over `store` with `make_engine`."""

    def build(settings: Settings) -> Engine:
        return make_engine(store, settings)

    return build


class EngineHost:
    """The engine that front ends share, kept as settings change.

    Pass `engine` to use one as it is, or `factory` to build one from the settings (and again
    whenever they change). `settings` may be None where an engine is given and nothing will
    change it (batch). `on_change` is called whenever `engine`, `problem` or `loading` changes.
    """

    def __init__(
        self,
        settings: Settings | None,
        *,
        engine: Engine | None = None,
        factory: EngineFactory | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.factory = factory
        self.on_change = on_change or (lambda: None)
        # True from asking the factory for an engine until it answers (see `load`).
        self.loading = engine is None and factory is not None
        self.problem: str | None = None if engine is not None or factory is not None else NO_MODEL
        # How many tasks (a step, a new story's outline) use each engine right now.
        self._users: dict[Engine, int] = {}
        # Replaced engines still in use: closed when their last user is done.
        self._retired: set[Engine] = set()
        # Settings saved mid-step for an engine the host cannot rebuild (no factory).
        self._pending_config: EngineConfig | None = None
        self._replaced: Engine | None = None  # the engine new settings replace, until `load` runs
        self._standing_fallbacks_told: set[str] = set()  # see `fallbacks_to_tell`
        self._building = threading.Lock()  # see `engine_now`

    # ---- the engine's users ----

    @contextlib.asynccontextmanager
    async def in_use(self) -> AsyncIterator[Engine | None]:
        """The current engine (None if there is none), kept as it is until the block ends.

        Settings saved meanwhile take effect for later users; this one finishes on the model
        it began with, whose backend is closed only after its last user is done.
        """
        engine = self.engine
        if engine is None:
            yield None
            return
        self._users[engine] = self._users.get(engine, 0) + 1
        try:
            yield engine
        finally:
            users = self._users.pop(engine) - 1
            if users:
                self._users[engine] = users
            elif engine in self._retired:
                self._retired.discard(engine)
                # Shielded: a cancelled step must still close what it kept open.
                await asyncio.shield(close_backend(engine))
            elif engine is self.engine and self._pending_config is not None:
                engine.config, self._pending_config = self._pending_config, None

    @contextlib.asynccontextmanager
    async def model(self, why_none: str | None = None) -> AsyncIterator[Engine]:
        """`in_use`, for work that cannot go on without a model: `NoModel` (`why_none`, else why
        there is none) when there is none."""
        async with self.in_use() as engine:
            if engine is None:
                raise NoModel(why_none or self.why_no_model()[1])
            yield engine

    def engine_now(self) -> Engine:
        """The engine, built in the calling thread if there is none yet: a reader needs a model
        only for their first new paragraph, so reading alone never loads one. Raises
        `LongyarnError` (one sentence) when none can be built."""
        with self._building:
            if self.engine is None:
                if self.factory is None:
                    raise LongyarnError(self.problem or NO_MODEL)
                self.engine = self.factory(self.settings)  # type: ignore[arg-type]
                self.loading, self.problem = False, None
        return self.engine

    def busy_model(self) -> str | None:
        """The model a running task is using, if any (for the notice when settings change)."""
        busy = next(iter(self._users), None)
        return busy.backend.info.model if busy is not None else None

    async def _retire(self, engine: Engine) -> None:
        """Close a replaced engine's backend now, or when its last user is done."""
        if self._users.get(engine):
            self._retired.add(engine)
        else:
            await close_backend(engine)

    # ---- what the front end says about the model ----

    def summary(self) -> str:
        """One line on the model: loading, unusable and why, or which one is in use."""
        described = self.settings.describe_model() if self.settings is not None else ""
        if self.loading:
            return f"Loading the model… {described}"
        if self.problem:
            return f"{self.problem}  (F5: settings)"
        return described

    def why_no_model(self) -> tuple[str, str, bool]:
        """(title, sentence, whether it is only loading) for work that needs a model now."""
        if self.loading:
            return (
                "Loading the model…",
                "The model is still loading; you can write as soon as it is ready.",
                True,
            )
        return ("No model to write with (F5 opens the settings)", self.problem or "No model is configured.", False)

    def fallbacks_to_tell(self, sentences: Iterable[str]) -> list[str]:
        """The step's fallbacks worth a notice: one that describes the model (a prose-only
        model's memory and instructions) only the first time since the model was chosen."""
        return fallbacks_to_tell(sentences, self._standing_fallbacks_told)

    # ---- settings ----

    def apply_settings(self, settings: Settings) -> bool:
        """Use new settings from now on; True if a new engine must now be built (`load`).

        Without a factory the engine keeps its model and takes the new engine config, at once
        or, while a step runs, when it ends (a running step reads its config as it goes).
        """
        self.settings = settings
        self._standing_fallbacks_told.clear()  # another model: tell what it cannot do, once
        if self.factory is not None:
            self._replaced = self._replaced or self.engine
            self.engine, self.problem, self.loading = None, None, True
            self._pending_config = None
            self.on_change()
            return True
        if self.engine is not None:
            config = settings.engine_config()
            if self._users.get(self.engine):
                self._pending_config = config
            else:
                self.engine.config = config
            self.problem = None
        return False

    async def load(self, settings: Settings) -> str | None:
        """Build the engine for `settings` in a thread and use it, closing the one it replaces.

        Returns the problem in one sentence if no model is usable (None when it loaded, or when
        newer settings arrived meanwhile: their load is the one that counts).
        """
        assert self.factory is not None
        retiring, self._replaced = self._replaced, None
        engine: Engine | None = None
        problem: str | None = None
        try:
            engine = await asyncio.to_thread(self.factory, settings)
        except LongyarnError as error:
            problem = str(error)
        except Exception as error:  # a bug in a backend must not leave the front end loading forever
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
            return None
        self.engine, self.problem, self.loading = engine, problem, False
        self.on_change()
        if retiring is not None:
            await self._retire(retiring)
        return problem

    async def aclose(self) -> None:
        """Close every engine's backend (the front end is closing)."""
        engines = self._retired | ({self.engine} if self.engine is not None else set())
        self._retired.clear()
        for engine in engines:
            await close_backend(engine)


async def close_backend(engine: Engine) -> None:
    """Close an engine's backend; closing must never take a front end down (the log says why)."""
    try:
        await engine.backend.aclose()
    except Exception:
        log.exception("closing the model backend failed")

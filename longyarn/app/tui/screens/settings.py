"""Settings: which model, how it samples, how much it recalls; saved in the config file.

The API key can be entered here. It is written to the config file only when the writer ticks
"save the key"; otherwise it lives in this session only. It is never shown again in full.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static, Switch

from longyarn.app.settings import Settings, config_path, first_problem, save_settings
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.types import Sampling

from longyarn.app.ui.formatting import mask_key

from ..desk import Desk, LoadModel
from .dialogs import UnsavedEditDialog
from .help import KeysFooter

ROLES = ("writer", "memory", "planner")
SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens")
BACKENDS = [
    ("Automatic: a key or a base URL means a server, else local", "auto"),
    ("OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp…)", "openai"),
    ("Local model (RWKV-7 on this machine)", "local"),
]


def key_saved_in_config() -> bool:
    try:
        return "api_key" in tomllib.loads(config_path().read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False


class SettingsScreen(Screen):
    """Edit and save the model settings."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="settings-back",
                tooltip="Back; if you changed anything, ask first: keep editing, save or discard"),
        Binding("ctrl+s", "save", "Save", id="settings-save", priority=True),
    ]

    def __init__(self, desk: Desk) -> None:
        super().__init__()
        self.desk = desk
        self.host = desk.host
        self.saved_in: Path | None = None  # set from saving until the new model is ready
        settings = self.host.settings
        # The JRT switch shows the choice for the kind of model the form names; each kind keeps its own.
        self.jrt_choice = {kind: settings.jrt_repeats_for(kind) == 2 for kind in ("openai", "local")}
        self._opened_with: dict[str, object] = {}

    def on_mount(self) -> None:
        self.desk.model_changed.subscribe(self, self._model_changed)
        self._opened_with = self._form_values()

    def _form_values(self) -> dict[str, object]:
        """What every field of the form says now (to tell whether the writer changed any)."""
        values: dict[str, object] = {
            widget.id: widget.value for widget in self.query("Input, Select, Checkbox") if widget.id
        }
        values["jrt"] = dict(self.jrt_choice)
        return values

    @property
    def changed(self) -> bool:
        return self.is_mounted and self._form_values() != self._opened_with

    def form_backend_kind(self) -> str:
        """The kind of model the form names: "openai" or "local" (automatic: a server when a key
        or a base URL is given, as `Settings.resolved_backend` decides)."""
        chosen = self.query_one("#backend", Select).value
        if chosen in ("openai", "local"):
            return str(chosen)
        key = self._value("api-key") or self.host.settings.api_key
        return "openai" if (key or self._value("base-url")) else "local"

    def _jrt_label(self, kind: str) -> str:
        if kind == "local":
            return "Read the prompt twice (JRT) for the local model: better recall for a recurrent model"
        return "Read the prompt twice (JRT) for servers too: rarely helps, doubles every prompt's cost"

    @on(Select.Changed, "#backend")
    @on(Input.Changed, "#base-url")
    @on(Input.Changed, "#api-key")
    def _kind_may_have_changed(self) -> None:
        if not self.is_mounted:
            return
        kind = self.form_backend_kind()
        self.query_one("#jrt", Switch).value = self.jrt_choice[kind]
        self.query_one("#jrt-label", Label).update(self._jrt_label(kind))

    @on(Switch.Changed, "#jrt")
    def _jrt_changed(self, event: Switch.Changed) -> None:
        self.jrt_choice[self.form_backend_kind()] = event.value

    def action_back(self) -> None:
        """Leave; if anything was changed, ask first: keep editing (the default), save, or discard."""
        if not self.changed:
            self.app.pop_screen()
            return

        def answered(choice: str | None) -> None:
            if choice == "save":
                self.action_save()
            elif choice == "discard":
                self.app.pop_screen()

        self.app.push_screen(UnsavedEditDialog("You changed the settings. Save the change?"), answered)

    def compose(self) -> ComposeResult:
        settings = self.host.settings
        sampling = settings.engine_config().sampling
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        yield Static("Settings", classes="screen-title")
        with VerticalScroll(id="settings-form"):
            yield Static(settings.describe_model(), id="settings-model", markup=False)
            if self.host.problem:
                yield Static(self.host.problem, id="settings-problem", classes="problem", markup=False)
            yield Label("Backend")
            yield Select(BACKENDS, value=settings.backend, allow_blank=False, id="backend")
            yield Label("Model name (on the server)")
            yield Input(settings.model or "", placeholder="gpt-4o-mini", id="model")
            yield Label("Base URL of an OpenAI-compatible server")
            yield Input(settings.base_url or "", placeholder="https://api.openai.com/v1", id="base-url")
            yield Label("API key")
            yield Input(
                "",
                password=True,
                placeholder=f"kept: {mask_key(key)} (type a new key to replace it)" if key else "none",
                id="api-key",
            )
            yield Checkbox(
                "Save the key in the config file (otherwise it is kept for this session only)",
                value=key_saved_in_config(),
                id="save-key",
            )
            yield Label("Local model checkpoint (a .pth file or a longyarn model folder)")
            yield Input(settings.checkpoint or "", placeholder="the bundled demo model", id="checkpoint")
            kind = settings.resolved_backend()
            with Horizontal(classes="switch-row"):
                yield Switch(value=self.jrt_choice[kind], id="jrt")
                yield Label(self._jrt_label(kind), id="jrt-label")
            yield Label("Memories recalled per step")
            yield Input(str(settings.recall_k), type="integer", id="recall-k")
            yield Label("Sampling per role")
            with Grid(id="sampling"):
                yield Static("")
                for field in SAMPLING_FIELDS:
                    yield Static(field.replace("_", " "), classes="grid-head")
                for role in ROLES:
                    yield Static(role, classes="grid-head")
                    for field in SAMPLING_FIELDS:
                        kind = "integer" if field == "max_tokens" else "number"
                        yield Input(str(getattr(sampling[role], field)), type=kind, id=f"{role}-{field}")
            with Horizontal(classes="buttons"):
                yield Button("Back", id="back")
                yield Button("Save  ^s", id="save", variant="primary")
            yield Static(f"Save (^s) writes them to {config_path()}", classes="hint", markup=False)
        yield KeysFooter()

    @on(Button.Pressed, "#back")
    def _back(self) -> None:
        self.action_back()

    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def edited_settings(self) -> Settings:
        """The settings as the form says; raises LongyarnError with one sentence if invalid."""
        current = self.host.settings
        values: dict[str, Any] = current.model_dump()
        values.update(
            backend=self.query_one("#backend", Select).value,
            model=self._value("model") or None,
            base_url=self._value("base-url") or None,
            checkpoint=self._value("checkpoint") or None,
            jrt_local=self.jrt_choice["local"],
            jrt_server=self.jrt_choice["openai"],
            recall_k=self._value("recall-k") or current.recall_k,
        )
        new_key = self._value("api-key")
        values["api_key"] = new_key or current.api_key
        try:
            sampling = dict(current.sampling)
            for role in ROLES:
                base = current.engine_config().sampling[role]
                typed = {field: self._value(f"{role}-{field}") for field in SAMPLING_FIELDS}
                sampling[role] = Sampling.model_validate(base.model_dump() | {k: v for k, v in typed.items() if v})
            values["sampling"] = sampling
            return Settings(**values)
        except ValidationError as error:
            where, problem = first_problem(error)
            raise LongyarnError(
                f"The setting {' '.join(where) or 'a setting'} is not valid ({problem}); nothing was "
                "saved; fix it and save again."
            ) from None

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        try:
            settings = self.edited_settings()
            path = save_settings(settings, include_api_key=self.query_one("#save-key", Checkbox).value)
        except LongyarnError as error:
            self.notify(str(error), title="Settings not saved", severity="error", timeout=12)
            return
        busy_model = self.host.busy_model()
        if self.host.apply_settings(settings):
            self.post_message(LoadModel(settings))
        self.app.refresh_bindings()
        self.saved_in = path
        if busy_model is not None:
            self.notify(
                f"What the model is writing now finishes with {busy_model}, as it began.",
                title="Settings apply from the next paragraph",
                timeout=8,
            )
        if self.host.loading:
            # The model loads in the background; this screen stays usable and hears back.
            self.query_one("#settings-model", Static).update(self.host.summary())
            return
        self._saved()

    def _model_changed(self, _: object = None) -> None:
        if self.saved_in is not None and not self.host.loading:
            self._saved()

    def _saved(self) -> None:
        """Leave once the saved settings work; stay, showing why, when no model is usable."""
        path, self.saved_in = self.saved_in, None
        settings = self.host.settings
        problem = self.host.problem
        if problem is None:
            self.notify(f"Saved in {path}. {settings.describe_model()}", title="Settings saved", timeout=6)
            if self.is_current:
                self.app.pop_screen()
            return
        self.query_one("#settings-model", Static).update(settings.describe_model())
        if self.query("#settings-problem"):
            self.query_one("#settings-problem", Static).update(problem)
        else:
            self.query_one("#settings-form").mount(
                Static(problem, id="settings-problem", classes="problem", markup=False),
                after="#settings-model",
            )
        if self.host.factory is None:  # the app tells of a failed load itself
            self.notify(problem, title=f"Saved in {path}, but no model is usable", severity="warning", timeout=15)

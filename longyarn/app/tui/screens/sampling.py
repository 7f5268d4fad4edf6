"""Sampling as writers know it: per role, a named preset or one's own values (temperature, top-p,
top-k, min-p, the penalties, stop sequences), and presets of one's own, saved by name.

The local model samples with all of them (longyarn's own sampler); a server is sent what it
accepts, and one that refuses a setting is asked again without it, as the step then says.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from longyarn.app.settings import Settings, first_problem, save_settings
from longyarn.app.ui.widgets import ProseArea
from longyarn.recurrent_core.engine_config import SAMPLING_PRESETS, default_sampling
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.types import Sampling

from ..desk import Desk, LoadModel
from .help import KeysFooter
from .settings import key_saved_in_config

ROLES = tuple(default_sampling())
CUSTOM = "custom"
FIELDS = (
    ("temperature", "Temperature", "number"),
    ("top_p", "Top-p", "number"),
    ("top_k", "Top-k (0: off)", "integer"),
    ("min_p", "Min-p (0: off)", "number"),
    ("presence_penalty", "Presence penalty", "number"),
    ("frequency_penalty", "Frequency penalty", "number"),
    ("repetition_penalty", "Repetition penalty (1: off)", "number"),
    ("max_tokens", "Max tokens", "integer"),
)


class SamplingScreen(Screen):
    """Choose each role's preset or values, save presets of one's own, and save the settings."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="sampling-back"),
        Binding("ctrl+s", "save", "Save", id="sampling-save", priority=True),
    ]
    HELP_TITLE = "Keys for sampling"

    def __init__(self, desk: Desk) -> None:
        super().__init__(id="sampling-screen")
        self.desk = desk
        settings = desk.host.settings
        assert settings is not None
        self.presets: dict[str, Sampling] = dict(settings.sampling_presets)
        effective = settings.engine_config().sampling
        # Each role's choice while the screen is open: a preset's name, or its own values.
        self.chosen: dict[str, str] = {role: settings.role_presets.get(role, CUSTOM) for role in ROLES}
        self.values: dict[str, Sampling] = {role: effective[role] for role in ROLES}
        self.role = "writer"
        self._options_shown = self._preset_options()  # what the preset list offers now

    def all_presets(self) -> dict[str, Sampling]:
        return {**SAMPLING_PRESETS, **self.presets}

    def compose(self) -> ComposeResult:
        yield Static("Sampling", classes="screen-title")
        with VerticalScroll(id="sampling-form"):
            yield Static(
                "The local model uses every setting here. A server is sent what it accepts; one that "
                "refuses a setting is asked again without it, and the step says so.",
                classes="hint",
                markup=False,
            )
            with Horizontal(classes="sampling-choice"):
                with VerticalScroll(classes="sampling-column"):
                    yield Label("Role")
                    yield Select([(role, role) for role in ROLES], value=self.role, allow_blank=False, id="role")
                with VerticalScroll(classes="sampling-column"):
                    yield Label("Preset")
                    yield Select(self._preset_options(), value=self.chosen[self.role], allow_blank=False, id="preset")
            with Grid(id="sampling-fields"):
                for name, label, kind in FIELDS:
                    yield Label(label)
                    yield Input(id=f"field-{name}", type=kind)
            yield Label("Stop sequences: the reply ends before any of them (one a line, at most 4)")
            yield ProseArea(id="stop")
            with Horizontal(classes="buttons"):
                yield Input(placeholder="a name for these values", id="preset-name")
                yield Button("Save as preset", id="save-preset")
            with Horizontal(classes="buttons"):
                yield Button("Back", id="back")
                yield Button("Save  ^s", id="save", variant="primary")
        yield KeysFooter()

    def on_mount(self) -> None:
        self._show(self.role)

    def _preset_options(self) -> list[tuple[str, str]]:
        return [("custom: the values below", CUSTOM)] + [(name, name) for name in self.all_presets()]

    # ---- moving between roles and presets ----

    def _show(self, role: str) -> None:
        sampling = self.values[role]
        for name, _, _ in FIELDS:
            self.query_one(f"#field-{name}", Input).value = str(getattr(sampling, name))
        self.query_one("#stop", TextArea).load_text("\n".join(sampling.stop))
        preset = self.query_one("#preset", Select)
        with preset.prevent(Select.Changed):  # the screen changes it: no writer's choice to act on
            if self._options_shown != self._preset_options():
                self._options_shown = self._preset_options()
                preset.set_options(self._options_shown)
            preset.value = self.chosen[role]

    def _read(self) -> Sampling:
        """The values the form shows now; `LongyarnError` (one sentence) if one is not valid."""
        fields: dict[str, Any] = {name: self.query_one(f"#field-{name}", Input).value.strip() for name, _, _ in FIELDS}
        fields = {name: value for name, value in fields.items() if value}
        stops = [line for line in self.query_one("#stop", TextArea).text.splitlines() if line.strip()]
        try:
            return Sampling.model_validate(self.values[self.role].model_dump() | fields | {"stop": tuple(stops)})
        except ValidationError as error:
            where, problem = first_problem(error)
            raise LongyarnError(
                f"The {self.role}'s {' '.join(where) or 'sampling'} is not valid ({problem}); nothing was "
                "saved; fix it and save again."
            ) from None

    def _keep_form(self) -> bool:
        """Take the form's values for the role shown; False (having said why) if one is not valid."""
        try:
            values = self._read()
        except LongyarnError as error:
            self.notify(str(error), title="Sampling not saved", severity="error", timeout=12)
            return False
        if values != self.values[self.role]:
            self.values[self.role] = values
            chosen = self.all_presets().get(self.chosen[self.role])
            if chosen is not None and _as_preset(values) != _as_preset(chosen):
                self.chosen[self.role] = CUSTOM  # edited away from its preset
        return True

    @on(Select.Changed, "#role")
    def _role_changed(self, event: Select.Changed) -> None:
        if event.value == self.role or not self._keep_form():
            return
        self.role = str(event.value)
        self._show(self.role)

    @on(Select.Changed, "#preset")
    def _preset_changed(self, event: Select.Changed) -> None:
        name = str(event.value)
        if name == self.chosen[self.role]:
            return
        self.chosen[self.role] = name
        preset = self.all_presets().get(name)
        if preset is not None:
            self.values[self.role] = preset.model_copy(update={"max_tokens": self.values[self.role].max_tokens})
            self._show(self.role)

    @on(Button.Pressed, "#save-preset")
    @on(Input.Submitted, "#preset-name")
    def _save_preset(self) -> None:
        name = " ".join(self.query_one("#preset-name", Input).value.split()).lower()
        if not name or name == CUSTOM or name in SAMPLING_PRESETS:
            self.notify("Give the preset a name of its own (not one of longyarn's).", severity="warning")
            return
        if not self._keep_form():
            return
        self.presets[name] = self.values[self.role]
        self.chosen[self.role] = name
        self._show(self.role)
        self.notify(f"Saved the preset “{name}”; Save (^s) keeps it for later sessions.", timeout=6)

    # ---- saving ----

    @on(Button.Pressed, "#back")
    def _back(self) -> None:
        self.app.pop_screen()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        if not self._keep_form():
            return
        host = self.desk.host
        current = host.settings
        assert current is not None
        sampling = dict(current.sampling)
        role_presets = {}
        for role in ROLES:
            if self.chosen[role] != CUSTOM:
                role_presets[role] = self.chosen[role]
                sampling.pop(role, None)
            elif self.values[role] != current.engine_config().sampling[role]:
                sampling[role] = self.values[role]
        try:
            settings = Settings(**(current.model_dump() | {
                "api_key": current.api_key, "sampling": sampling, "sampling_presets": self.presets,
                "role_presets": role_presets,
            }))
            path = save_settings(settings, include_api_key=key_saved_in_config())
        except (ValidationError, LongyarnError) as error:
            message = str(error) if isinstance(error, LongyarnError) else first_problem(error)[1]
            self.notify(message, title="Sampling not saved", severity="error", timeout=12)
            return
        if host.apply_settings(settings):
            self.post_message(LoadModel(settings))
        self.notify(f"Saved in {path}; the next paragraph is written with it.", title="Sampling saved", timeout=6)
        self.app.pop_screen()


def _as_preset(sampling: Sampling) -> dict:
    """What a preset decides: everything but the length."""
    return sampling.model_dump(exclude={"max_tokens"})

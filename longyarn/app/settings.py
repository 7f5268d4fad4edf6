"""Settings: defaults, then the TOML config file, then `LONGYARN_*` variables, then CLI flags.

The config file lives in the platform's config dir (e.g. ~/.config/longyarn/config.toml); the
database in the platform's data dir. `OPENAI_API_KEY` and `OPENAI_BASE_URL` are honoured.
The API key is a secret: it is never printed and never stored in the database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from longyarn.recurrent_core.engine import EngineConfig, default_sampling
from longyarn.recurrent_core.engine_config import SAMPLING_PRESETS
from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.prompts import FORMER_ROLE_NAMES
from longyarn.recurrent_core.types import Sampling

APP_NAME = "longyarn"


def config_path() -> Path:
    override = os.environ.get("LONGYARN_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def prompts_folder() -> Path:
    """The writer's own prompt templates (see longyarn.app.prompt_overrides): next to the config
    file, or where LONGYARN_PROMPTS says."""
    override = os.environ.get("LONGYARN_PROMPTS")
    return Path(override).expanduser() if override else config_path().parent / "prompts"


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "longyarn.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LONGYARN_",
        extra="forbid",
        populate_by_name=True,
        env_nested_delimiter="__",
    )

    db: str = Field(default_factory=lambda: str(default_db_path()))
    backend: Literal["auto", "openai", "local"] = "auto"
    model: str | None = None
    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("LONGYARN_BASE_URL", "OPENAI_BASE_URL")
    )
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("LONGYARN_API_KEY", "OPENAI_API_KEY")
    )
    checkpoint: str | None = None
    device: str = "cpu"
    # How the local model keeps its weights on a CPU: half (fp16 or bf16, as the checkpoint
    # allows), fp32 (exact), fp16, bf16 or int8 (fastest, a little less exact).
    weights: Literal["half", "fp32", "fp16", "bf16", "int8"] = "half"
    recall_k: int = Field(3, ge=0, le=50)
    # JRT ("just read twice": the context sent twice) helps a recurrent model recall; a server's
    # transformer does not need it and would pay for every prompt twice. So it is set per kind.
    jrt_local: bool = True
    jrt_server: bool = False
    parse_retries: int = Field(2, ge=0, le=5)
    # A paragraph that still degenerates after two gentler retries: keep the best, flagged, or stop.
    degeneration: Literal["keep", "stop"] = "keep"
    context_budget_tokens: int = Field(3000, ge=256, le=1_000_000)
    # The writer prompt's Chapters section: the chapter being written, then earlier chapters'
    # summaries, newest first, within this many tokens (the oldest are left out first).
    chapter_budget_tokens: int = Field(600, ge=50, le=100_000)
    # The author an exported book (.epub) names when `export --author` does not; unset: "Anonymous".
    author: str | None = None
    # The story bible's section of each writer prompt (see recurrent_core.bible_activation): its
    # own token budget inside the context budget, how close in meaning to the instruction an
    # entry must be to come in unnamed (cosine similarity, 0-1) and how many may come in so, and
    # how many of the last paragraphs are searched for entries' names.
    bible_budget_tokens: int = Field(600, ge=0, le=100_000)
    bible_meaning_threshold: float = Field(0.4, ge=0.0, le=1.0)
    bible_meaning_max: int = Field(3, ge=0, le=50)
    bible_scan_paragraphs: int = Field(3, ge=0, le=50)
    request_timeout_s: float = Field(120.0, gt=0)
    # Requests sent at once to an OpenAI-compatible server: "auto" drops to one at a time when
    # the server cuts requests that overlap (llama-cpp-python's server, Ollama, LM Studio).
    server_concurrency: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] = "auto"
    sampling: dict[str, Sampling] = Field(default_factory=dict)
    # The writer's own named sampling presets (beside SAMPLING_PRESETS), and the preset each role
    # uses; a role's own [sampling.ROLE] values, when it has them, win over its preset.
    sampling_presets: dict[str, Sampling] = Field(default_factory=dict)
    role_presets: dict[str, str] = Field(default_factory=dict)
    keymap: dict[str, str] = Field(default_factory=dict)  # binding id -> keys; read by the UI
    # The writers' UI: apply the story bible updates the model proposes without asking (batch always does).
    bible_auto_accept: bool = False
    # After each paragraph, check it against the story bible's facts in force (one more model call).
    continuity_checks: bool = True
    reader_steps_per_minute: int = Field(6, ge=1, le=600)
    reader_action_chars: int = Field(500, ge=20, le=4000)
    # The web reader: paragraphs written at once per server process (more readers wait in
    # line and are shown their place), and how long a claimed move outlives its process.
    reader_concurrent_steps: int = Field(128, ge=1, le=1024)
    reader_move_lease_s: float = Field(30.0, ge=2.0, le=600.0)

    @field_validator("sampling")
    @classmethod
    def _known_roles(cls, value: dict[str, Sampling]) -> dict[str, Sampling]:
        unknown = set(value) - set(default_sampling())
        if unknown:
            raise ValueError(f"unknown role(s) {sorted(unknown)}; roles are {sorted(default_sampling())}")
        return value

    @model_validator(mode="after")
    def _known_presets(self) -> "Settings":
        unknown_roles = set(self.role_presets) - set(default_sampling())
        if unknown_roles:
            raise ValueError(f"role_presets names unknown role(s) {sorted(unknown_roles)}")
        missing = set(self.role_presets.values()) - set(self.all_presets())
        if missing:
            raise ValueError(f"role_presets names preset(s) {sorted(missing)} that do not exist; "
                             f"presets are {sorted(self.all_presets())}")
        return self

    def all_presets(self) -> dict[str, Sampling]:
        """Every sampling preset by name: the built-in ones, then the writer's own."""
        return {**SAMPLING_PRESETS, **self.sampling_presets}

    @model_validator(mode="before")
    @classmethod
    def _older_jrt_setting(cls, data: Any) -> Any:
        """`jrt_repeats = 1|2`, as earlier versions saved it (for every backend alike), now
        applies to the local model only: it is what JRT is for."""
        if isinstance(data, dict) and "jrt_repeats" in data:
            data = dict(data)
            older = data.pop("jrt_repeats")
            if older is not None and "jrt_local" not in data:
                data["jrt_local"] = str(older).strip() != "1"
        return data

    @model_validator(mode="before")
    @classmethod
    def _older_role_names(cls, data: Any) -> Any:
        """[sampling.ROLE] and [role_presets] under a role's former name apply to the role as it is
        called now (saving writes the new name); a value under the new name wins."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for table in ("sampling", "role_presets"):
            if isinstance(data.get(table), dict):
                by_role = data[table] = dict(data[table])
                for role, former in FORMER_ROLE_NAMES.items():
                    if former in by_role:
                        by_role.setdefault(role, by_role.pop(former))
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: CLI flags, then the environment, then the config file.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_path()))

    def resolved_backend(self) -> Literal["openai", "local"]:
        """With no key and no base URL, the local model is used."""
        if self.backend != "auto":
            return self.backend
        return "openai" if (self.api_key or self.base_url) else "local"

    def jrt_repeats_for(self, backend: Literal["openai", "local"] | None = None) -> int:
        """How often prompts for that kind of model (default: the one in use) hold their
        context: 2 with JRT, else 1."""
        kind = backend or self.resolved_backend()
        return 2 if (self.jrt_local if kind == "local" else self.jrt_server) else 1

    def engine_config(self) -> EngineConfig:
        sampling = default_sampling()
        if self.resolved_backend() == "local":
            from longyarn.recurrent_core.backends.local import LocalBackend  # imports torch: only here

            sampling.update(LocalBackend.recommended_sampling(sampling))
        presets = self.all_presets()
        for role, name in self.role_presets.items():
            sampling[role] = presets[name].model_copy(update={"max_tokens": sampling[role].max_tokens})
        sampling.update(self.sampling)
        return EngineConfig(
            recall_k=self.recall_k,
            parse_retries=self.parse_retries,
            degeneration=self.degeneration,
            context_budget_tokens=self.context_budget_tokens,
            chapter_budget_tokens=self.chapter_budget_tokens,
            bible_budget_tokens=self.bible_budget_tokens,
            bible_meaning_threshold=self.bible_meaning_threshold,
            bible_meaning_max=self.bible_meaning_max,
            bible_scan_paragraphs=self.bible_scan_paragraphs,
            continuity_checks=self.continuity_checks,
            sampling=sampling,
            prompt_folder=prompts_folder(),
        )

    def describe_model(self) -> str:
        """One line naming the model in use and how to pick another; never shows the key."""
        if self.resolved_backend() == "openai":
            where = self.base_url or "api.openai.com"
            return f"Model: {self.model or 'gpt-4o-mini'} via the OpenAI-compatible server at {where}."
        from longyarn.recurrent_core.backends.served_local import is_served_model

        if is_served_model(self.checkpoint):
            return f"Model: the local RWKV-7 that `longyarn serve` runs at {self.checkpoint}."
        # The demo writes prose only (see longyarn.recurrent_core.backends.local): say so where it is named.
        which = self.checkpoint or "the bundled demo model"
        kind = "local RWKV-7" if self.checkpoint else "local RWKV-7, demo quality, story prose only"
        return (
            f"Model: {which} ({kind}). For a stronger model set OPENAI_API_KEY, "
            "or pass --base-url URL --model NAME for an OpenAI-compatible server."
        )


def first_problem(error: ValidationError) -> tuple[tuple[str, ...], str]:
    """Where the first invalid setting is (its path of names) and what is wrong with it."""
    first = error.errors()[0]
    return tuple(str(part) for part in first["loc"]), str(first["msg"])


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI flags on top; a bad value raises one clear `InvalidInput` sentence."""
    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**overrides)
    except ValidationError as error:
        where, problem = first_problem(error)
        raise InvalidInput(
            f"The setting '{'.'.join(where) or 'settings'}' is invalid ({problem}); nothing was changed; "
            f"fix it on the command line, in LONGYARN_* variables, or in {config_path()}."
        ) from None


# ---- saving (the writers' UI settings screen) ------------------------------------------

# What the settings screen edits; anything else in the file (db, [keymap], ...) is kept as is.
_SAVED_FIELDS = ("backend", "model", "base_url", "checkpoint", "recall_k")
# Saved only when they differ from their defaults, which may yet change for the better.
_SAVED_UNLESS_DEFAULT = ("jrt_local", "jrt_server", "bible_auto_accept", "continuity_checks")


def save_settings(settings: Settings, include_api_key: bool) -> Path:
    """Write the model settings to the TOML config file, keeping its other keys and tables.

    The API key is written only when `include_api_key` is true; otherwise any key saved
    earlier is removed from the file, so it lives for this session only. Sampling is saved
    for the roles that differ from the defaults. Returns the file's path.
    """
    path = config_path()
    document = _read_config(path)
    for name in _SAVED_FIELDS:
        value = getattr(settings, name)
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    document.pop("jrt_repeats", None)  # an earlier version's form of jrt_local
    for name in _SAVED_UNLESS_DEFAULT:
        value = getattr(settings, name)
        if value == Settings.model_fields[name].default:
            document.pop(name, None)
        else:
            document[name] = value
    if include_api_key and settings.api_key is not None:
        document["api_key"] = settings.api_key.get_secret_value()
    else:
        document.pop("api_key", None)
    # A value equal to either backend's default is not the user's choice: saving it would pin
    # the local model's RWKV sampling onto a later OpenAI model, or the other way round.
    defaults = default_sampling()
    from longyarn.recurrent_core.backends.local import LocalBackend

    local_defaults = {**defaults, **LocalBackend.recommended_sampling(defaults)}
    sampling = {
        role: chosen.model_dump(exclude_defaults=True)
        for role, chosen in settings.sampling.items()
        if chosen not in (defaults.get(role), local_defaults.get(role))
    }
    if sampling:
        document["sampling"] = sampling
    else:
        document.pop("sampling", None)
    for table, value in (
        ("sampling_presets", {name: p.model_dump(exclude_defaults=True) for name, p in settings.sampling_presets.items()}),
        ("role_presets", dict(settings.role_presets)),
    ):
        if value:
            document[table] = value
        else:
            document.pop(table, None)

    _write_config(path, document)
    return path


def save_setting(name: str, value: Any) -> Path:
    """Write one setting (one the UI toggles, say `bible_auto_accept`) to the config file,
    keeping everything else in it; its default value removes it. Returns the file's path."""
    path = config_path()
    document = _read_config(path)
    if value == Settings.model_fields[name].default:
        document.pop(name, None)
    else:
        document[name] = value
    _write_config(path, document)
    return path


def _read_config(path: Path) -> dict[str, Any]:
    import tomllib

    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise InvalidInput(
            f"The config file {path} could not be read ({error}); nothing was saved; "
            "fix or remove that file and save again."
        ) from None


def _write_config(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _toml_document(document)
    # A file that may hold a key is readable by its owner only, from its first byte on.
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _toml_document(document: dict[str, Any], prefix: str = "") -> str:
    """TOML for plain values and nested tables (all a config file holds); no dependency."""
    lines = [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in document.items()
             if not isinstance(value, dict)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in document.items():
        if isinstance(value, dict):
            name = f"{prefix}{_toml_key(key)}"
            scalars = any(not isinstance(item, dict) for item in value.values())
            if scalars or not value:
                text += f"\n[{name}]\n"
            text += _toml_document(value, prefix=f"{name}.")
    return text


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = "".join(ch if ch >= " " or ch == "\t" else f"\\u{ord(ch):04x}" for ch in escaped)
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")

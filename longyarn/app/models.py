"""Choosing and building the model backend from settings."""

from __future__ import annotations

from longyarn.recurrent_core.backends.base import ModelBackend

from .settings import Settings

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def make_backend(settings: Settings) -> ModelBackend:
    """The backend the settings ask for: an OpenAI-compatible server, or the local model (in
    this process, or served by `longyarn serve` when the checkpoint setting is its URL)."""
    if settings.resolved_backend() == "openai":
        from longyarn.recurrent_core.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(
            settings.model or DEFAULT_OPENAI_MODEL,
            base_url=settings.base_url,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout_s=settings.request_timeout_s,
            jrt_repeats=settings.jrt_repeats_for("openai"),
            concurrency=None if settings.server_concurrency == "auto" else settings.server_concurrency,
        )
    from longyarn.recurrent_core.backends.served_local import ServedLocalBackend, is_served_model

    if is_served_model(settings.checkpoint):
        # `--checkpoint URL`: the local model as `longyarn serve` serves it there. (--model
        # names a model on an OpenAI-compatible server; the served model is whatever it runs.)
        return ServedLocalBackend(
            settings.checkpoint,
            timeout_s=settings.request_timeout_s,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        )
    from longyarn.recurrent_core.backends.local import LocalBackend  # imports torch: only when chosen

    return LocalBackend.from_settings(settings)

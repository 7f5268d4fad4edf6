"""Choosing and building the model backend from settings."""

from __future__ import annotations

from recurrent_core.backends.base import ModelBackend

from .settings import Settings

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def make_backend(settings: Settings) -> ModelBackend:
    """The backend the settings ask for: an OpenAI-compatible server, or the local model (in
    this process, or served by `longyarn serve` at the base URL)."""
    if settings.resolved_backend() == "openai":
        from recurrent_core.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(
            settings.model or DEFAULT_OPENAI_MODEL,
            base_url=settings.base_url,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout_s=settings.request_timeout_s,
            jrt_repeats=settings.jrt_repeats or 1,
        )
    if settings.base_url:
        # `--backend local --base-url URL`: the local model as `longyarn serve` serves it there.
        from recurrent_core.backends.served_local import ServedLocalBackend

        return ServedLocalBackend(settings.base_url, model=settings.model, timeout_s=settings.request_timeout_s)
    from recurrent_core.backends.local import LocalBackend  # imports torch: only when chosen

    return LocalBackend.from_settings(settings)

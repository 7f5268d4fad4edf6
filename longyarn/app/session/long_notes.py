"""A premise or outline long enough to crowd the story out of its prompts: how to tell, and
having it summarised.

Every prompt holds the story frame and the outline beside the story so far; the context budget
trims them when they do not fit (see `longyarn.recurrent_core.role_prompts`). One that takes more
than `LONG_NOTE_SHARE` of the budget is worth a warning when the writer enters it, with the
offer of a summary that fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from longyarn.recurrent_core.cowriting import SUMMARY_WORDS, summarise

from .engine_host import EngineHost

LONG_NOTE_SHARE = 0.25
# Without a model yet: the settings' budget, and about four characters a token.
CHARS_PER_TOKEN = 4


@dataclass
class LongNotes:
    """Tells whether a premise or outline is long for the budget, and summarises one."""

    host: EngineHost
    story_id: str | None = None

    def budget_tokens(self) -> int:
        if self.host.engine is not None:
            return self.host.engine.config.context_budget_tokens
        settings = self.host.settings
        return settings.context_budget_tokens if settings is not None else 3000

    def tokens(self, text: str) -> int:
        engine = self.host.engine
        return engine.backend.count_tokens(text) if engine is not None else len(text) // CHARS_PER_TOKEN

    def room_tokens(self) -> int:
        """The most a premise or an outline should take: a share of the budget."""
        return int(self.budget_tokens() * LONG_NOTE_SHARE)

    def is_long(self, text: str) -> bool:
        return self.tokens(text) > self.room_tokens()

    def warning(self, what: str, text: str) -> str:
        """One sentence on how long it is, against what fits, and what happens to the rest."""
        return (
            f"This {what} is about {len(text.split()):,} words ({self.tokens(text):,} tokens); every prompt "
            f"has room for about {self.room_tokens():,} tokens of it beside the story, so the rest is "
            f"trimmed where it does not fit. A summary of about {SUMMARY_WORDS} words keeps all of it in view."
        )

    async def summarise(self, what: str, text: str) -> str:
        """A summary of `text` by the model in use; `NoModel` if none is ready."""
        async with self.host.model() as engine:
            return await summarise(engine, self.story_id, what, text)

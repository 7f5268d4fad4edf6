"""The engine's settings: recall, retries, the context budget, sampling per role, and where a
writer's own prompt templates live."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .types import Role, Sampling


def default_sampling() -> dict[Role, Sampling]:
    """Per-role sampling: a freer writer, a steadier memory keeper and planner.

    max_tokens is a ceiling, not a target: the prompts ask for about 220 words of prose, 150 of
    memory. It leaves room for stories outside English, where a word can cost 3-4 tokens
    (Cyrillic or CJK text on Llama-3 or Mistral tokenizers).
    """
    return {
        "opening": Sampling(temperature=0.9, max_tokens=1200),
        "writer": Sampling(temperature=0.9, top_p=0.95, max_tokens=900),
        "memory": Sampling(temperature=0.3, max_tokens=800),
        "planner": Sampling(temperature=0.8, max_tokens=600),
        "chooser": Sampling(temperature=0.2, max_tokens=20),
        "chapter_summary": Sampling(temperature=0.3, max_tokens=600),
        "continuity": Sampling(temperature=0.2, max_tokens=500),
    }


# Named sampling presets every writer has (a writer may save their own beside them). A preset
# says how a role samples, not how long it writes: a role keeps its own max_tokens.
SAMPLING_PRESETS: dict[str, Sampling] = {
    "balanced": Sampling(temperature=0.9, top_p=0.95),
    "focused": Sampling(temperature=0.6, top_p=0.9, repetition_penalty=1.05),
    "creative": Sampling(temperature=1.1, min_p=0.05, repetition_penalty=1.1),
    # ChatRWKV's `+gen` story settings, for RWKV models (see local_lm.sampling).
    "rwkv story": Sampling(temperature=1.2, top_p=0.5, presence_penalty=0.4, frequency_penalty=0.4),
}


@dataclass
class EngineConfig:
    recall_k: int = 3
    parse_retries: int = 2  # repair prompts after an unreadable memory/planner/opening reply
    step_attempts: int = 2  # whole-step retries when a paragraph's stream is cut
    # When every attempt at a paragraph degenerates (see guard.py): keep the best, flagged, or stop.
    degeneration: Literal["keep", "stop"] = "keep"
    # The most tokens any one request's prompt may take, as its backend lays it out (JRT's
    # repeated context included); the reply's max_tokens comes on top. See role_prompts.
    context_budget_tokens: int = 3000
    # The most tokens the writer prompt's Chapters section may take: the chapter being written,
    # then earlier chapters' summaries, newest first (the oldest are left out first).
    chapter_budget_tokens: int = 600
    # The story bible's section of the writer's prompt (see bible_activation): its own budget
    # within the context budget (the section's tokens, counted once even where JRT sends it
    # twice), how close in meaning to the instruction an entry must be (cosine similarity) and
    # how many may come in so, and how many of the last paragraphs are searched for names.
    bible_budget_tokens: int = 600
    bible_meaning_threshold: float = 0.4
    bible_meaning_max: int = 3
    bible_scan_paragraphs: int = 3
    # After each paragraph, ask the continuity role whether it contradicts the facts the writer
    # was sent (one more model call a step; off skips it, see recurrent_core.continuity).
    continuity_checks: bool = True
    sampling: dict[str, Sampling] = field(default_factory=default_sampling)
    # A writer's own prompt templates: <prompt_folder>/<role>.md, and a story's own in
    # <prompt_folder>/stories/<story id>/<role>.md (see prompts.load_template).
    prompt_folder: Path | None = None

    def template_folders(self, story_id: str | None) -> tuple[Path, ...]:
        """Where to look for a story's own templates, then the writer's, before the shipped ones."""
        if self.prompt_folder is None:
            return ()
        own = (self.prompt_folder / "stories" / story_id,) if story_id else ()
        return (*own, self.prompt_folder)

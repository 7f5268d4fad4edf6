"""Writing a story out as Markdown, plain text or JSON (the current branch, in order)."""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
from pathlib import Path
from typing import Literal

from recurrent_core.store import StoryStore
from recurrent_core.types import Step, Story

Format = Literal["md", "txt", "json"]


def render_story(story: Story, branch: list[Step], fmt: Format) -> str:
    paragraphs = [step.paragraph for step in branch]
    if fmt == "md":
        blocks = [f"# {story.title}"] + ([f"*{story.genre}*"] if story.genre else []) + paragraphs
        return "\n\n".join(blocks) + "\n"
    if fmt == "txt":
        title = story.title.upper()
        body = "\n\n".join(textwrap.fill(p, width=78) for p in paragraphs)
        return f"{title}\n{'=' * min(len(title), 78)}\n\n{body}\n"
    if fmt == "json":
        document = {
            "id": story.id,
            "title": story.title,
            "premise": story.premise,
            "genre": story.genre,
            "outline": story.outline,
            "paragraphs": [
                {
                    "text": step.paragraph,
                    "instruction": step.instruction,
                    "step_id": step.id,
                    "short_term_memory": step.short_term_memory,
                    "backend": step.backend,
                    "model": step.model,
                    "fallbacks": list(step.fallbacks),
                }
                for step in branch
            ],
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


def export_story(store: StoryStore, story_id: str, fmt: Format) -> str:
    story = store.get_story(story_id)
    return render_story(story, store.branch(story_id), fmt)


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

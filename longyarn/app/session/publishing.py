"""Publishing: the author opens a story to readers, and says how far they may go.

These are what the writers' UI and the CLI call; reader mode itself never changes them.
"""

from __future__ import annotations

from longyarn.recurrent_core.engine import Engine
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Story


def open_to_readers(store: StoryStore, story_id: str, *, readers_may_extend: bool) -> Story:
    """List the story in the reading room.

    With `readers_may_extend`, a reader's choices and own actions have new paragraphs written
    for them, on their own branch, past the author's last paragraph too; without it, readers
    follow the paragraphs the author wrote, and the story ends for them where the author
    stopped.
    """
    return store.update_story(story_id, readable=True, reader_may_extend=readers_may_extend)


def close_to_readers(store: StoryStore, story_id: str) -> Story:
    """Take the story out of the reading room; readers' branches and places are kept."""
    return store.update_story(story_id, readable=False)


async def start_interactive_fiction(
    engine: Engine, premise: str, genre: str = "", *, readers_may_extend: bool = True
) -> tuple[Story, tuple[str, ...]]:
    """Start a story from a premise, straight into the reading room.

    The model writes its title and outline; readers begin it themselves (the opening paragraph
    is written for each reader who starts it) when `readers_may_extend` is true. Returns the
    story and the fallbacks taken, as `Engine.start_story` does.
    """
    return await engine.start_story(
        premise, genre, readable=True, reader_may_extend=readers_may_extend
    )

"""How the next paragraph's instruction is chosen when no one picks it: by `longyarn batch`
for every paragraph, and by the writers' Keep writing after its first. Never imports textual."""

from __future__ import annotations

import random
from typing import Literal

from longyarn.recurrent_core.engine import Engine
from longyarn.recurrent_core.types import Step

Choose = Literal["first", "random", "model"]
DEFAULT_CHOICE: Choose = "first"


async def next_instruction(
    engine: Engine, story_id: str, head: Step | None, position: int, how: Choose = DEFAULT_CHOICE, seed: int = 0
) -> tuple[str | None, str | None]:
    """The instruction for the paragraph after `head` (None: the engine's opening, for an empty
    story), and a fallback sentence if the model's choice could not be read.

    `position` is how many paragraphs the branch holds already.
    """
    if head is None:
        return None, None
    # Seeded by story and position, so a resumed run makes the same choices.
    rng = random.Random(f"{seed}:{story_id}:{position}")
    return await engine.choose_instruction(head, how, rng)

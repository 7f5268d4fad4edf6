"""Which story bible entries a step's writer was given, and why, is stored with the step's context
(on SQLite and PostgreSQL alike), and a context stored without one reads back without one."""

from __future__ import annotations

import json

from sqlalchemy import select

from longyarn.recurrent_core.types import ActivatedEntry, BibleActivation, SectionRecord, StepContext
from longyarn.storage import SqlStore
from longyarn.storage.models import StepContextRow

from .helpers import EMBEDDING_MODEL, new_step, vector, write_chain

ACTIVATION = BibleActivation(
    entries=(
        ActivatedEntry("e1", "The Drowned Bell", "lore", "always", fact_ids=("f1", "f2"), tokens=31, cut_to_chars=120),
        ActivatedEntry("e2", "Łucja", "character", "named", word="the widow", where="paragraph 12",
                       secondary_key="inn", tokens=18),
        ActivatedEntry("e3", "Storm lore", "lore", "meaning", score=0.5324, tokens=20),
        ActivatedEntry("e4", "Wenna", "character", "mentioned", word="Wenna", where="Łucja", tokens=90,
                       trimmed="bible budget"),
    ),
    budget_tokens=600,
)


def context(bible: BibleActivation | None) -> StepContext:
    return StepContext(
        sections=(SectionRecord("Story frame", 40, 160, 0, "a1b2c3d4e5f60718"),
                  SectionRecord("Story bible", 69, 270, 0, "0f1e2d3c4b5a6978")),
        recalled=(),
        bible=bible,
    )


def test_a_steps_bible_activation_comes_back_as_it_was_recorded(store: SqlStore, story):
    (first,) = write_chain(store, story.id, ["The tide came in."])
    with_bible = store.commit_step(
        new_step(story.id, first.id, "The bell rang.", context=context(ACTIVATION)),
        embedding=vector(3), embedding_model=EMBEDDING_MODEL,
    )
    without = store.commit_step(
        new_step(story.id, with_bible.id, "Quiet.", context=context(None)),
        embedding=vector(4), embedding_model=EMBEDDING_MODEL,
    )
    assert store.step_context(with_bible.id).bible == ACTIVATION
    assert store.step_context(without.id).bible is None

    with store.engine.connect() as connection:
        stored = connection.scalar(select(StepContextRow.sections).where(StepContextRow.step_id == with_bible.id))
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    assert stored["bible"]["entries"][2] == {
        "id": "e3", "name": "Storm lore", "kind": "lore", "reason": "meaning", "score": 0.5324, "tokens": 20,
    }, "only what differs from the defaults is kept"

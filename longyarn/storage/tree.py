"""A story's tree in SQL: finding its rows, and walking from a step up to the root.

`StoryTree` is the base both stores build on: it finds a story's or a step's row in a session,
or raises the `StoryNotFound` that says which is missing, and lists a step's children.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Subquery, bindparam, func, literal, select
from sqlalchemy.orm import Session, aliased

from longyarn.recurrent_core.errors import StoryNotFound
from longyarn.recurrent_core.types import Step

from .models import StepRow, StoryRow
from .records import step_record
from .sessions import SqlSessions


class StoryTree(SqlSessions):
    """Lookups in a story's tree that every store method starts from."""

    def _story_row(self, session: Session, story_id: str) -> StoryRow:
        row = session.get(StoryRow, story_id)
        if row is None:
            raise self._story_not_found(story_id)
        return row

    def _step_row(self, session: Session, step_id: str, *, story_id: str | None = None) -> StepRow:
        row = session.get(StepRow, step_id)
        if row is None or (story_id is not None and row.story_id != story_id):
            raise self._step_not_found(step_id, story_id=story_id)
        return row

    def _children(
        self, session: Session, story_id: str, parent_id: str | None, owned_by: ColumnElement[bool]
    ) -> list[Step]:
        """A step's children (roots for None) that `owned_by` admits, oldest first, none deleted."""
        self._story_row(session, story_id)
        parent_matches = StepRow.parent_id.is_(None) if parent_id is None else StepRow.parent_id == parent_id
        rows = session.scalars(
            select(StepRow)
            .where(StepRow.story_id == story_id, parent_matches, StepRow.deleted.is_(False), owned_by)
            .order_by(StepRow.created_at, StepRow.id)
        )
        return [step_record(row) for row in rows]

    def _story_not_found(self, story_id: str) -> StoryNotFound:
        return StoryNotFound(
            f"No story with id {story_id!r} in {self._location}; "
            "run `longyarn write` to see your stories."
        )

    def _step_not_found(
        self, step_id: str, *, story_id: str | None = None, kept: str = "so nothing was changed"
    ) -> StoryNotFound:
        where = f"story {story_id!r} in {self._location}" if story_id else self._location
        return StoryNotFound(
            f"No paragraph with id {step_id!r} in {where}, {kept}; "
            "reopen the story to see its current paragraphs."
        )


# ---- walks up the tree: standard SQL (WITH RECURSIVE), one query on SQLite and PostgreSQL ----


def live_branch(story_id: Any, head_step_id: Any) -> Subquery:
    """The steps from the head up to the root, deleted ones left out, each with its `depth`
    (0 at the head): every column of the steps table, plus depth."""
    steps = StepRow.__table__
    walk = _walk_to_root(story_id, head_step_id)
    return (
        select(steps, walk.c.depth)
        .join(walk, steps.c.id == walk.c.id)
        .where(steps.c.deleted.is_(False))
        .subquery("live_branch")
    )


def _walk_to_root(story_id: Any, head_step_id: Any) -> Any:
    """A recursive CTE of (id, depth) from the head (depth 0) up to the root."""
    steps = StepRow.__table__
    walk = (
        select(steps.c.id, steps.c.parent_id, literal(0).label("depth"))
        .where(steps.c.id == head_step_id, steps.c.story_id == story_id)
        .cte("branch_walk", recursive=True)
    )
    parent = aliased(steps)
    return walk.union_all(
        select(parent.c.id, parent.c.parent_id, walk.c.depth + 1).where(
            parent.c.id == walk.c.parent_id
        )
    )


# The branch walks every reader's move and every step makes, built once with parameters:
# building the recursive query costs more than running it, and a statement built once is
# compiled once (SQLAlchemy caches compiled statements by their shape).
LIVE_BRANCH = live_branch(bindparam("branch_story_id"), bindparam("branch_head_id"))
BRANCH_STEPS = select(LIVE_BRANCH).order_by(LIVE_BRANCH.c.depth.desc())
BRANCH_STEP_IDS = select(LIVE_BRANCH.c.id).order_by(LIVE_BRANCH.c.depth.desc())
BRANCH_LENGTH = select(func.count()).select_from(LIVE_BRANCH)
# One story's or one step's row by id, as Core rows (parameter "id"): what every reader's page
# and move reads, at a fraction of an ORM session's cost.
STORY_BY_ID = select(StoryRow.__table__).where(StoryRow.__table__.c.id == bindparam("id"))
STEP_BY_ID = select(StepRow.__table__).where(StepRow.__table__.c.id == bindparam("id"))


_WALK = _walk_to_root(bindparam("branch_story_id"), bindparam("branch_head_id"))
# Every step from the root to the head, deleted ones too (a chapter may start at one): (id, deleted)
WHOLE_BRANCH = (
    select(StepRow.__table__.c.id, StepRow.__table__.c.deleted)
    .join(_WALK, StepRow.__table__.c.id == _WALK.c.id)
    .order_by(_WALK.c.depth.desc())
)


def branch_parameters(story_id: str, head_step_id: str) -> dict[str, str]:
    """The parameters of BRANCH_STEPS, BRANCH_STEP_IDS, BRANCH_LENGTH and WHOLE_BRANCH."""
    return {"branch_story_id": story_id, "branch_head_id": head_step_id}


def paragraph_counts_query(story_ids: list[str] | None) -> Any:
    """(story id, live paragraphs on its branch) for many stories (None: all), in one query.

    One walk starts from every head at once, carrying the story along; a story with no
    paragraphs counts 0.
    """
    stories = StoryRow.__table__
    steps = StepRow.__table__
    heads = select(
        stories.c.id.label("story_id"), steps.c.id, steps.c.parent_id
    ).join(steps, (steps.c.id == stories.c.head_step_id) & (steps.c.story_id == stories.c.id))
    if story_ids is not None:
        heads = heads.where(stories.c.id.in_(story_ids))
    walk = heads.cte("heads_walk", recursive=True)
    parent = aliased(steps)
    walk = walk.union_all(
        select(walk.c.story_id, parent.c.id, parent.c.parent_id).where(
            parent.c.id == walk.c.parent_id
        )
    )
    counted = aliased(steps)
    query = (
        select(stories.c.id, func.count(counted.c.id))
        .select_from(stories)
        .outerjoin(walk, walk.c.story_id == stories.c.id)
        .outerjoin(counted, (counted.c.id == walk.c.id) & counted.c.deleted.is_(False))
        .group_by(stories.c.id)
    )
    if story_ids is not None:
        query = query.where(stories.c.id.in_(story_ids))
    return query

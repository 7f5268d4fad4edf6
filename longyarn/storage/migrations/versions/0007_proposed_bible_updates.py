"""The story bible's proposed updates, kept with what the writer decided of each.

Before this revision the updates waiting for the writer lived only as long as the writing
session; existing stories start with an empty queue.

Revision ID: 0007
Revises: 0006
Create Date: 2025-01-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "proposed_bible_updates",
        sa.Column("id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("step_id", ID, nullable=True),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("arrival", sa.Integer(), nullable=False),
        sa.Column("update", sa.JSON(), nullable=False),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_proposed_bible_updates"),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_proposed_bible_updates_story_id_stories",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["story_id", "step_id"], ["steps.story_id", "steps.id"],
            name="fk_proposed_bible_updates_step_steps", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_proposed_bible_updates_story_id", "proposed_bible_updates", ["story_id"])


def downgrade() -> None:
    op.drop_table("proposed_bible_updates")  # its index goes with it

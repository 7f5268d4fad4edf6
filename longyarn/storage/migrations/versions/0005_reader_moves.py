"""Reader moves: the paragraph being written for a reader, seen by every server process.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "reader_moves",
        sa.Column("reader_id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("parent_step_id", ID, nullable=True),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reader_id", "story_id", name="pk_reader_moves"),
        sa.ForeignKeyConstraint(
            ["reader_id"], ["readers.id"], name="fk_reader_moves_reader_id_readers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_reader_moves_story_id_stories",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("reader_moves")

"""Step contexts: what each step's writer prompt held, for the context viewer.

Existing steps get no row: their context was never recorded, and the viewer says so.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "step_contexts",
        sa.Column("step_id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("sections", sa.JSON(), nullable=False),
        sa.Column("recalled", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("step_id", name="pk_step_contexts"),
        sa.ForeignKeyConstraint(
            ["story_id", "step_id"],
            ["steps.story_id", "steps.id"],
            name="fk_step_contexts_step_steps",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("step_contexts")

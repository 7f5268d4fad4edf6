"""Reader branches: a step may belong to a reader's own branch of a story.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL means the author's step, which every existing step is.
    op.add_column("steps", sa.Column("branch_owner", sa.String(64), nullable=True))
    op.create_index("ix_steps_story_id_branch_owner", "steps", ["story_id", "branch_owner"])


def downgrade() -> None:
    op.drop_index("ix_steps_story_id_branch_owner", table_name="steps")
    with op.batch_alter_table("steps") as batch_op:
        batch_op.drop_column("branch_owner")

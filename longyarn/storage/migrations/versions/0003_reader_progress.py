"""Reader mode: readers, their progress per story, save slots and bookmarks, rate-limit times.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "readers",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_readers"),
    )
    op.create_table(
        "reader_progress",
        sa.Column("reader_id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("step_id", ID, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reader_id", "story_id", name="pk_reader_progress"),
        sa.ForeignKeyConstraint(
            ["reader_id"], ["readers.id"], name="fk_reader_progress_reader_id_readers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_reader_progress_story_id_stories",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["story_id", "step_id"],
            ["steps.story_id", "steps.id"],
            name="fk_reader_progress_step_steps",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "reader_places",
        sa.Column("id", ID, nullable=False),
        sa.Column("reader_id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("step_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reader_places"),
        sa.ForeignKeyConstraint(
            ["reader_id"], ["readers.id"], name="fk_reader_places_reader_id_readers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["story_id", "step_id"],
            ["steps.story_id", "steps.id"],
            name="fk_reader_places_step_steps",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_reader_places_reader_id_story_id_kind",
        "reader_places",
        ["reader_id", "story_id", "kind"],
    )
    op.create_table(
        "reader_generations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reader_id", ID, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reader_generations"),
        sa.ForeignKeyConstraint(
            ["reader_id"], ["readers.id"], name="fk_reader_generations_reader_id_readers",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_reader_generations_reader_id_started_at",
        "reader_generations",
        ["reader_id", "started_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_reader_generations_reader_id_started_at", table_name="reader_generations")
    op.drop_table("reader_generations")
    op.drop_index("ix_reader_places_reader_id_story_id_kind", table_name="reader_places")
    op.drop_table("reader_places")
    op.drop_table("reader_progress")
    op.drop_table("readers")

"""Initial schema: stories, their trees of steps, and long-term memories.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "stories",
        sa.Column("id", ID, nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("premise", sa.Text(), nullable=False),
        sa.Column("genre", sa.Text(), nullable=False),
        sa.Column("outline", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("head_step_id", ID, nullable=True),
        sa.Column("readable", sa.Boolean(), nullable=False),
        sa.Column("reader_may_extend", sa.Boolean(), nullable=False),
        sa.Column("memory_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stories"),
    )
    op.create_table(
        "steps",
        sa.Column("id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("paragraph", sa.Text(), nullable=False),
        sa.Column("short_term_memory", sa.Text(), nullable=False),
        sa.Column("memory_reason", sa.Text(), nullable=False),
        sa.Column("next_instructions", sa.JSON(), nullable=False),
        sa.Column("backend", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("fallbacks", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_steps"),
        sa.UniqueConstraint("story_id", "id", name="uq_steps_story_id_id"),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_steps_story_id_stories", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["story_id", "parent_id"],
            ["steps.story_id", "steps.id"],
            name="fk_steps_parent_steps",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_steps_story_id_parent_id", "steps", ["story_id", "parent_id"])
    op.create_table(
        "memories",
        sa.Column("id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("step_id", ID, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_memories"),
        sa.UniqueConstraint("step_id", name="uq_memories_step_id"),
        sa.ForeignKeyConstraint(
            ["story_id", "step_id"],
            ["steps.story_id", "steps.id"],
            name="fk_memories_step_steps",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_memories_story_id_embedding_model_created_at_id",
        "memories",
        ["story_id", "embedding_model", "created_at", "id"],
    )
    # stories and steps refer to each other, so the head's key comes once both exist
    # (on SQLite, batch mode rebuilds the still-empty stories table to add it).
    with op.batch_alter_table("stories") as batch_op:
        batch_op.create_foreign_key(
            "fk_stories_head_step_steps", "steps", ["id", "head_step_id"], ["story_id", "id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("stories") as batch_op:
        batch_op.drop_constraint("fk_stories_head_step_steps", type_="foreignkey")
    op.drop_index("ix_memories_story_id_embedding_model_created_at_id", table_name="memories")
    op.drop_table("memories")
    op.drop_index("ix_steps_story_id_parent_id", table_name="steps")
    op.drop_table("steps")
    op.drop_table("stories")

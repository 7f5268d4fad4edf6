"""The story bible and chapters: entries, their dated facts, and chapters.

Existing stories get an empty bible and no chapters; nothing else changes.

Revision ID: 0006
Revises: 0005
Create Date: 2025-01-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "bible_entries",
        sa.Column("id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("secondary_keys", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("always", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bible_entries"),
        sa.UniqueConstraint("story_id", "id", name="uq_bible_entries_story_id_id"),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_bible_entries_story_id_stories",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "bible_facts",
        sa.Column("id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("entry_id", ID, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("from_paragraph", sa.Integer(), nullable=False),
        sa.Column("until_paragraph", sa.Integer(), nullable=True),
        sa.Column("step_id", ID, nullable=True),
        sa.Column("branch_owner", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bible_facts"),
        sa.ForeignKeyConstraint(
            ["story_id", "entry_id"], ["bible_entries.story_id", "bible_entries.id"],
            name="fk_bible_facts_entry_bible_entries", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["story_id", "step_id"], ["steps.story_id", "steps.id"],
            name="fk_bible_facts_step_steps", ondelete="CASCADE",
        ),
        sa.CheckConstraint("from_paragraph >= 1", name=op.f("ck_bible_facts_from_paragraph_positive")),
        sa.CheckConstraint(
            "until_paragraph IS NULL OR until_paragraph >= from_paragraph",
            name=op.f("ck_bible_facts_ends_after_start"),
        ),
    )
    op.create_index("ix_bible_facts_entry_id", "bible_facts", ["entry_id"])
    op.create_index("ix_bible_facts_story_id_step_id", "bible_facts", ["story_id", "step_id"])
    op.create_table(
        "chapters",
        sa.Column("id", ID, nullable=False),
        sa.Column("story_id", ID, nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("start_step_id", ID, nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chapters"),
        sa.UniqueConstraint(
            "story_id", "start_step_id", name="uq_chapters_story_id_start_step_id"
        ),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_chapters_story_id_stories", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["story_id", "start_step_id"], ["steps.story_id", "steps.id"],
            name="fk_chapters_start_step_steps", ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("chapters")
    op.drop_table("bible_facts")  # its indexes go with it
    op.drop_table("bible_entries")

"""Every role's reply format by role name: where the engine finds a role's schema and problems."""

from __future__ import annotations

from . import chapter_summary, chooser, continuity, memory, opening, planner, writer
from .clean import prepare
from .reply_format import ReplyFormat

REPLY_FORMATS: dict[str, ReplyFormat] = {
    reply_format.role: reply_format
    for reply_format in (
        opening.FORMAT, memory.FORMAT, planner.FORMAT, writer.FORMAT, chooser.FORMAT, chapter_summary.FORMAT,
        continuity.FORMAT,
    )
}
# The schemas of the roles that reply in JSON (all but the writer), by role name.
JSON_SCHEMAS: dict[str, dict] = {
    role: reply_format.schema for role, reply_format in REPLY_FORMATS.items() if reply_format.schema
}


def describe_problem(role: str, text: str | None, *, cut_off: bool = False) -> str | None:
    """What is wrong with a reply, as a sentence for a repair prompt; None if it reads fully.

    `role` is "opening", "memory", "planner", "chooser" or "writer"; `cut_off`: the reply hit
    the length limit (the server's finish_reason was "length").
    """
    if not prepare(text):
        return "The reply was empty."
    reply_format = REPLY_FORMATS.get(role)
    if reply_format is None:
        raise ValueError(f"no reply format is known for the role {role!r}")
    return reply_format.describe_problem(text, cut_off=cut_off)

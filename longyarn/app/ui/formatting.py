"""Small pure functions that turn stored values into the words the UI shows."""

from __future__ import annotations

from datetime import datetime, timezone

from longyarn.recurrent_core.errors import LongyarnError


def mask_key(key: str | None) -> str:
    """An API key as it may be shown again: its prefix and last four characters only."""
    if not key:
        return ""
    if len(key) <= 8:
        return "…" + key[-2:]
    prefix = key.split("-", 1)[0] + "-" if "-" in key[:8] else key[:2]
    return f"{prefix}…{key[-4:]}"


def format_edited(moment: datetime, now: datetime) -> str:
    """When a story was last edited, in local time: 'today 14:05', 'yesterday 09:12', '3 Mar 2024'."""
    local = _as_local(moment)
    today = _as_local(now).date()
    if local.date() == today:
        return f"today {local:%H:%M}"
    if (today - local.date()).days == 1:
        return f"yesterday {local:%H:%M}"
    return f"{local.day} {local:%b %Y}"


def paragraphs_label(count: int) -> str:
    return f"{count:,} paragraph" + ("" if count == 1 else "s")


def one_line(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)].rstrip() + "…"


def _as_local(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # storage keeps UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone()


def store_failure(error: Exception, what: str) -> str:
    """One sentence for a store call that failed: what could not be done, that nothing
    changed, and what to do. `what` completes "Could not …", e.g. "move to that version"."""
    if isinstance(error, LongyarnError):
        return str(error)
    # A database driver's own error (e.g. "database is locked"), without SQLAlchemy's SQL dump.
    cause = getattr(error, "orig", None) or error
    return (
        f"Could not {what} ({cause}), so nothing was changed; try again "
        "in a moment (another longyarn may be writing to the same database)."
    )

"""Problems a reader may be told about, word for word.

Reader mode shows a reader only the messages of these exceptions. Any other failure (the
model server, the database) gets a general sentence instead, because those messages are
written for the author and can name files, servers and settings.
"""

from __future__ import annotations

from longyarn.recurrent_core.errors import InvalidInput, LongyarnError


class ReaderProblem(LongyarnError):
    """A problem whose message is written for the reader and safe to show them."""


class InvalidReaderText(ReaderProblem, InvalidInput):
    """What the reader typed cannot be used (empty, or too long)."""


class CannotExtend(ReaderProblem):
    """The author does not let readers write past the written paragraphs."""


class StoryClosed(ReaderProblem):
    """The story is not (or no longer) open to readers."""


class PlaceGone(ReaderProblem):
    """A saved place or bookmark points at a paragraph the reader can no longer see."""


class MoveInFlight(ReaderProblem):
    """A paragraph is already being written for this reader in this story."""


class ChoiceOutdated(ReaderProblem):
    """The reader chose from a page that no longer shows where they are (another tab moved on)."""


class NothingToSave(ReaderProblem):
    """There is no paragraph yet to save or bookmark."""


class ReaderRateLimited(ReaderProblem):
    """The reader asked for more new paragraphs in a minute than the server allows."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        seconds = max(1, round(wait_s))
        super().__init__(
            f"You have asked for {limit} new paragraphs within a minute, which is as many as "
            f"this server writes per reader; your story is saved as it is; please wait about "
            f"{seconds} second{'s' if seconds != 1 else ''} and choose again."
        )


STORYTELLER_UNAVAILABLE = (
    "The storyteller could not write this paragraph just now; your story is saved as it was; "
    "please try again in a moment."
)


def message_for_reader(error: BaseException) -> str:
    """What to tell a reader about `error`: its own words only if they were written for them."""
    if isinstance(error, ReaderProblem):
        return str(error)
    return STORYTELLER_UNAVAILABLE

"""Errors a person can act on.

Every message is one sentence that says what went wrong, what was kept, and what to do.
Front ends print `str(error)` as it is; they never show a traceback for these.
"""


class LongyarnError(Exception):
    """Base class for failures the user should see as one clear sentence."""


class ModelError(LongyarnError):
    """The model backend failed (no key, server down, rate limit, cut stream)."""


class StreamInterrupted(ModelError):
    """The reply broke off after part of it had arrived; the part was discarded.

    The engine writes the whole paragraph again and never commits half of one.
    """


class StepCancelled(LongyarnError):
    """The person cancelled a step; nothing of it was stored."""


class StoryNotFound(LongyarnError):
    pass


class CheckpointError(LongyarnError):
    """A model file is missing, corrupt, or not the kind we expected."""


class InvalidInput(LongyarnError):
    """Bad input from a person or a caller; nothing was changed."""


class BibleError(InvalidInput):
    """A story bible change that cannot be made (a name taken twice, an unknown entry, a fact
    that ends before it starts); nothing was changed."""

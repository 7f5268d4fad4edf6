"""What a role's reply format is, as the engine needs it; each role module defines its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# A problem a repair prompt names for any role whose reply reads in parts.
CUT_OFF_PROBLEM = "The reply was cut off by the length limit before it ended; answer more briefly."


class DescribesProblem(Protocol):
    def __call__(self, text: str, *, cut_off: bool = False) -> str | None:
        """What is wrong with a non-empty reply, as a sentence for a repair prompt; None if it
        reads fully. `cut_off`: the reply hit the length limit (finish_reason "length")."""


@dataclass(frozen=True)
class ReplyFormat:
    """One role's reply format, which its prompt file (`prompt_files/<role>.md`) asks for."""

    role: str
    schema: dict | None  # what OpenAI-compatible servers are asked to enforce; None: prose
    describe_problem: DescribesProblem

"""The scripted server's continuity role: an honest checker of what the request holds.

It knows a list of planted contradictions, (fact text, sentence) pairs, and reports one only
when the request it RECEIVED shows that fact among its Facts to check and that sentence in its
New paragraph, naming the fact by the id the request gave it. So what it answers measures the
plumbing: whether the fact reached the check, and whether the answer is matched back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

FACT_LINE = re.compile(r"^\[([0-9a-zA-Z]+)\] ([^:\n]+): (.+)$", re.MULTILINE)


def request_text(request: dict) -> str:
    return "\n".join(str(message.get("content") or "") for message in request.get("messages") or [])


def section(text: str, name: str) -> str:
    """A prompt section's text ("" if absent): from its heading to the next heading or blank line."""
    start = text.find(f"## {name}\n")
    if start < 0:
        return ""
    body = text[start + len(name) + 4:]
    ends = [end for end in (body.find("\n## "), body.find("\n\n")) if end >= 0]
    return body[: min(ends)] if ends else body


def continuity_checker(planted: Sequence[tuple[str, str]] = ()):
    """Fields of a continuity reply that report each planted pair the request shows."""

    def fields(request: dict) -> dict:
        text = request_text(request)
        facts = {fact.strip(): fact_id for fact_id, _entry, fact in FACT_LINE.findall(section(text, "Facts to check"))}
        paragraph = section(text, "New paragraph")
        found = [
            {"fact_id": facts[fact], "fact": fact, "sentence": sentence,
             "explanation": "The sentence says otherwise than the fact."}
            for fact, sentence in planted if fact in facts and sentence in paragraph
        ]
        return {"contradictions": found}

    return fields


def continuity_fields(request: dict) -> dict:
    """The default: nothing planted, so nothing is reported."""
    return continuity_checker(())(request)

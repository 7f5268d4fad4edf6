"""Where a local RWKV model's reply ends, shared by the in-process backend and the one that
reaches a model served by `longyarn serve` (neither needs torch for this).

A reply ends at its role's end marker, looked for only once the reply has begun (so a blank
line right after the cue does not end it): one paragraph ("\\n\\n") for a base model's
writer, memory and planner; the end of the line for the chooser; a blank line before a new
"## " section for the story bible, whose outline may have paragraphs; and the next
"\\n\\nUser:" turn for a chat model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

CHAT_TURN_END = "\n\nUser:"
BASE_WRITER_MIN_CHARS = 400
_BASE_MODEL_REPLY_ENDS: dict[str, tuple[str, ...]] = {
    "writer": ("\n\n",),
    "memory": ("\n\n",),
    "planner": ("\n\n",),
    "chooser": ("\n",),
    "bible": ("\n\n## ", "\n\n\n"),
}
_DEFAULT_BASE_REPLY_ENDS = ("\n\n## ", "\n\n\n")

# RWKV-7 G1 checkpoints are named like "rwkv7-g1a-0.4b-20250905-ctx4096.pth".
_CHAT_CHECKPOINT_NAME = re.compile(r"(?:^|[-_.\s])g1[a-z0-9]*(?:[-_.\s]|$)", re.IGNORECASE)


def is_chat_checkpoint(name: str, extra_config: Mapping[str, Any] | None = None) -> bool:
    """Whether a checkpoint is chat-tuned: `"chat": true` in its config, or "g1" in its name."""
    flag = (extra_config or {}).get("chat")
    if isinstance(flag, bool):
        return flag
    return bool(_CHAT_CHECKPOINT_NAME.search(Path(name).name))


def reply_ends(role: str, chat: bool) -> tuple[str, ...]:
    """The markers that end a reply for `role`, for a chat or a base model."""
    if chat:
        return (CHAT_TURN_END,)
    return _BASE_MODEL_REPLY_ENDS.get(role, _DEFAULT_BASE_REPLY_ENDS)


def reply_min_chars(role: str, chat: bool) -> int:
    """How much text a reply holds before an end marker counts: a base model often opens a
    paragraph with a heading or a one-line paragraph, and a story paragraph is longer."""
    return BASE_WRITER_MIN_CHARS if role == "writer" and not chat else 0


class ReplyBoundary:
    """Passes text through until an end marker appears after the reply's first non-blank text.

    Text that could be the start of a marker is held back until the next piece shows whether
    it is one, so a marker split across tokens is still found; the marker is never emitted.
    """

    def __init__(self, markers: Sequence[str], min_chars: int = 0):
        self._markers = tuple(m for m in markers if m)
        self._longest = max((len(m) for m in self._markers), default=0)
        self._min_chars = min_chars  # a marker before this much text is kept as text
        self._emitted = 0
        self._begun = False
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether the reply ended)."""
        if not self._markers:
            return text, False
        leading = ""
        if not self._begun:
            content = text.lstrip()
            if not content:
                return text, False
            self._begun = True
            leading, text = text[: len(text) - len(content)], content
        held = self._held + text
        passed = ""
        while True:
            found = [(i, m) for m, i in ((m, held.find(m)) for m in self._markers) if i >= 0]
            if not found:
                break
            index, marker = min(found)
            if self._emitted + len(passed) + index >= self._min_chars:
                self._held = ""
                return self._emit(leading + passed + held[:index]), True
            # Too early to end (a heading, a one-line paragraph): keep it and read on.
            passed, held = passed + held[: index + len(marker)], held[index + len(marker) :]
        keep = 0
        for length in range(min(len(held), self._longest - 1), 0, -1):
            if any(marker.startswith(held[-length:]) for marker in self._markers):
                keep = length
                break
        self._held = held[len(held) - keep :]
        return self._emit(leading + passed + held[: len(held) - keep]), False

    def _emit(self, text: str) -> str:
        self._emitted += len(text)
        return text

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

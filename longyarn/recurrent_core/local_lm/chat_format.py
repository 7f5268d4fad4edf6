"""RWKV's text conventions: the chat transcript, and where a local model's reply ends.

The one place for these rules: the in-process backend, `longyarn serve` and the backend that
reads a served model (`backends.served_local`) all apply them, and none needs torch for it.

The chat transcript, as RWKV-7 G1 and other chat-tuned checkpoints were trained on it::

    System: <rules>\n\nUser: <message>\n\nAssistant: <reply>\n\nUser: ...

RWKV chat models read a blank line as the end of a turn, so every blank line inside a message
is collapsed to a single newline; this also stops text inside a message (a reader's
instruction, a paragraph) from opening a fake turn.

A reply ends at its role's end marker, looked for only once the reply has begun (so a blank
line right after the cue does not end it): the next "\n\nUser:" turn for a chat model; for a
base model one paragraph ("\n\n") for the writer, memory and planner, the end of the line for
the chooser, and a blank line before a new "## " section for the opening, whose outline
may have paragraphs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

_TURN_SEPARATOR = "\n\n"
CHAT_TURN_END = _TURN_SEPARATOR + "User:"
_ASSISTANT_TURN = "Assistant:"
# Message roles as OpenAI names them, and who speaks them in the transcript.
_SPEAKERS = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")

BASE_WRITER_MIN_CHARS = 400
_BASE_MODEL_REPLY_ENDS: dict[str, tuple[str, ...]] = {
    "writer": ("\n\n",),
    "memory": ("\n\n",),
    "planner": ("\n\n",),
    "chooser": ("\n",),
    "opening": ("\n\n## ", "\n\n\n"),
    "passage": ("\n\n",),  # co-writing inside a paragraph: one paragraph's worth at most
}
_DEFAULT_BASE_REPLY_ENDS = ("\n\n## ", "\n\n\n")

# RWKV-7 G1 checkpoints are named like "rwkv7-g1a-0.4b-20250905-ctx4096.pth".
_CHAT_CHECKPOINT_NAME = re.compile(r"(?:^|[-_.\s])g1[a-z0-9]*(?:[-_.\s]|$)", re.IGNORECASE)


def chat_transcript(messages: Sequence[tuple[str, str]]) -> str:
    """The transcript of `messages`, (role, text) pairs with OpenAI's roles (system,
    developer, user, assistant), ending where the assistant speaks next; a last message from
    the assistant is left open, for the model to continue."""
    transcript = _TURN_SEPARATOR.join(
        f"{_SPEAKERS[role]}: {_within_one_turn(text)}" for role, text in messages
    )
    if messages[-1][0] == "assistant":
        return transcript
    return transcript + _TURN_SEPARATOR + _ASSISTANT_TURN


def _within_one_turn(text: str) -> str:
    """`text` stripped, its blank lines collapsed so that it cannot end the turn early."""
    return _BLANK_LINES.sub("\n", text.strip())


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

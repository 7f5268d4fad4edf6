"""Where sentences of prose end: to split prose, and to tell and trim a reply cut off mid-sentence."""

from __future__ import annotations

import re

from .clean import collapse_whitespace

# A sentence's end: terminal punctuation and any closing quotes or brackets, then space or
# the end; Chinese and Japanese stops need no space after them. "Mr." does not end one.
_CLOSERS = "\"”“’'»›‹」』）)\\]*_"
_SENTENCE_STOP = re.compile(
    rf"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)"
    rf"(?:[.!?…][{_CLOSERS}]*(?=\s|$)|[。！？][{_CLOSERS}]*)"
)


def ends_mid_sentence(text: str) -> bool:
    """Whether prose stops without a sentence's closing punctuation (a cut-off reply)."""
    text = text.rstrip()
    return bool(text) and not any(match.end() == len(text) for match in _SENTENCE_STOP.finditer(text))


def trim_to_last_sentence(text: str) -> str:
    """`text` up to the end of its last complete sentence; unchanged if it has none."""
    text = text.rstrip()
    ends = [match.end() for match in _SENTENCE_STOP.finditer(text)]
    return text[: ends[-1]].rstrip() if ends else text


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of `paragraph`, each with its closing quotes ("Mr." ends none)."""
    text = collapse_whitespace(paragraph)
    sentences, start = [], 0
    for match in _SENTENCE_STOP.finditer(text):
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]

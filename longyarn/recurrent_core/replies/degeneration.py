"""Whether a written paragraph has degenerated: copied its context, looped, leaked the prompt's
markup, or come back empty.

Small and quantised models do these often, and larger ones late in long stories: a real 0.5B
model's second paragraph began with the prompt's `<<<` and then repeated the first paragraph
word for word three times. `find_degeneration` names the worst problem of a paragraph, or None;
the engine (`recurrent_core.guard`) then asks again with gentler sampling.

The thresholds are set far from ordinary prose, which quotes a line or two of its context and
repeats a short refrain, but never 60 words in a row, nor the same 8 words over a third of a
paragraph:

- copied: a run of `COPY_RUN_WORDS` words (fewer in a short paragraph: 80% of it) that
  also stands in the prompt, the writer's own instruction aside;
- repeated itself: runs of 8 words that already came earlier in the paragraph cover
  `REPEATED_SHARE` of it, or one such run is `COPY_RUN_WORDS` long;
- leaked markup: the prompt's quote marks (`<<<`, `>>>`), or a line that starts with one of
  the prompt's section names as a heading or a label ("## Previous paragraph", "Story frame:");
- empty: nothing left once the reply is read as prose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

Kind = Literal["copy", "repetition", "markup", "empty"]

COPY_RUN_WORDS = 60
REPEATED_SHARE = 0.3
NGRAM = 8
# What each kind is called in the sentences the user reads (and what `events_in` counts).
KIND_WORDS: dict[Kind, str] = {
    "copy": "copied its context",
    "repetition": "repeated itself",
    "markup": "leaked the prompt's markup",
    "empty": "came back empty",
}
_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class Degeneration:
    """What is wrong with a paragraph; `severity` ranks attempts: the share of the paragraph
    affected (0 to 1), 0.2 for leaked markup, and 2 for nothing at all."""

    kind: Kind
    severity: float
    detail: str = ""

    def describe(self) -> str:
        """A phrase that follows "The model's paragraph ...", e.g. "copied its context (212 words)"."""
        words = KIND_WORDS[self.kind]
        return f"{words} ({self.detail})" if self.detail else words


def words_of(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped: what the runs are counted in."""
    return [word.lower() for word in _WORD.findall(text)]


def find_degeneration(
    paragraph: str,
    *,
    prompt_texts: Sequence[tuple[str, str]] = (),
    quote_marks: Sequence[str] = (),
    section_names: Iterable[str] = (),
) -> Degeneration | None:
    """The worst problem of `paragraph`, or None if it reads as a paragraph of its own.

    prompt_texts: (name, text) of each part of the prompt it was written from, e.g.
        ("Previous paragraph", ...), to tell which part it copied.
    quote_marks, section_names: the prompt's own markup.
    """
    words = words_of(paragraph)
    if not words:
        return Degeneration("empty", 2.0)
    found = [
        _copied(words, prompt_texts),
        _repeated(words),
        _leaked(paragraph, quote_marks, section_names),
    ]
    found = [problem for problem in found if problem is not None]
    return max(found, key=lambda problem: problem.severity, default=None)


def _copied(words: list[str], prompt_texts: Sequence[tuple[str, str]]) -> Degeneration | None:
    longest, source, covered = 0, "", [False] * len(words)
    for name, text in prompt_texts:
        run = _shared_runs(words, words_of(text), covered)
        if run > longest:
            longest, source = run, name
    if longest < min(COPY_RUN_WORDS, max(NGRAM, int(0.8 * len(words)))):
        return None
    share = sum(covered) / len(words)
    return Degeneration("copy", share, f"{longest} words in a row from the {source.lower()}")


def _shared_runs(words: list[str], source: list[str], covered: list[bool]) -> int:
    """The longest run of `words` that also stands in `source` (counted from NGRAM words up);
    marks the words of every such run in `covered`."""
    grams = {tuple(source[i : i + NGRAM]) for i in range(len(source) - NGRAM + 1)}
    longest = current = 0
    for i in range(len(words) - NGRAM + 1):
        if tuple(words[i : i + NGRAM]) in grams:
            covered[i : i + NGRAM] = [True] * NGRAM
            current += 1
            longest = max(longest, current)
        else:
            current = 0
    return longest + NGRAM - 1 if longest else 0


def _repeated(words: list[str]) -> Degeneration | None:
    first_seen: dict[tuple[str, ...], int] = {}
    repeated = [False] * len(words)
    longest = current = 0
    for i in range(len(words) - NGRAM + 1):
        gram = tuple(words[i : i + NGRAM])
        earlier = first_seen.setdefault(gram, i)
        if earlier <= i - NGRAM:  # came before, and not merely overlapping itself
            repeated[i : i + NGRAM] = [True] * NGRAM
            current += 1
            longest = max(longest, current)
        else:
            current = 0
    share = sum(repeated) / len(words)
    run = longest + NGRAM - 1 if longest else 0
    if share < REPEATED_SHARE and run < COPY_RUN_WORDS:
        return None
    return Degeneration("repetition", share, f"{round(100 * share)}% of it came before")


def _leaked(paragraph: str, quote_marks: Sequence[str], section_names: Iterable[str]) -> Degeneration | None:
    marks = [mark for mark in quote_marks if mark and mark in paragraph]
    names = [name for name in section_names if name.strip()]
    if names:
        label = re.compile(
            r"^\s*(?:#+\s*)?(?:" + "|".join(re.escape(name) for name in names) + r")\s*(?::|$)",
            re.IGNORECASE | re.MULTILINE,
        )
        marks += [match.group(0).strip() for match in label.finditer(paragraph)]
    if not marks:
        return None
    return Degeneration("markup", 0.2, ", ".join(dict.fromkeys(marks)))


def events_in(sentence: str) -> list[Kind]:
    """The degenerate attempts a fallback sentence of the guard tells of, in order."""
    found = []
    for kind, words in KIND_WORDS.items():
        found += [(match.start(), kind) for match in re.finditer(re.escape(words), sentence)]
    return [kind for _, kind in sorted(found)]

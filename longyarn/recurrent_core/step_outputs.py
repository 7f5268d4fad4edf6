"""What a step ends with after its paragraph: a short-term memory, a reason and three next
instructions, complete whatever the model replied.

The policy for each gap: an unreadable memory keeps the old one (or, at a story's start,
begins from the paragraph); missing instructions are derived from the paragraph. A model that
writes prose only gets a memory that carries a window of the story's latest events forward.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .replies import fallbacks
from .replies.clean import dedupe_key, prepare
from .replies.memory import parse_memory_update
from .replies.planner import parse_instructions
from .replies.sentences import split_sentences

MEMORY_WORD_LIMIT = 150
GIST_SENTENCE_WORDS = 40


@dataclass(frozen=True)
class StepOutputs:
    """Everything a step needs after its paragraph; complete even when the model was not."""

    short_term_memory: str
    memory_reason: str
    instructions: tuple[str, str, str]
    fallbacks: tuple[str, ...]  # one sentence for the user per gap that was filled


def resolve_step_outputs(
    *,
    memory_reply: str | None,
    planner_reply: str | None,
    old_memory: str,
    paragraph: str,
    outline: str = "",
    memory_cut_off: bool = False,
    planner_cut_off: bool = False,
) -> StepOutputs:
    """The step's memory, reason and three instructions, whatever the model replied.

    A reply of None means the call failed or gave up. Every gap is filled and named in
    `fallbacks`: an unreadable memory keeps the old one (or, at a story's start, begins from
    the paragraph); a missing reason gets a stated default; missing instructions are derived
    from the paragraph; more than three are cut to the first three.
    """
    fallbacks_taken: list[str] = []
    parsed = parse_memory_update(memory_reply, cut_off=memory_cut_off)
    if parsed.short_term_memory is not None:
        short_term_memory = parsed.short_term_memory
        if parsed.truncated:
            fallbacks_taken.append(fallbacks.MEMORY_CUT)
        if parsed.reason is not None:
            memory_reason = parsed.reason
        else:
            memory_reason = fallbacks.DEFAULT_REASON
            fallbacks_taken.append(fallbacks.REASON_MISSING)
    elif (old_memory or "").strip():
        short_term_memory, memory_reason = old_memory, fallbacks.KEPT_REASON
        fallbacks_taken.append(fallbacks.MEMORY_KEPT)
    else:
        short_term_memory, memory_reason = _memory_from_paragraph(paragraph), fallbacks.STARTED_REASON
        fallbacks_taken.append(fallbacks.MEMORY_STARTED)

    instructions = parse_instructions(planner_reply, cut_off=planner_cut_off)[:3]
    if len(instructions) < 3:
        proposed = len(instructions)
        taken = {dedupe_key(item) for item in instructions}
        for candidate in _derived_instructions(paragraph, outline):
            if len(instructions) == 3:
                break
            if dedupe_key(candidate) not in taken:
                instructions.append(candidate)
                taken.add(dedupe_key(candidate))
        if proposed == 0:
            fallbacks_taken.append(fallbacks.INSTRUCTIONS_DERIVED)
        else:
            fallbacks_taken.append(fallbacks.instructions_partly_derived(proposed))
    first, second, third = instructions
    return StepOutputs(short_term_memory, memory_reason, (first, second, third), tuple(fallbacks_taken))


def outputs_from_paragraph(*, old_memory: str, paragraph: str, outline: str = "") -> StepOutputs:
    """The step's memory and instructions for a prose-only model, made from the paragraph.

    The memory keeps a window of the story's latest events: the new paragraph's first and
    last sentences after the old memory, whose oldest sentences go once it passes
    MEMORY_WORD_LIMIT words (the first paragraph starts it whole).
    """
    if (old_memory or "").strip():
        memory = _memory_carried_forward(old_memory, paragraph)
    else:
        memory = _memory_from_paragraph(paragraph)
    first, second, third = _derived_instructions(paragraph, outline)[:3]
    return StepOutputs(
        memory, fallbacks.PROSE_ONLY_REASON, (first, second, third), (fallbacks.PROSE_ONLY_OUTPUTS,)
    )


def instructions_from_paragraph(paragraph: str, outline: str = "") -> tuple[str, str, str]:
    """Three distinct, sensible next instructions derived from a paragraph, without a model.

    The fallback when the planner's reply is unreadable: one continues from the paragraph's
    last sentence, one turns to its most-named character, one adds a complication. Never
    empty, even for an empty paragraph.
    """
    first, second, third = _derived_instructions(paragraph, outline)[:3]
    return first, second, third


# ---- the short-term memory from the paragraph ----------------------------------------------


def _memory_from_paragraph(paragraph: str) -> str:
    return _first_words(prepare(paragraph), MEMORY_WORD_LIMIT)


def _memory_carried_forward(old_memory: str, paragraph: str) -> str:
    sentences = split_sentences(prepare(paragraph))
    gist = " ".join(
        _first_words(sentence, GIST_SENTENCE_WORDS)
        for sentence in (sentences[:1] + sentences[-1:] if len(sentences) > 1 else sentences)
    )
    room = MEMORY_WORD_LIMIT - len(gist.split())
    kept: list[str] = []
    for sentence in reversed(split_sentences(old_memory)):
        words = sentence.split()
        if len(words) > room:
            # Notes without full stops are one long "sentence": keep its newest words.
            if room >= 5:
                kept.append("…" + " ".join(words[len(words) - room :]))
            break
        room -= len(words)
        kept.append(sentence)
    return " ".join([*reversed(kept), gist]).strip()


def _first_words(text: str, limit: int) -> str:
    words = text.split()
    return " ".join(words[:limit]) + ("…" if len(words) > limit else "")


# ---- instructions from the paragraph ---------------------------------------------------------

_WORD = re.compile(r"(?P<before>[\"“‘'(\[]?)(?P<word>[A-Za-z][A-Za-z'’-]*)")
_NOT_NAMES = frozenset(
    """I I'm I'll I'd I've Mr Mrs Ms Dr Sir Madam Lady Lord God Oh Ah No Yes OK Okay The A An
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May
    June July August September October November December""".split()
)


def _names(paragraph: str) -> list[str]:
    """Capitalised words that do not start a sentence or a quotation, most frequent first."""
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for sentence in split_sentences(paragraph):
        for index, match in enumerate(_WORD.finditer(sentence)):
            word = re.sub(r"['’]s$", "", match.group("word"))
            if index == 0 or match.group("before") or not word[0].isupper() or word in _NOT_NAMES:
                continue
            if len(word) > 1 and word.isupper():  # a heading or a shout ("THE HISPANIOLA")
                continue
            counts[word] += 1
            first_seen.setdefault(word, len(first_seen))
    return sorted(counts, key=lambda name: (-counts[name], first_seen[name]))


def _excerpt(sentence: str, max_words: int = 20) -> str:
    words = re.sub(r"[\"“”«»]", "", sentence).split()
    text = " ".join(words[:max_words])
    return text + ("…" if len(words) > max_words else "")


def _derived_instructions(paragraph: str, outline: str = "") -> list[str]:
    """Distinct candidate instructions from a paragraph, best first (at least six)."""
    paragraph = prepare(paragraph)
    sentences = split_sentences(paragraph)
    names = _names(paragraph)
    hero = names[0] if names else "the main character"
    candidates = []
    if sentences:
        candidates.append(
            f"Continue straight on from the last moment ({_excerpt(sentences[-1])}) "
            "and show what happens next."
        )
    else:
        candidates.append("Continue the story from where it left off and show what happens next.")
    candidates.append(f"Show how {hero} reacts to what just happened, through action and dialogue.")
    if outline.strip():
        candidates.append(
            "Introduce a complication that moves the story toward the next turn of its outline."
        )
    else:
        candidates.append("Introduce an unexpected complication that raises the stakes.")
    candidates.append(f"Reveal something {hero} has been keeping quiet, and let it change the scene.")
    if len(names) > 1:
        candidates.append(
            f"Bring {names[1]} to the fore and let them push the scene in a new direction."
        )
    else:
        candidates.append("Bring in a new character whose arrival changes the situation.")
    candidates.append(
        "Slow down for a quiet moment in which the characters take stock of what has happened."
    )
    candidates.append(
        "Move to a new place or time, carrying the open question of the last scene with it."
    )
    return candidates

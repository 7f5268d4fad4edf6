"""Activation: which story bible entries go into a writer prompt, and why.

Each step builds the prompt's story bible section from these, in this priority order:

1. **always**: the entries marked *always*, in the bible's order (by kind, then name).
2. **named**: entries whose name or an alias appears in the instruction, else the short-term
   memory, else the last `bible_scan_paragraphs` paragraphs (the newest first); within one text,
   the one named first comes first. A name matches
   as whole words, case-insensitively, in any script: "Mara" is named in "Mara's boat" and
   "MARA", never in "Maraschino"; a name of several words matches across any spacing. Where a
   name ends in a script written without spaces between words (Chinese, Japanese, Thai, and
   Korean, whose particles join the name), that end needs no word boundary: "李明" is named
   in "李明走了", "민수" in "민수가".
   An entry with *secondary keys* activates only when one of its names AND any one of its
   secondary keys appear in the text searched (SillyTavern's "AND ANY"): "Vey" with the
   secondary key "ship" is named by "Vey boards the ship", not by "Vey sleeps".
3. **by meaning**: the entries closest in meaning to the instruction, by the long-term memory's
   embedder over the entry's line as sent (name, kind, aliases, description, facts in force): those
   with a cosine similarity of at least `bible_meaning_threshold`, at most `bible_meaning_max`
   of them, the closest first.
4. **mentioned**: entries named (as in 2) in the description or facts in force of an entry
   activated by 1-3, in that entry's order; an entry with secondary keys needs one of them in
   that text or in the text searched in 2. One level only, as World Info's recursion with a
   depth of one: what a mentioned entry mentions does not come in.

Only the facts in force at the paragraph being written, on the branch it continues, are sent.
The section has its own token budget (`bible_budget_tokens`, counted by the backend's own
counter), filled in that order: the first entry that does not fit, and every entry after it,
are left out whole. The one exception is an always entry that alone is longer than the whole
budget: it is cut to the room left, and its record says so (`cut_to_chars`). A budget of 0
sends no section but still records what would have come in. If the whole prompt then still
overruns the context budget, the section loses whole entries from its end (see role_prompts),
recorded as trimmed by the context budget. The record (`BibleActivation`) is stored with the
step, so the context viewer shows every entry, why it came in, and what was left out, for past
paragraphs too. A story with no entries, or none activated, gets no section at all.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .bible import BibleEntry, BibleFact, entry_order, facts_by_entry, facts_in_force
from .context import STORY_BIBLE, bible_entry_line, trim_text
from .embeddings import Embedder
from .engine_config import EngineConfig
from .memory import one_blas_thread
from .store import StoryStore
from .types import ActivatedEntry, BibleActivation, Prompt, Step

BIBLE_BUDGET = "bible budget"  # why an entry was left out: the section's own budget was spent
CONTEXT_BUDGET = "context budget"  # the whole prompt's budget took it back
# Where a name was found, as the context viewer says it: "named “Mara” in the instruction".
INSTRUCTION, SHORT_TERM_MEMORY = "the instruction", "the short-term memory"
# Entry vectors kept per engine: 384 floats each for MiniLM, so about 15 MB at most.
CACHED_VECTORS = 10_000

CountTokens = Callable[[str], int]
ScoreByMeaning = Callable[[Sequence[BibleEntry]], Sequence[float]]


@dataclass(frozen=True)
class SearchedText:
    """A text searched for names: where it is ("the instruction", "paragraph 12") and its words
    as compared (NFC, case-folded)."""

    where: str
    folded: str

    @classmethod
    def of(cls, where: str, text: str) -> SearchedText:
        return cls(where, fold(text))


@dataclass(frozen=True)
class BibleSection:
    """The story bible section as its own budget allows (one entry a line; "" when none fit),
    and the record of every entry activated for it."""

    text: str
    activation: BibleActivation


def fold(text: str) -> str:
    """Text as names are compared: composed Unicode, case-folded."""
    return unicodedata.normalize("NFC", text).casefold()


# Scripts written without spaces between words (and Hangul, whose particles join a name).
_UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def _unspaced(character: str) -> bool:
    return unicodedata.name(character, "").startswith(_UNSPACED_SCRIPTS)


@functools.lru_cache(maxsize=100_000)
def _name_pattern(name: str) -> tuple[str, re.Pattern[str]] | None:
    """The name's first word (a quick substring test) and a pattern of its whole words."""
    words = fold(name).split()
    if not words:
        return None
    before = "" if _unspaced(words[0][0]) else r"(?<!\w)"
    after = "" if _unspaced(words[-1][-1]) else r"(?!\w)"
    return words[0], re.compile(before + r"\s+".join(map(re.escape, words)) + after)


def find_name(name: str, folded: str) -> int:
    """Where `name` first appears in `folded` as whole words; -1 if it does not."""
    compiled = _name_pattern(name)
    if compiled is None or compiled[0] not in folded:
        return -1
    found = compiled[1].search(folded)
    return found.start() if found else -1


def first_named(names: Iterable[str], texts: Sequence[SearchedText]) -> tuple[int, int, str] | None:
    """(which text, where in it, which name) of the earliest mention of any of `names` in the
    first text of `texts` that mentions one; None if none does."""
    best: tuple[int, int, str] | None = None
    for name in names:
        for index, text in enumerate(texts):
            if best is not None and index > best[0]:
                break
            position = find_name(name, text.folded)
            if position >= 0:
                if best is None or (index, position) < best[:2]:
                    best = (index, position, name)
                break
    return best


def secondary_key_found(entry: BibleEntry, texts: Sequence[SearchedText]) -> str | None:
    """The first of the entry's secondary keys found in any of `texts`; "" if it has none."""
    if not entry.secondary_keys:
        return ""
    for key in entry.secondary_keys:
        if any(find_name(key, text.folded) >= 0 for text in texts):
            return key
    return None


def choose_entries(
    entries: Sequence[BibleEntry],
    facts: dict[str, list[BibleFact]],
    searched: Sequence[SearchedText],
    *,
    by_meaning: ScoreByMeaning | None = None,
    threshold: float = 0.4,
    most_by_meaning: int = 3,
) -> list[ActivatedEntry]:
    """Every entry activated, in priority order (see the module docstring); `facts` are each
    entry's facts in force, by entry id; `by_meaning` scores entries against the instruction."""
    entries = sorted(entries, key=entry_order)
    chosen: list[ActivatedEntry] = []
    taken: set[str] = set()

    def take(entry: BibleEntry, reason: str, **why: object) -> None:
        fact_ids = tuple(fact.id for fact in facts.get(entry.id, ()))
        chosen.append(ActivatedEntry(entry.id, entry.name, entry.kind, reason, fact_ids=fact_ids, **why))  # type: ignore[arg-type]
        taken.add(entry.id)

    for entry in entries:
        if entry.always:
            take(entry, "always")
    named = []
    for entry in entries:
        if entry.id in taken:
            continue
        found = first_named(entry.names, searched)
        if found is not None and (also := secondary_key_found(entry, searched)) is not None:
            named.append((found[0], found[1], entry, found[2], also))
    for index, _position, entry, word, also in sorted(named, key=lambda item: item[:2]):
        take(entry, "named", word=word, where=searched[index].where, secondary_key=also)

    rest = [entry for entry in entries if entry.id not in taken]
    if by_meaning is not None and rest and most_by_meaning > 0:
        scores = np.asarray(by_meaning(rest), dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[:most_by_meaning]
        for row in order:
            if scores[row] >= threshold:
                take(rest[row], "meaning", score=round(float(scores[row]), 4))

    by_id = {entry.id: entry for entry in entries}
    mentioners = list(chosen)
    for mentioner in mentioners:  # one level: what these mention mentions nothing further
        source = by_id[mentioner.entry_id]
        text = [SearchedText.of(mentioner.name, entry_text(source, facts.get(source.id, ())))]
        for entry in entries:
            if entry.id in taken:
                continue
            found = first_named(entry.names, text)
            if found is not None and (also := secondary_key_found(entry, [*text, *searched])) is not None:
                take(entry, "mentioned", word=found[2], where=mentioner.name, secondary_key=also)
    return chosen


def entry_text(entry: BibleEntry, facts: Iterable[BibleFact]) -> str:
    """What an activated entry's mentions are searched in: its description and facts in force."""
    return "\n".join([entry.description, *(fact.text for fact in facts)])


def fill_budget(
    chosen: Sequence[ActivatedEntry], lines: dict[str, str], count_tokens: CountTokens, budget: int
) -> tuple[list[ActivatedEntry], list[str]]:
    """`chosen` with each entry's tokens and whether it fitted `budget` (in order; the first
    that does not fit and all after it are left out whole), and the lines that fitted."""
    recorded: list[ActivatedEntry] = []
    kept: list[str] = []
    used, full = 0, False
    for item in chosen:
        line = lines[item.entry_id]
        tokens = count_tokens(line)
        if not full and used + tokens <= budget:
            kept.append(line)
            used += tokens
            recorded.append(replace(item, tokens=tokens))
            continue
        if not full and item.reason == "always" and tokens > budget:
            cut = cut_to_tokens(line, budget - used, count_tokens)
            full = True
            if cut:
                kept.append(cut)
                recorded.append(replace(item, tokens=count_tokens(cut), cut_to_chars=len(cut)))
                continue
        full = True
        recorded.append(replace(item, tokens=tokens, trimmed=BIBLE_BUDGET, fact_ids=()))
    # The lines joined may count a token or two more than apart: give back whole lines.
    while kept and count_tokens("\n".join(kept)) > budget:
        kept.pop()
        last = max(i for i, item in enumerate(recorded) if not item.trimmed)
        recorded[last] = replace(recorded[last], trimmed=BIBLE_BUDGET, cut_to_chars=0, fact_ids=())
    return recorded, kept


def cut_to_tokens(line: str, room: int, count_tokens: CountTokens) -> str:
    """`line` cut at a word, marked with an ellipsis, to at most `room` tokens ("" if none)."""
    if room <= 1:
        return ""
    keep = int(len(line) * room / max(1, count_tokens(line)))
    for _round in range(12):
        cut = trim_text(line, keep, from_start=False)
        if count_tokens(cut) <= room:
            return cut if len(cut) > 1 else ""
        keep = int(keep * 0.9)
    return ""


def settle(section: BibleSection, prompt: Prompt) -> BibleActivation:
    """The activation as the fitted prompt sent it: entries the context budget took back from
    the section's end are marked so."""
    sent_text = next((s.text for s in prompt.context if s.name == STORY_BIBLE), "")
    sent_lines = len(sent_text.split("\n")) if sent_text.strip() else 0
    entries, seen = [], 0
    for item in section.activation.entries:
        if not item.trimmed:
            seen += 1
            if seen > sent_lines:
                item = replace(item, trimmed=CONTEXT_BUDGET, fact_ids=(), cut_to_chars=0)
        entries.append(item)
    return replace(section.activation, entries=tuple(entries))


class EntryVectors:
    """Entry embeddings cached by a hash of their text and the embedding model: a bible of 500
    entries is embedded once, then again only where an entry or its facts in force change."""

    def __init__(self, embedder: Embedder, capacity: int = CACHED_VECTORS) -> None:
        self._embedder = embedder
        self._capacity = capacity
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _key(self, text: str) -> bytes:
        return hashlib.blake2b(f"{self._embedder.name}\0{text}".encode(), digest_size=16).digest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of `texts`, shape (len(texts), dim); only unseen texts are embedded."""
        keys = [self._key(text) for text in texts]
        with self._lock:
            found = {key: self._vectors[key] for key in keys if key in self._vectors}
            for key in found:
                self._vectors.move_to_end(key)
        missing = {key: text for key, text in zip(keys, texts) if key not in found}
        if missing:
            embedded = self._embedder.embed(list(missing.values()))
            found.update(zip(missing, np.asarray(embedded, dtype=np.float32)))
            with self._lock:
                for key in missing:
                    self._vectors[key] = found[key]
                while len(self._vectors) > self._capacity:
                    self._vectors.popitem(last=False)
        return np.stack([found[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)


class BibleActivator:
    """Builds each step's story bible section (see the module docstring); one per engine."""

    def __init__(self, store: StoryStore, embedder: Embedder, config: Callable[[], EngineConfig]) -> None:
        self._store = store
        self._embedder = embedder
        self._config = config
        self.vectors = EntryVectors(embedder)

    def wants_query(self, entries: Sequence[BibleEntry]) -> bool:
        """Whether activation by meaning needs the instruction's embedding."""
        return self._config().bible_meaning_max > 0 and any(not entry.always for entry in entries)

    def activate(
        self,
        story_id: str,
        entries: Sequence[BibleEntry],
        *,
        instruction: str,
        short_term_memory: str,
        previous: Step | None,
        branch_ids: Sequence[str],
        query: np.ndarray | None,
        count_tokens: CountTokens,
    ) -> BibleSection | None:
        """The section for the paragraph after `previous` (whose branch is `branch_ids`), or
        None when no entry activates. Synchronous: it reads the store."""
        if not entries:
            return None
        config = self._config()
        paragraph = len(branch_ids) + 1
        seen = self._store.facts_on_branch(story_id, previous.id if previous else None)
        facts = facts_by_entry(facts_in_force(seen, paragraph))
        searched = [SearchedText.of(INSTRUCTION, instruction), SearchedText.of(SHORT_TERM_MEMORY, short_term_memory)]
        searched += [
            SearchedText.of(f"paragraph {number}", text)
            for number, text in self._recent_paragraphs(previous, branch_ids, config.bible_scan_paragraphs)
        ]
        lines = {entry.id: bible_entry_line(entry, facts.get(entry.id, ())) for entry in entries}

        def by_meaning(candidates: Sequence[BibleEntry]) -> np.ndarray:
            matrix = self.vectors.embed([lines[entry.id] for entry in candidates])
            with one_blas_thread():  # as recall does: spinning BLAS threads would slow the embedder
                return matrix @ np.asarray(query, dtype=np.float32).reshape(-1)

        chosen = choose_entries(
            entries, facts, searched, by_meaning=by_meaning if query is not None else None,
            threshold=config.bible_meaning_threshold, most_by_meaning=config.bible_meaning_max,
        )
        if not chosen:
            return None
        recorded, kept = fill_budget(chosen, lines, count_tokens, config.bible_budget_tokens)
        return BibleSection("\n".join(kept), BibleActivation(tuple(recorded), config.bible_budget_tokens))

    def _recent_paragraphs(
        self, previous: Step | None, branch_ids: Sequence[str], count: int
    ) -> list[tuple[int, str]]:
        """The last `count` paragraphs before the one being written, newest first, numbered."""
        if previous is None or count <= 0:
            return []
        recent = [(len(branch_ids), previous.paragraph)]
        for back, step_id in enumerate(reversed(branch_ids[-count:-1]), start=2):
            recent.append((len(branch_ids) - back + 1, self._store.get_step(step_id).paragraph))
        return recent

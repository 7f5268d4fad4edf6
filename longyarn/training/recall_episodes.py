"""Recall episodes: story passages with facts planted at known depths, and questions about them.

The demo model learns to answer a question from its context on these (`train.py` mixes them
with the books), and `benchmarks/recall.py` measures that skill on items of the same shape.

    filler = Filler(book_texts, tokenizer)
    item = make_item(random.Random(7), TRAINING, filler, passage_tokens=600, depth=0.5)
    prompt = layout(item.passage, item.question, "jrt") + item.answer

An item is a run of consecutive sentences from one book with a few facts of one kind planted
among them (who owns what, what colour a thing is, where something is kept, a passkey, who is
whose relative): one is asked about, the others are there to be confused with it, and one
more answer of the same kind is planted nowhere. Prompts come in three orders: the context
then the question ("context"), the context twice then the question ("twice"), and JRT, the
order the engine lays out a local model's prompts in: the question, the context twice, the
question again ("jrt"). The question is `Question: ...` and the answer follows `Answer:`.

How training and the benchmark are kept apart (the benchmark must never test what was trained):

- names: `TRAINING.names` and `BENCHMARK.names` share none;
- fact sentences and questions: each split has its own templates for every kind, and no
  template of one split is a template of the other;
- filler: training episodes are cut from the training books, benchmark items only from the
  four books `tokenizer_training.HELDOUT_BOOKS` holds out (which the tokenizer and the model
  never see);
- what both share is the answers' vocabulary (things, colours, places, relatives, 5-digit
  numbers) and the `Question:`/`Answer:` layout: that is the skill being taught.

tests/training/test_recall_episodes.py checks that no benchmark fact sentence or question
occurs in the training generator's output for the same seed.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

Order = Literal["context", "jrt", "twice"]
ORDERS: tuple[Order, ...] = ("context", "jrt", "twice")
SEPARATOR = "\n\n"
KINDS = ("colour", "owner", "place", "passkey", "relation")

THINGS = ("boat", "lantern", "violin", "bicycle", "kite", "umbrella", "wagon", "clock", "kettle",
          "sledge", "drum", "saddle", "basket", "flute", "cart", "chest")
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "purple", "orange", "grey", "brown",
           "pink", "golden")
PLACES = ("cellar", "attic", "garden", "kitchen", "stable", "library", "chapel", "barn", "pantry",
          "tower", "orchard", "mill")
KEPT_THINGS = ("the silver key", "the old map", "the letters", "the ring", "the coins", "the locket")
RELATIVES = ("sister", "brother", "cousin", "aunt", "uncle", "friend", "neighbour", "teacher")


@dataclass(frozen=True)
class FactTemplate:
    """How one kind of fact is stated in a passage and asked about.

    Fields by kind (the subject names what is asked about; the answer is what the reply gives):
    colour {name} {thing} -> {colour}; owner {colour} {thing} -> {name}; place {name} {kept}
    -> {place}; passkey {room} -> {code}; relation {name} {relative} -> {other}.
    """

    statement: str
    question: str


# What each kind asks about, and what its answer is.
SUBJECT_FIELD = {"colour": "name", "owner": "colour", "place": "name", "passkey": "room", "relation": "name"}
ANSWER_FIELD = {"colour": "colour", "owner": "name", "place": "place", "passkey": "code", "relation": "other"}


@dataclass(frozen=True)
class RecallSplit:
    """The names and templates one side of the split draws on."""

    name: str
    names: tuple[str, ...]
    templates: Mapping[str, tuple[FactTemplate, ...]]


TRAINING = RecallSplit(
    name="training",
    names=tuple("""
        Ada Agnes Albert Alice Amos Anders Anton Arthur Astrid August Basil Beatrix Bertha Cecil
        Celia Cyril Daisy Daniel Dora Edgar Edith Edwin Effie Elias Eliza Elsie Emil Enid Ernest
        Esther Ezra Flora Frank Freya Gideon Gilbert Grace Gus Harriet Harold Hattie Helga Henry
        Hilda Ida Irene Isaac Ivan Jasper Jonas Josef Judith Julius Karl Katrin Kit Laszlo Leo
        Lionel Lottie Louis Lucy Mabel Magnus Marta Matilda Maud Milo Miriam Molly Nell Nils Nora
        Olaf Olive Otto Percy Philippa Quentin Ralph Rhoda Rudy Ruth Sadie Saul Selma Silas Sofia
        Stella Sven Tessa Theo Thora Ulla Vera Victor Viggo Walter Wanda Wilfred Winnie Yusuf
        Zelda Zora Ingrid Hector Lars Petra Rufus Ottilie Abel Birgit Conrad Delia
        """.split()),
    templates={
        "colour": (
            FactTemplate("{name} had a {colour} {thing}.", "What colour is the {thing} of {name}?"),
            FactTemplate("The {thing} that {name} owned was {colour}.", "Which colour did the {thing} of {name} have?"),
            FactTemplate("{name} painted the {thing} {colour} last spring.", "In what colour had {name} painted the {thing}?"),
        ),
        "owner": (
            FactTemplate("{name} owned the {thing} that was {colour}.", "Whose was the {colour} {thing}?"),
            FactTemplate("The {colour} {thing} was the property of {name}.", "To whom did the {colour} {thing} belong?"),
            FactTemplate("Everyone knew that {name} had the {colour} {thing}.", "Who had the {colour} {thing}?"),
        ),
        "place": (
            FactTemplate("{name} hid {kept} in the {place}.", "Where had {name} hidden {kept}?"),
            FactTemplate("In the {place}, {name} had put away {kept}.", "Where did {name} put away {kept}?"),
            FactTemplate("{name} left {kept} in the {place} for safety.", "In which room had {name} left {kept}?"),
        ),
        "passkey": (
            FactTemplate("The code for the {room} lock was {code}.", "What was the code for the {room} lock?"),
            FactTemplate("The {room} safe opened to the number {code}.", "Which number opened the {room} safe?"),
            FactTemplate("Whoever typed {code} could open the {room} gate.", "What number opened the {room} gate?"),
        ),
        "relation": (
            FactTemplate("{other} was the {relative} of {name}.", "Who was the {relative} of {name}?"),
            FactTemplate("{name} had a {relative} called {other}.", "What was the name of the {relative} of {name}?"),
            FactTemplate("{other}, the {relative} of {name}, lived close by.", "Who is the {relative} of {name}?"),
        ),
    },
)

BENCHMARK = RecallSplit(
    name="benchmark",
    names=tuple("""
        Mara Tobias Elena Hugo Ines Felix Greta Oskar Lena Pavel Rosa Simon Alma Bruno Clara Dmitri
        """.split()),
    templates={
        "colour": (FactTemplate("{name}'s {thing} was painted {colour}.", "What colour was {name}'s {thing}?"),),
        "owner": (FactTemplate("The {colour} {thing} belonged to {name}.", "Who owned the {colour} {thing}?"),),
        "place": (FactTemplate("{name} kept {kept} in the {place}.", "Where did {name} keep {kept}?"),),
        "passkey": (FactTemplate("The passkey of the {room} door was {code}.", "What was the passkey of the {room} door?"),),
        "relation": (FactTemplate("{name}'s {relative} was {other}.", "Who was {name}'s {relative}?"),),
    },
)


@dataclass(frozen=True)
class Fact:
    statement: str  # planted in the passage
    question: str
    answer: str  # as it follows "Answer:", with its leading space


@dataclass(frozen=True)
class RecallItem:
    """A passage with facts planted in it, and which of them is asked about."""

    passage: str
    facts: tuple[Fact, ...]
    asked: int
    unplanted: str  # an answer of the same kind that the passage never states
    kind: str
    depth: float  # where the asked fact sits, as a share of the passage's sentences

    @property
    def question(self) -> str:
        return self.facts[self.asked].question

    @property
    def answer(self) -> str:
        return self.facts[self.asked].answer

    @property
    def candidates(self) -> tuple[str, ...]:
        """Every planted answer, then the unplanted one: what a benchmark chooses among."""
        return tuple(fact.answer for fact in self.facts) + (self.unplanted,)


def plant_facts(rng: random.Random, split: RecallSplit, count: int, kind: str | None = None
                ) -> tuple[str, list[Fact], str]:
    """`count` facts of one kind about different subjects, and an answer planted nowhere.

    Returns (kind, facts, unplanted answer); all answers differ.
    """
    kind = kind or rng.choice(KINDS)
    template = rng.choice(split.templates[kind])
    people = rng.sample(split.names, 2 * count + 1)
    pools = {
        "name": people, "other": people[count:], "colour": rng.sample(COLOURS, count + 1),
        "place": rng.sample(PLACES, count + 1), "room": rng.sample(PLACES, count),
        "code": [str(code) for code in rng.sample(range(10_000, 100_000), count + 1)],
    }
    shared = {"thing": rng.choice(THINGS), "kept": rng.choice(KEPT_THINGS), "relative": rng.choice(RELATIVES)}
    subject_field, answer_field = SUBJECT_FIELD[kind], ANSWER_FIELD[kind]
    facts = []
    for index in range(count):
        fields = {**shared, subject_field: pools[subject_field][index], answer_field: pools[answer_field][index]}
        facts.append(Fact(_sentence(template.statement.format(**fields)), template.question.format(**fields),
                          _answer(kind, pools[answer_field][index])))
    return kind, facts, _answer(kind, pools[answer_field][count])


def _answer(kind: str, value: str) -> str:
    return f" In the {value}" if kind == "place" else f" {value}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'“‘])")


class Filler:
    """Runs of consecutive sentences from books, with their token counts, to hide facts in."""

    def __init__(self, book_texts: Sequence[str], tokenizer, min_sentences: int = 50):
        """`book_texts` as `tokenizer_training.normalise_book` leaves them (paragraphs apart by a
        blank line); `tokenizer` a `tokenizers.Tokenizer` or anything with `encode(text) -> ids`."""
        self.books: list[list[str]] = []
        self.token_sums: list[np.ndarray] = []  # per book: tokens of sentences [0, i)
        for text in book_texts:
            sentences = [s.strip() for p in text.split("\n\n") for s in _SENTENCE_BREAK.split(p)
                         if len(s.split()) >= 4]
            if len(sentences) < min_sentences:
                continue
            counts = _token_counts(tokenizer, [" " + s for s in sentences])
            self.books.append(sentences)
            self.token_sums.append(np.concatenate([[0], np.cumsum(counts)]))
        if not self.books:
            raise ValueError(f"no book has {min_sentences} sentences to cut passages from")

    def run(self, rng: random.Random, tokens: int) -> list[str]:
        """Consecutive sentences of one book, about `tokens` tokens in all (at least one sentence)."""
        book = rng.randrange(len(self.books))
        sums = self.token_sums[book]
        last_start = int(np.searchsorted(sums, sums[-1] - tokens, side="right")) - 1
        start = rng.randrange(0, max(1, last_start))
        end = int(np.searchsorted(sums, sums[start] + tokens, side="left"))
        return self.books[book][start : max(start + 1, end)]


def _token_counts(tokenizer, texts: Sequence[str]) -> list[int]:
    if hasattr(tokenizer, "encode_batch"):  # a `tokenizers.Tokenizer`: all at once, in Rust
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]
    return [len(tokenizer.encode(text)) for text in texts]


def make_item(rng: random.Random, split: RecallSplit, filler: Filler, passage_tokens: int,
              depth: float | None = None, count: int = 3, kind: str | None = None) -> RecallItem:
    """A passage of about `passage_tokens` tokens with `count` facts of one kind planted in it.

    The asked fact sits at `depth` (a share of the passage's sentences: 0 the start, 1 the end;
    None: anywhere); the others anywhere else.
    """
    kind, facts, unplanted = plant_facts(rng, split, count, kind)
    asked = rng.randrange(count)
    fact_tokens = sum(len(f.statement) for f in facts) // 4  # about 4 characters a token
    # A passage shorter than its facts is the facts alone.
    sentences = filler.run(rng, passage_tokens - fact_tokens) if passage_tokens > fact_tokens else []
    depth = rng.random() if depth is None else depth
    slots = {asked: round(depth * len(sentences))}
    for index in range(count):
        if index != asked:
            slots[index] = rng.randrange(len(sentences) + 1)
    for index in sorted(slots, key=lambda i: (slots[i], i), reverse=True):
        sentences.insert(slots[index], facts[index].statement)
    return RecallItem(" ".join(sentences), tuple(facts), asked, unplanted, kind, depth)


def layout(passage: str, question: str, order: Order) -> str:
    """The prompt for one question, ending where the answer begins ("...\\nAnswer:")."""
    ask = f"Question: {question}\nAnswer:"
    if order == "context":
        parts = [passage, ask]
    elif order == "twice":
        parts = [passage, passage, ask]
    elif order == "jrt":
        parts = [f"Question: {question}", passage, passage, ask]
    else:
        raise ValueError(f"unknown order {order!r}; orders are {ORDERS}")
    return SEPARATOR.join(parts)


# ---- training rows -------------------------------------------------------------------------


SHORT_PASSAGE_TOKENS = (8, 160)
SHORT_SHARE = 0.7  # of episodes with a short passage


@dataclass(frozen=True)
class Episode:
    """One training episode's text and the character spans of its answers' values."""

    text: str
    answer_spans: tuple[tuple[int, int], ...]


def training_episode(rng: random.Random, filler: Filler, budget_tokens: int,
                     split: RecallSplit = TRAINING) -> Episode:
    """An episode that fits in about `budget_tokens` tokens, in the context or the JRT order.

    Most passages are short (many questions for the tokens read: binding a name to its fact is
    learned there); the rest run up to the budget, so the skill reaches long contexts.
    Context-first episodes ask about every planted fact in turn; JRT episodes ask about one,
    before and after the context.
    """
    order: Order = "jrt" if rng.random() < 0.5 else "context"
    count = rng.randint(2, 4)
    overhead = 30 * (count if order == "context" else 2)  # questions and answers, in tokens
    room = max(SHORT_PASSAGE_TOKENS[0], (budget_tokens - overhead) // (2 if order == "jrt" else 1))
    low, high = SHORT_PASSAGE_TOKENS if rng.random() < SHORT_SHARE else (SHORT_PASSAGE_TOKENS[1], room)
    high = max(low, min(high, room))
    passage_tokens = int(math.exp(rng.uniform(math.log(low), math.log(high))))
    item = make_item(rng, split, filler, passage_tokens, count=count)
    if order == "jrt":
        text = layout(item.passage, item.question, "jrt") + item.answer
        return Episode(text, (_value_span(text),))
    text, spans = item.passage, []
    for index in rng.sample(range(count), count):
        text += SEPARATOR + f"Question: {item.facts[index].question}\nAnswer:" + item.facts[index].answer
        spans.append(_value_span(text))
    return Episode(text, tuple(spans))


def _value_span(text: str) -> tuple[int, int]:
    """Where the answer that ends `text` has its value: " cellar" of " In the cellar"."""
    start = text.rindex(" ")
    return start, len(text)


class RecallRows:
    """Training rows of packed recall episodes, in an order fixed by the seed.

    Each row is (length + 1) tokens: episodes, each preceded by END_OF_TEXT, the last one cut
    where the row ends, with a flag on every token that belongs to an answer.
    """

    def __init__(self, tokenizer, filler: Filler, length: int, seed: int, end_of_text_id: int):
        self.tokenizer, self.filler, self.length = tokenizer, filler, length
        self.rng = random.Random(f"recall-rows-{seed}")
        self.end_of_text_id = end_of_text_id

    def row(self) -> tuple[list[int], list[bool]]:
        """(tokens, whether each token is part of an answer)."""
        ids: list[int] = []
        in_answer: list[bool] = []
        while len(ids) < self.length + 1:
            room = max(64, self.length - len(ids))  # a last episode too long for the row is cut
            episode = training_episode(self.rng, self.filler, room)
            encoding = self.tokenizer.encode(episode.text, add_special_tokens=False)
            ids.append(self.end_of_text_id)
            in_answer.append(False)
            ids.extend(encoding.ids)
            in_answer.extend(any(start < a_end and end > a_start for a_start, a_end in episode.answer_spans)
                             for start, end in encoding.offsets)
        return ids[: self.length + 1], in_answer[: self.length + 1]

"""Can the local model recall a fact planted in a long context? Three prompt orders compared.

    python benchmarks/recall.py [--checkpoint PATH] [--items 20] [--lengths 256 512 1024 2048 4096]

Each item is a story passage of about L tokens (filler: a seeded run of sentences from a book
in /work/shared/corpus/gutenberg) with facts planted in it: three people's facts of one kind
(whose a thing is, what colour it is, where someone keeps something, or a 5-digit passkey),
one of which is asked about. The asked fact sits at depth 10%, 50% or 90% of the passage, in
turn. The answer is chosen among 4 candidates (the true one, the other planted ones, and an
unplanted one) by log-likelihood: the sum of the log-probabilities of the candidate's tokens
after the prompt, all candidates continuing from one cloned prompt state. Three orders:

  (a) context, question
  (b) JRT: question, context, context, question
  (c) context twice, then the question

Accuracy is printed per context length and overall, with chance level (25%). Items are
seeded, so two runs on one checkpoint ask the same questions. The default run reads about
4 x 20 x 7,936 tokens; a small model (6 layers, 384 wide) takes about 10 minutes on two
cores. The model is --checkpoint, else the bundled demo model.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from longyarn.recurrent_core.local_lm.runtime import DEMO_MODEL_DIR  # noqa: E402
from longyarn.recurrent_core.local_lm import LocalLM  # noqa: E402
from longyarn.recurrent_core.local_lm.tokenizer import Tokenizer, check_matches, load_tokenizer_for  # noqa: E402

CORPUS = Path("/work/shared/corpus/gutenberg")
ORDERS = {
    "a": "context, question",
    "b": "question, context x2, question (JRT)",
    "c": "context x2, question",
}
DEPTHS = (0.1, 0.5, 0.9)
CANDIDATES = 4

NAMES = ["Mara", "Tobias", "Elena", "Hugo", "Ines", "Felix", "Greta", "Oskar", "Lena", "Pavel",
         "Rosa", "Simon", "Alma", "Bruno", "Clara", "Dmitri"]
THINGS = ["boat", "lantern", "violin", "bicycle", "kite", "umbrella", "wagon", "clock"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "purple", "orange"]
PLACES = ["cellar", "attic", "garden", "kitchen", "stable", "library", "chapel", "barn"]
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


@dataclass(frozen=True)
class Fact:
    statement: str  # planted in the context
    question: str
    answer: str  # as it continues "Answer:", with its leading space


@dataclass(frozen=True)
class Item:
    context: str
    question: str
    candidates: tuple[str, ...]
    correct: int  # index into candidates


def facts_of_one_kind(rng: random.Random, count: int) -> tuple[list[Fact], list[str]]:
    """`count` facts about different people, and one more answer that is planted nowhere."""
    kind = rng.choice(["colour", "owner", "place", "passkey"])
    names = rng.sample(NAMES, count + 1)
    if kind == "colour":
        thing = rng.choice(THINGS)
        colours = rng.sample(COLOURS, count + 1)
        facts = [Fact(f"{n}'s {thing} was painted {c}.", f"What colour was {n}'s {thing}?", f" {c}")
                 for n, c in zip(names, colours)]
        return facts, [f" {colours[-1]}"]
    if kind == "owner":
        things = rng.sample(THINGS, count)
        colour = rng.choice(COLOURS)
        facts = [Fact(f"The {colour} {t} belonged to {n}.", f"Who owned the {colour} {t}?", f" {n}")
                 for n, t in zip(names, things)]
        return facts, [f" {names[-1]}"]
    if kind == "place":
        places = rng.sample(PLACES, count + 1)
        facts = [Fact(f"{n} kept the silver key in the {p}.", f"Where did {n} keep the silver key?",
                      f" In the {p}") for n, p in zip(names, places)]
        return facts, [f" In the {places[-1]}"]
    places = rng.sample(PLACES, count)
    codes = [str(code) for code in rng.sample(range(10_000, 100_000), count + 1)]
    facts = [Fact(f"The passkey of the {p} door was {code}.", f"What was the passkey of the {p} door?",
                  f" {code}") for p, code in zip(places, codes)]
    return facts, [f" {codes[-1]}"]


class Filler:
    """Runs of consecutive sentences from the corpus books, chosen by a seeded generator."""

    def __init__(self, corpus: Path):
        from longyarn.training.tokenizer_training import normalise_book

        books = sorted(corpus.glob("*.txt"))
        if not books:
            sys.exit(f"No books in {corpus}; the benchmark takes its filler text from there.")
        self.books = []
        for book in books:
            paragraphs = normalise_book(book.read_text(encoding="utf-8")).split("\n\n")
            sentences = [s.strip() for p in paragraphs for s in _SENTENCE.split(p) if len(s.split()) >= 4]
            if len(sentences) > 500:
                self.books.append(sentences)

    def run(self, rng: random.Random, tokenizer: Tokenizer, tokens: int) -> list[str]:
        sentences = rng.choice(self.books)
        start = rng.randrange(0, len(sentences) - 400)
        chosen, total = [], 0
        for sentence in sentences[start:]:
            if total >= tokens:
                break
            chosen.append(sentence)
            total += len(tokenizer.encode(" " + sentence))
        return chosen


def make_item(rng: random.Random, filler: Filler, tokenizer: Tokenizer, length: int, depth: float) -> Item:
    facts, unplanted = facts_of_one_kind(rng, CANDIDATES - 1)
    asked = rng.randrange(len(facts))
    fact_tokens = sum(len(tokenizer.encode(" " + f.statement)) for f in facts)
    sentences = filler.run(rng, tokenizer, max(16, length - fact_tokens))
    # The asked fact at `depth`, the others anywhere else.
    slots = {asked: round(depth * len(sentences))}
    for index in range(len(facts)):
        if index != asked:
            slots[index] = rng.randrange(len(sentences) + 1)
    for index in sorted(slots, key=lambda i: slots[i], reverse=True):
        sentences.insert(slots[index], facts[index].statement)
    candidates = [f.answer for f in facts] + unplanted
    order = list(range(len(candidates)))
    rng.shuffle(order)
    return Item(
        context=" ".join(sentences),
        question=facts[asked].question,
        candidates=tuple(candidates[i] for i in order),
        correct=order.index(asked),
    )


class Scorer:
    """Log-likelihood of candidate answers after a prompt, for each of the three orders."""

    def __init__(self, lm: LocalLM, tokenizer: Tokenizer):
        self.lm = lm
        self.tokenizer = tokenizer
        self.separator = tokenizer.encode("\n\n")

    def choices(self, item: Item) -> dict[str, int]:
        """The candidate each order picks."""
        encode = self.tokenizer.encode
        context = encode(item.context) + self.separator
        question = encode(f"Question: {item.question}")
        ask = question + encode("\nAnswer:")
        candidates = [encode(c) for c in item.candidates]

        # (a) and (c) share the first reading of the context.
        _, after_context = self.lm.forward(context)
        _, after_twice = self.lm.forward(context, after_context)
        prompts = {
            "a": (ask, after_context),
            "b": (question + self.separator + context + context + ask, None),
            "c": (ask, after_twice),
        }
        picked = {}
        for order, (ids, state) in prompts.items():
            logits, prompt_state = self.lm.forward(ids, state)
            scores = [self._log_likelihood(logits, prompt_state, c) for c in candidates]
            picked[order] = max(range(len(scores)), key=scores.__getitem__)
        return picked

    def _log_likelihood(self, logits: torch.Tensor, state, answer: list[int]) -> float:
        total = 0.0
        state = state.clone()  # every candidate starts from the same prompt state
        for position, token in enumerate(answer):
            total += torch.log_softmax(logits, dim=-1)[token].item()
            if position + 1 < len(answer):
                logits, state = self.lm.forward([token], state)
        return total


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="an RWKV-7 .pth or longyarn model directory")
    parser.add_argument("--items", type=int, default=20, help="questions per context length")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or (DEMO_MODEL_DIR if DEMO_MODEL_DIR.is_dir() else None)
    if checkpoint is None:
        sys.exit("No bundled demo model is installed; pass --checkpoint PATH to an RWKV-7 model.")
    lm = LocalLM.load(checkpoint)
    tokenizer = load_tokenizer_for(checkpoint)
    check_matches(tokenizer, lm.vocab_size)
    filler = Filler(CORPUS)
    scorer = Scorer(lm, tokenizer)
    print(f"Model: {checkpoint} ({lm.config.n_layer} layers, {lm.config.n_embd} wide); "
          f"{args.items} items per length, seed {args.seed}, {args.threads} threads.")

    correct = {order: {length: 0 for length in args.lengths} for order in ORDERS}
    started = time.perf_counter()
    for length in args.lengths:
        rng = random.Random(f"{args.seed}-{length}")
        for index in range(args.items):
            item = make_item(rng, filler, tokenizer, length, DEPTHS[index % len(DEPTHS)])
            for order, choice in scorer.choices(item).items():
                correct[order][length] += choice == item.correct
        print(f"  {length:5d} tokens done ({time.perf_counter() - started:5.0f} s)", file=sys.stderr)

    header = f"{'context tokens':>14} | " + " | ".join(f"({o}) {d}" for o, d in ORDERS.items())
    print()
    print(header)
    print("-" * len(header))
    widths = [len(f"({o}) {d}") for o, d in ORDERS.items()]
    for length in args.lengths:
        cells = [f"{100 * correct[o][length] / args.items:.0f}%".rjust(w) for o, w in zip(ORDERS, widths)]
        print(f"{length:>14} | " + " | ".join(cells))
    total = args.items * len(args.lengths)
    cells = [f"{100 * sum(correct[o].values()) / total:.0f}%".rjust(w) for o, w in zip(ORDERS, widths)]
    print(f"{'overall':>14} | " + " | ".join(cells))
    print(f"\nChance: {100 / CANDIDATES:.0f}% ({CANDIDATES} candidates). {total} items per order, "
          f"{time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()

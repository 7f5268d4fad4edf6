"""Can the local model recall a fact planted in a long context? Three prompt orders compared.

    python benchmarks/recall.py --quick                      # the bundled demo model
    python benchmarks/recall.py --random-weights --quick --lengths 512   # the null check
    python benchmarks/recall.py [--checkpoint PATH] [--lengths 512 1024 2048 4096] [--items-per-cell 40]
    python benchmarks/recall.py --random-weights tiny --items-per-cell 1 --lengths 128   # the script itself

Each item is a passage of about L tokens cut from one of the four books that training holds
out (`longyarn.training.tokenizer_training.HELDOUT_BOOKS`), with three facts of one kind
planted in it (whose a thing is, what colour it is, where someone keeps something, a passkey,
who is whose relative), one of which is asked about. The asked fact sits at 10%, 50% or 90% of
the passage. The answer is chosen among 4 candidates (the true one, the two other planted ones
and one planted nowhere) by log-likelihood: the sum of the log-probabilities of the
candidate's tokens after the prompt. Three orders (`recall_episodes.layout`):

  (a) context, question
  (b) JRT: question, context, context, question (the order the engine uses for a local model)
  (c) context twice, then the question

The items never occur in training: the benchmark's names, fact sentences, questions and books
are its own (the split is written down in `longyarn/training/recall_episodes.py`, and a test
checks it). Items are seeded, so two runs ask the same questions.

It prints the accuracy of every order per context length and per depth, with 95% Wilson
intervals, the JRT gain (b) - (a) with a paired interval, the targets at 512-2,048 tokens
((b) >= 60% and (b) >= (a) + 10 points), and last a line `recall a=.. b=.. c=.. n=N` over
every item run (N items per order). `--quick` asks 20 items per length and depth up to 2,048
tokens and 6 at 4,096 (198 per order: an interval of +-7 points or better per order); it reads
about 1.2M tokens. (The first version, 216 items and 1.7M tokens, took 16 CPU-minutes for the
demo model, 23 minutes' wall time while other test suites kept the 2-core machine's load at
5-8.) `--random-weights` scores a random RWKV-7
of the 0.1B shape (12 layers x 768, heads of 64) with the demo model's vocabulary: it must sit
at chance (25%), the benchmark's own null check; it reads about 600 tokens a second on two
cores, so give it one short length (`--lengths 512`: 54 items, about 5 minutes).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from longyarn.recurrent_core.local_lm import LocalLM  # noqa: E402
from longyarn.recurrent_core.local_lm.runtime import DEMO_MODEL_DIR  # noqa: E402
from longyarn.recurrent_core.local_lm.tokenizer import Tokenizer, check_matches, load_tokenizer_for  # noqa: E402
from longyarn.training.recall_episodes import BENCHMARK, Filler, RecallItem, layout, make_item  # noqa: E402
from longyarn.training.tokenizer_training import HELDOUT_BOOKS, normalise_book  # noqa: E402

CORPUS = Path("/work/shared/corpus/gutenberg")
ORDERS = {"a": ("context", "context, question"),
          "b": ("jrt", "JRT: question, context x2, question"),
          "c": ("twice", "context x2, question")}
DEPTHS = (0.1, 0.5, 0.9)
FACTS_PER_ITEM = 3
CHANCE = 1 / (FACTS_PER_ITEM + 1)
TARGET_LENGTHS = (512, 1024, 2048)
QUICK_ITEMS_PER_CELL = 20
QUICK_LONG_ITEMS_PER_CELL = 6  # past the targets' lengths, where items cost most


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(first: list[bool], second: list[bool], z: float = 1.96) -> tuple[float, float, float]:
    """Mean of second - first over paired items, with a normal 95% interval."""
    differences = [int(b) - int(a) for a, b in zip(first, second)]
    n = len(differences)
    mean = sum(differences) / n
    spread = math.sqrt(sum((d - mean) ** 2 for d in differences) / max(1, n - 1))
    return mean, mean - z * spread / math.sqrt(n), mean + z * spread / math.sqrt(n)


class Scorer:
    """Which candidate each order's prompt makes most likely."""

    def __init__(self, lm: LocalLM, tokenizer: Tokenizer):
        self.lm, self.tokenizer = lm, tokenizer

    def choices(self, item: RecallItem) -> dict[str, int]:
        ids = {order: self.tokenizer.encode(layout(item.passage, item.question, name))
               for order, (name, _) in ORDERS.items()}
        # (a) and (c) both start by reading the passage: read it once.
        shared = _common_prefix(ids["a"], ids["c"])
        _, after_passage = self.lm.forward(ids["a"][:shared])
        candidates = [self.tokenizer.encode(candidate) for candidate in item.candidates]
        picked = {}
        for order, prompt in ids.items():
            start, state = (shared, after_passage) if order in ("a", "c") else (0, None)
            logits, state = self.lm.forward(prompt[start:], state)
            scores = [self._log_likelihood(logits, state, candidate) for candidate in candidates]
            picked[order] = max(range(len(scores)), key=scores.__getitem__)
        return picked

    def _log_likelihood(self, logits: torch.Tensor, state, answer: list[int]) -> float:
        total = 0.0
        for position, token in enumerate(answer):
            total += torch.log_softmax(logits, dim=-1)[token].item()
            if position + 1 < len(answer):
                logits, state = self.lm.forward([token], state)
        return total


def _common_prefix(first: list[int], second: list[int]) -> int:
    length = 0
    for a, b in zip(first, second):
        if a != b:
            break
        length += 1
    return length


def heldout_filler(corpus: Path, tokenizer: Tokenizer) -> Filler:
    texts = []
    for name in HELDOUT_BOOKS:
        path = corpus / name
        if not path.is_file():
            sys.exit(f"{path} is missing; the benchmark hides its facts in the four held-out books, "
                     f"so point --corpus at the folder that holds them.")
        texts.append(normalise_book(path.read_text(encoding="utf-8")))
    return Filler(texts, tokenizer)


# Random checkpoints: the 0.1B shape (RWKV-7 World 0.1B: 12 layers x 768, heads of 64) for the
# null check, and a tiny one for a quick run of the script itself.
RANDOM_SHAPES = {"0.1b": dict(n_layer=12, n_embd=768, head_size=64), "tiny": dict(n_layer=2, n_embd=64, head_size=32)}


def load_model(args: argparse.Namespace) -> tuple[LocalLM, Tokenizer, str]:
    if args.random_weights:
        from longyarn.training.synthetic import random_rwkv7_state_dict

        tokenizer = load_tokenizer_for(DEMO_MODEL_DIR)
        weights = random_rwkv7_state_dict(**RANDOM_SHAPES[args.random_weights], vocab_size=tokenizer.vocab_size,
                                          seed=args.seed, dtype=torch.bfloat16)
        return LocalLM.from_state_dict(weights), tokenizer, f"random weights of the {args.random_weights} shape"
    checkpoint = args.checkpoint or (DEMO_MODEL_DIR if DEMO_MODEL_DIR.is_dir() else None)
    if checkpoint is None:
        sys.exit("No bundled demo model is installed; pass --checkpoint PATH to an RWKV-7 model.")
    lm = LocalLM.load(checkpoint)
    tokenizer = load_tokenizer_for(checkpoint)
    check_matches(tokenizer, lm.vocab_size)
    return lm, tokenizer, str(checkpoint)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="an RWKV-7 .pth or longyarn model directory")
    parser.add_argument("--random-weights", nargs="?", const="0.1b", choices=sorted(RANDOM_SHAPES),
                        help="a random model of the 0.1B shape (the null check), or a tiny one")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ITEMS_PER_CELL} items per length and depth ({QUICK_LONG_ITEMS_PER_CELL} past 2,048 tokens)")
    parser.add_argument("--items-per-cell", type=int, help="items per context length and depth (default 40)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def items_per_cell(args: argparse.Namespace, length: int) -> int:
    """Items per depth at `length` tokens."""
    if args.items_per_cell:
        return args.items_per_cell
    if args.quick:
        return QUICK_LONG_ITEMS_PER_CELL if length > max(TARGET_LENGTHS) else QUICK_ITEMS_PER_CELL
    return 40


def cell(results: list[bool]) -> str:
    if not results:
        return "-"
    low, high = wilson(sum(results), len(results))
    return f"{100 * sum(results) / len(results):5.1f}% [{100 * low:3.0f}-{100 * high:3.0f}]"


def print_table(title: str, rows: list[tuple[str, dict[str, list[bool]]]]) -> None:
    headers = [f"({order}) {description}" for order, (_, description) in ORDERS.items()]
    widths = [max(len(h), 19) for h in headers]
    print(f"\n{title}")
    print(f"{'':>14} | " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("-" * (17 + sum(w + 3 for w in widths)))
    for label, by_order in rows:
        print(f"{label:>14} | " + " | ".join(cell(by_order[o]).ljust(w) for o, w in zip(ORDERS, widths)))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    lm, tokenizer, described = load_model(args)
    filler = heldout_filler(args.corpus, tokenizer)
    scorer = Scorer(lm, tokenizer)
    per_order = sum(items_per_cell(args, length) for length in args.lengths) * len(DEPTHS)
    cells = ", ".join(f"{items_per_cell(args, length)} at {length}" for length in args.lengths)
    print(f"Model: {described} ({lm.config.n_layer} layers, {lm.config.n_embd} wide); "
          f"{per_order} items per order (per depth: {cells} tokens), seed {args.seed}, "
          f"{args.threads} threads; facts hidden in the {len(HELDOUT_BOOKS)} held-out books.")

    # outcomes[(length, depth)][order]: whether each item was answered right
    outcomes = {(L, d): {o: [] for o in ORDERS} for L in args.lengths for d in DEPTHS}
    started = time.perf_counter()
    for length in args.lengths:
        rng = random.Random(f"{args.seed}-{length}")
        for index in range(items_per_cell(args, length) * len(DEPTHS)):
            depth = DEPTHS[index % len(DEPTHS)]
            item = make_item(rng, BENCHMARK, filler, length, depth, count=FACTS_PER_ITEM)
            for order, choice in scorer.choices(item).items():
                outcomes[(length, depth)][order].append(item.candidates[choice] == item.answer)
        print(f"  {length:5d} tokens done ({time.perf_counter() - started:5.0f} s)", file=sys.stderr)

    def gather(keys) -> dict[str, list[bool]]:
        return {o: [r for key in keys for r in outcomes[key][o]] for o in ORDERS}

    print_table("Accuracy by context length, all depths (95% Wilson intervals):",
                [(f"{L} tokens", gather([(L, d) for d in DEPTHS])) for L in args.lengths])
    print_table("Accuracy by depth of the asked fact, all lengths:",
                [(f"depth {round(100 * d)}%", gather([(L, d) for L in args.lengths])) for d in DEPTHS])
    print_table("Accuracy by length and depth:",
                [(f"{L} @ {round(100 * d)}%", gather([(L, d)])) for L in args.lengths for d in DEPTHS])
    everything = gather(list(outcomes))
    print_table("Overall:", [("all", everything)])

    gain, low, high = paired_difference(everything["a"], everything["b"])
    print(f"\nJRT gain (b) - (a): {100 * gain:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}] over "
          f"{len(everything['a'])} paired items. Chance: {100 * CHANCE:.0f}% ({FACTS_PER_ITEM + 1} candidates).")
    in_targets = [L for L in args.lengths if L in TARGET_LENGTHS]
    if in_targets:
        target = gather([(L, d) for L in in_targets for d in DEPTHS])
        b = sum(target["b"]) / len(target["b"])
        b_gain, _, _ = paired_difference(target["a"], target["b"])
        print(f"Targets at {min(in_targets)}-{max(in_targets)} tokens: (b) {100 * b:.1f}% "
              f"({'met' if b >= 0.6 else 'not met'}: at least 60%), (b) - (a) {100 * b_gain:+.1f} points "
              f"({'met' if b_gain >= 0.1 else 'not met'}: at least +10).")
    past = [L for L in args.lengths if L > max(TARGET_LENGTHS)]
    for length in past:
        result = gather([(length, d) for d in DEPTHS])
        print(f"Past the targets, at {length} tokens: " + ", ".join(f"({o}) {cell(result[o]).strip()}" for o in ORDERS))
    print(f"{time.perf_counter() - started:.0f} s.")
    shares = {o: 100 * sum(everything[o]) / len(everything[o]) for o in ORDERS}
    print(f"recall a={shares['a']:.1f}% b={shares['b']:.1f}% c={shares['c']:.1f}% n={len(everything['a'])}")


if __name__ == "__main__":
    main()

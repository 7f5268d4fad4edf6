"""What the story bible adds to a step: the time to build its section, and the prompt tokens.

Builds two SQLite stories with the same 2,000-paragraph branch (random memory vectors, as
engine_overhead.py does): one with no bible (the baseline), one with a bible of 500 entries
(names, aliases, secondary keys, descriptions that name other entries, a few marked always) and
2,000 dated facts (1,500 entered by the writer, 500 learned on paragraphs of the branch). Then,
for the same instructions on both, in turns, it times `Engine.plan_step` for paragraph 2,001:
store reads, the instruction's embedding, recall, activation and the prompt's fitting, i.e. all
of a step's own work that the bible changes (the model's time is not counted). The first step
of the bible story is timed apart: it embeds every entry once (later steps find them cached).

It prints p50/p95 of both, the added milliseconds and the ratio bible / no bible (end to end,
so the instruction's embedding, which both steps make, carries any noise from the machine's
neighbours), the bible's own work timed apart (listing the entries, reading the branch's facts,
activating) against the same baseline, and the writer prompt's tokens with and without the
bible (the planner's prompt gains the same section).

    python benchmarks/bible_activation.py [--entries 500] [--facts 2000] [--paragraphs 2000] [--steps 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_overhead import InstantBackend, fill  # noqa: E402
from longyarn.recurrent_core.bible import ENTRY_KINDS, EntryDraft, FactDraft  # noqa: E402
from longyarn.recurrent_core.context import STORY_BIBLE  # noqa: E402
from longyarn.recurrent_core.embeddings import default_embedder  # noqa: E402
from longyarn.recurrent_core.engine import Engine, EngineConfig  # noqa: E402
from longyarn.storage.db import open_store  # noqa: E402

SYLLABLES = "ar bel cor dun el fen gar hal is jor kel lun mar nor os per quin ras sel tor ul ven wyn yr zal".split()
PLACES = "quay mill orchard harbour chapel market lighthouse ferry bridge tower".split()


def names(count: int, rng: random.Random) -> list[str]:
    """`count` distinct made-up names of two or three syllables."""
    made: set[str] = set()
    while len(made) < count:
        made.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize())
    return sorted(made)


def bible_drafts(count: int, facts: int, paragraphs: int, rng: random.Random) -> list[EntryDraft]:
    """`count` entries holding `facts` writer-entered facts among them, dated across the story."""
    called = names(count, rng)
    drafts = []
    for index, name in enumerate(called):
        others = rng.sample(called, 2)
        start = rng.randint(1, paragraphs)
        facts_here = [
            FactDraft(f"{name} {rng.choice(('owes', 'trusts', 'fears', 'guards'))} {rng.choice(others)}",
                      from_paragraph=max(1, start - rng.randint(0, 400)),
                      until_paragraph=start + rng.randint(0, 600) if rng.random() < 0.5 else None)
            for _ in range(facts // count)
        ]
        drafts.append(EntryDraft(
            name=name, kind=ENTRY_KINDS[index % len(ENTRY_KINDS)],
            aliases=(f"{name} of the {rng.choice(PLACES)}",) if index % 3 == 0 else (),
            secondary_keys=(rng.choice(PLACES),) if index % 10 == 0 else (),
            description=f"Known at the {rng.choice(PLACES)}; kin to {others[0]}, rival of {others[1]}.",
            always=index % 100 == 0, facts=tuple(facts_here),
        ))
    return drafts


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


async def main(entries: int, fact_count: int, paragraphs: int, steps: int) -> None:
    rng = random.Random(0)
    embedder = default_embedder()
    embedder.embed(["warm up"])
    folder = Path(tempfile.mkdtemp())
    store = open_store(str(folder / "bible.db"))
    engine = Engine(store, InstantBackend(), embedder, EngineConfig())
    stories = {}
    for which in ("no bible", "bible"):
        stories[which], _ = await engine.start_story("A harbour town.", "", title="Harbour", outline="Tides.")
        fill(store, stories[which].id, paragraphs, 384, np.random.default_rng(0))  # the same paragraphs
    story_id = stories["bible"].id
    learned = fact_count // 4  # learned on the branch's paragraphs; the rest entered by the writer
    drafts = bible_drafts(entries, fact_count - learned, paragraphs, rng)
    added = store.import_entries(story_id, drafts)
    branch = store.branch_step_ids(story_id)
    for _ in range(learned):
        step_index = rng.randrange(len(branch))
        store.add_fact(rng.choice(added).id, "It changed here.", from_paragraph=step_index + 1,
                       step_id=branch[step_index])
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    print(f"{entries} entries, {len(store.facts_on_branch(story_id, branch[-1])):,} facts on the branch "
          f"({fact_count:,} in all), {paragraphs:,} paragraphs; writing paragraph {paragraphs + 1:,}")

    called = [draft.name for draft in drafts]
    instructions = [
        f"{rng.choice(called)} meets {rng.choice(called)} at the {rng.choice(PLACES)} before the storm."
        for _ in range(steps + 1)
    ]
    started = time.perf_counter()
    await engine.plan_step(story_id, instructions[0])
    first_ms = (time.perf_counter() - started) * 1000
    times: dict[str, list[float]] = {"no bible": [], "bible": []}
    tokens: dict[str, list[int]] = {"no bible": [], "bible": []}
    section_tokens, sent, activated = [], [], []
    for instruction in instructions[1:]:
        for which in ("no bible", "bible"):
            started = time.perf_counter()
            plan = await engine.plan_step(stories[which].id, instruction)
            times[which].append((time.perf_counter() - started) * 1000)
            tokens[which].append(plan.prompt_tokens)
        section_tokens.append(next(s.tokens for s in plan.prompt.context if s.name == STORY_BIBLE))
        sent.append(len(plan.bible.sent))
        activated.append(len(plan.bible.entries))

    bible_entries, previous = store.list_entries(story_id), store.get_step(branch[-1])
    query = embedder.embed([instructions[1]])[0]
    parts = {
        "list the entries": lambda: store.list_entries(story_id),
        "read the branch's facts": lambda: store.facts_on_branch(story_id, branch[-1]),
        "activate (the facts' read included)": lambda: engine.bible.activate(
            story_id, bible_entries, instruction=instructions[1], short_term_memory=previous.short_term_memory,
            previous=previous, branch_ids=branch, query=query, count_tokens=engine.backend.count_tokens,
        ),
    }
    part_ms = {}
    for name, read in parts.items():
        timings = []
        for _ in range(steps):
            started = time.perf_counter()
            read()
            timings.append((time.perf_counter() - started) * 1000)
        part_ms[name] = statistics.median(timings)

    base, bible = statistics.median(times["no bible"]), statistics.median(times["bible"])
    print(f"\nplan_step over {steps} steps (p50 / p95 ms):")
    for which in ("no bible", "bible"):
        print(f"  {which:9s} {percentile(times[which], 50):7.1f} / {percentile(times[which], 95):7.1f}")
    print(f"  added by the bible: {bible - base:.1f} ms a step; ratio bible / no bible (the baseline): "
          f"{bible / base:.2f}x")
    print(f"  the bible story's first step, embedding all {entries} entries once: {first_ms:,.0f} ms")
    own = part_ms["list the entries"] + part_ms["activate (the facts' read included)"]
    print("  the bible's own work, timed apart (p50): " + "; ".join(f"{name} {ms:.1f} ms" for name, ms in part_ms.items()))
    print(f"  so the bible's own work is {own:.1f} ms a step, {own / base:.2f}x the no-bible plan_step (the baseline)")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} (a shared machine's neighbours slow the embedder most)")
    print(f"\nentries activated per step: p50 {statistics.median(activated):.0f}, sent within the "
          f"{engine.config.bible_budget_tokens}-token bible budget: p50 {statistics.median(sent):.0f}")
    print(f"writer prompt tokens (p50): no bible {statistics.median(tokens['no bible']):,.0f}, bible "
          f"{statistics.median(tokens['bible']):,.0f}; added {statistics.median(tokens['bible']) - statistics.median(tokens['no bible']):,.0f} "
          f"(the section alone {statistics.median(section_tokens):,.0f}; max {max(section_tokens):,})")
    store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--facts", type=int, default=2000)
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=30)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.entries, arguments.facts, arguments.paragraphs, arguments.steps))

"""Story bible recall: how often a fact planted early is in the writer's prompt when a late
paragraph needs it, with the bible against without it (long-term memory recall only).

The same story is written twice through the real engine, the real offline embedder and the
scripted server. Its writer replies are paragraphs of public-domain books (varied filler); at a
few early paragraphs (2-10 of 60) the reply also states a fact ("Mara keeps the brass key in her
left boot."). Late paragraphs (40-60) get an instruction that needs one of them ("Mara reaches
for the brass key."), given to the engine as the chosen plan.

- without the bible (the baseline): the fact reaches the prompt only if long-term memory recalls
  the paragraph that stated it;
- with the bible: after the planting paragraph, the fact is also entered in the story bible as
  a fact of its entry, learned on that paragraph (as an accepted bible update is stored).

Measured from the writer prompts the server RECEIVED at the asking steps: is the fact's text
anywhere in the prompt, and in which section (Story bible, Recalled passages). Also the tokens
the Story bible section takes at those steps (the backend's own estimate).

    python benchmarks/bible_recall.py [--paragraphs 60] [--facts 12] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longyarn.recurrent_core.backends.openai_backend import OpenAIBackend  # noqa: E402
from longyarn.recurrent_core.context import RECALLED_PASSAGES, STORY_BIBLE  # noqa: E402
from longyarn.recurrent_core.embeddings import default_embedder  # noqa: E402
from longyarn.recurrent_core.engine import Engine, EngineConfig  # noqa: E402
from longyarn.storage.db import open_store  # noqa: E402
from tests.scripted_server import Reply, ScriptedServer, find_instruction, story_responder  # noqa: E402

CORPUS = Path(os.environ.get("LONGYARN_CORPUS", "/work/shared/corpus/gutenberg"))
BOOKS = ("120-treasure-island.txt", "113-secret-garden.txt", "1448-heidi.txt", "1260-jane-eyre.txt")
PREMISE = "A harbour village keeps its secrets through one long winter."


@dataclass(frozen=True)
class PlantedFact:
    entry: str  # the bible entry's name, which the asking instruction names
    kind: str
    sentence: str  # stated in the planting paragraph, and the bible fact's text
    ask: str  # the instruction of a late paragraph that needs the fact

    @property
    def core(self) -> str:
        """What any prompt holding the fact holds: the bible sends facts without their full stop."""
        return " ".join(self.sentence.split()).rstrip(".")


FACTS = (
    PlantedFact("Brass key", "object", "Mara keeps the brass key in her left boot.",
                "Mara reaches for the brass key."),
    PlantedFact("Harbour gate", "place", "The passkey of the harbour gate is gull-seven-tide.",
                "Tobias stands before the harbour gate and must give its passkey."),
    PlantedFact("Ilse", "character", "Ilse is Corin's half-sister by their father's first marriage.",
                "Ilse and Corin quarrel over their father's will."),
    PlantedFact("Silver compass", "object", "The silver compass belonged to the drowned captain Odile Varga.",
                "Felix digs the silver compass out of the sand."),
    PlantedFact("Glasshouse", "place", "The smugglers' ledger lies under the third flagstone of the glasshouse.",
                "Anya searches the glasshouse by lantern light."),
    PlantedFact("Ravi", "character", "Ravi never learned to swim and is afraid of deep water.",
                "Ravi is pushed off the pier into the harbour."),
    PlantedFact("Lantern room", "place", "The lamp of the lantern room burns only whale oil from the Kessel barrels.",
                "The lamp in the lantern room gutters and goes out."),
    PlantedFact("Sunniva", "character", "Sunniva owes the ferryman forty silver marks.",
                "Sunniva meets the ferryman on the quay at dawn."),
    PlantedFact("Music box", "object", "The music box plays only when wound with the iron crank kept in the attic.",
                "Jonah tries to make the music box play."),
    PlantedFact("Old mill", "place", "The cellar of the old mill floods at every spring tide.",
                "Corin hides from the soldiers in the old mill."),
    PlantedFact("Blue door", "place", "The blue door on Rope Street opens to the password low water.",
                "Odile knocks at the blue door on Rope Street."),
    PlantedFact("Wren", "group", "The Wren are smugglers who answer only to the widow Hale.",
                "A man of the Wren stops Felix in the alley."),
)


def schedule(paragraphs: int, facts: int) -> tuple[dict[int, list[PlantedFact]], dict[int, PlantedFact]]:
    """Facts planted over paragraphs 2..paragraphs/6 (2-10 of 60), asked over the last third
    (40-60 of 60), each fact once, in the order planted."""
    chosen = FACTS[:facts]
    plant_last = max(2, round(paragraphs / 6))
    ask_first = max(plant_last + 2, round(paragraphs * 2 / 3))
    if ask_first + len(chosen) - 1 > paragraphs:
        raise SystemExit(f"{paragraphs} paragraphs are too few for {len(chosen)} facts.")
    planted: dict[int, list[PlantedFact]] = {}
    for index, fact in enumerate(chosen):
        at = 2 + (index * (plant_last - 2)) // max(1, len(chosen) - 1) if len(chosen) > 1 else 2
        planted.setdefault(at, []).append(fact)
    span = paragraphs - ask_first
    asked = {ask_first + (index * span) // max(1, len(chosen) - 1): fact for index, fact in enumerate(chosen)}
    return planted, asked


def corpus_paragraphs(count: int, rng: random.Random) -> list[str]:
    """`count` distinct prose paragraphs of 60-160 words from public-domain books (no dialogue-
    only lines, chapter headings or illustrations)."""
    pool = []
    for book in BOOKS:
        text = (CORPUS / book).read_text(encoding="utf-8")
        for block in re.split(r"\n\s*\n", text):
            paragraph = " ".join(block.split())
            words = len(paragraph.split())
            if 60 <= words <= 160 and "[" not in paragraph and "_" not in paragraph and paragraph[0].isalpha():
                pool.append(paragraph)
    if len(pool) < count:
        raise SystemExit(f"The corpus at {CORPUS} has only {len(pool)} usable paragraphs.")
    return rng.sample(pool, count)


def with_sentences(paragraph: str, sentences: list[str]) -> str:
    """The paragraph with the planted sentences after its first sentence, as a writer would
    weave a detail into a scene (so the paragraph is about more than the fact)."""
    first, _, rest = paragraph.partition(". ")
    return " ".join([first + ".", *sentences, rest]).strip() if rest else " ".join([paragraph, *sentences])


@dataclass(frozen=True)
class StoryScript:
    instructions: list[str]  # by paragraph, from 1
    replies: dict[str, str]  # the writer's paragraph, by instruction
    planted: dict[int, list[PlantedFact]]
    asked: dict[int, PlantedFact]


def script_story(paragraphs: int, facts: int, seed: int) -> StoryScript:
    rng = random.Random(seed)
    planted, asked = schedule(paragraphs, facts)
    filler = corpus_paragraphs(paragraphs, rng)
    instructions, replies = [], {}
    for number in range(1, paragraphs + 1):
        # A unique tag lets the scripted writer tell the filler steps apart; asking steps carry
        # only the plain instruction, so recall searches with what a writer would type.
        instruction = asked[number].ask if number in asked else f"The winter goes on (part {number})."
        text = filler[number - 1]
        if number in planted:
            text = with_sentences(text, [fact.sentence for fact in planted[number]])
        instructions.append(instruction)
        replies[instruction] = text
    return StoryScript(instructions, replies, planted, asked)


def responder(script: StoryScript):
    def respond(request: dict) -> Reply:
        if request.get("_role") == "writer":
            instruction = find_instruction(request)
            if instruction in script.replies:
                return Reply(script.replies[instruction])
        return story_responder(request)

    return respond


def prompt_sections(request: dict) -> dict[str, str]:
    """The writer prompt's "## Name" sections as the server received them, by name."""
    text = "\n\n".join(str(message.get("content") or "") for message in request.get("messages") or [])
    sections: dict[str, str] = {}
    for part in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        name, _, body = part.partition("\n")
        sections[name.strip()] = sections.get(name.strip(), "") + body
    return sections


@dataclass(frozen=True)
class Asked:
    paragraph: int
    fact: PlantedFact
    in_bible: bool
    in_recall: bool
    in_prompt: bool  # anywhere, these two sections or any other
    bible_tokens: int


async def write_story(script: StoryScript, db: Path, embedder, *, with_bible: bool) -> tuple[list[Asked], float]:
    store = open_store(str(db))
    started = time.perf_counter()
    try:
        with ScriptedServer(responder(script)) as server:
            backend = OpenAIBackend("scripted-model", base_url=server.base_url, api_key=None, backoff_s=0.01)
            engine = Engine(store, backend, embedder, EngineConfig())
            story, _ = await engine.start_story(PREMISE, "", title="Low Water", outline=PREMISE)
            asked = []
            for number, instruction in enumerate(script.instructions, 1):
                before = len(server.requests)
                completed = await engine.run_step(story.id, instruction)
                if with_bible:
                    for fact in script.planted.get(number, ()):
                        # Stored as an accepted update is: learned on this paragraph, on its branch.
                        entry = store.add_entry(story.id, name=fact.entry, kind=fact.kind)
                        store.add_fact(entry.id, fact.sentence, from_paragraph=number, step_id=completed.step.id)
                if number in script.asked:
                    writer = [r for r in server.requests[before:] if r["_role"] == "writer"]
                    asked.append(measure(number, script.asked[number], writer[-1], backend))
            await backend.aclose()
    finally:
        store.close()
    return asked, time.perf_counter() - started


def measure(number: int, fact: PlantedFact, request: dict, backend: OpenAIBackend) -> Asked:
    sections = prompt_sections(request)

    def holds(text: str) -> bool:
        return fact.core in " ".join(text.split())

    bible = sections.get(STORY_BIBLE, "").strip()
    return Asked(
        number, fact,
        in_bible=holds(bible),
        in_recall=holds(sections.get(RECALLED_PASSAGES, "")),
        in_prompt=any(holds(text) for text in sections.values()),
        bible_tokens=backend.count_tokens(bible) if bible else 0,
    )


async def compare(paragraphs: int, facts: int, seed: int, folder: Path) -> dict:
    script = script_story(paragraphs, facts, seed)
    embedder = default_embedder()
    with_bible, with_seconds = await write_story(script, folder / "with.db", embedder, with_bible=True)
    without, without_seconds = await write_story(script, folder / "without.db", embedder, with_bible=False)
    return {"script": script, "with": with_bible, "without": without,
            "with_seconds": with_seconds, "without_seconds": without_seconds}


def percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def report(result: dict, paragraphs: int, seed: int) -> list[str]:
    script, with_bible, without = result["script"], result["with"], result["without"]
    n = len(with_bible)
    planted_at = sorted(script.planted)
    asked_at = sorted(script.asked)
    found_with = sum(a.in_prompt for a in with_bible)
    found_without = sum(a.in_prompt for a in without)
    tokens = [a.bible_tokens for a in with_bible]
    lines = [
        f"{paragraphs} paragraphs, seed {seed}: {n} facts planted in paragraphs {planted_at[0]}-{planted_at[-1]}, "
        f"asked in {asked_at[0]}-{asked_at[-1]} (recall k={EngineConfig().recall_k})",
        f"story written in {result['with_seconds']:.1f} s with the bible, {result['without_seconds']:.1f} s without",
        "",
        f"{'paragraph':>9}  {'entry':16s} {'with bible':24s} without",
    ]
    for a, b in zip(with_bible, without):
        lines.append(f"{a.paragraph:>9}  {a.fact.entry:16s} {where(a):24s} {where(b)}")
    lines += [
        "",
        f"with bible: {found_with}/{n} ({percent(found_with, n):.0f}%) "
        f"[bible {sum(a.in_bible for a in with_bible)}, recall {sum(a.in_recall for a in with_bible)}]; "
        f"without (baseline, recall only): {found_without}/{n} ({percent(found_without, n):.0f}%) "
        f"[recall {sum(a.in_recall for a in without)}]",
        f"Story bible section at the asking steps: median {statistics.median(tokens):.0f} tokens, "
        f"max {max(tokens)} (the backend's estimate)",
        f"bible_recall with={percent(found_with, n):.1f}% without={percent(found_without, n):.1f}% n={n}",
    ]
    return lines


def where(asked: Asked) -> str:
    found = [name for name, hit in (("bible", asked.in_bible), ("recall", asked.in_recall)) if hit]
    if asked.in_prompt and not found:
        found = ["elsewhere"]
    return "in prompt: " + "+".join(found) if found else "missing"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paragraphs", type=int, default=60)
    parser.add_argument("--facts", type=int, default=len(FACTS), choices=range(1, len(FACTS) + 1), metavar="1-12")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(compare(args.paragraphs, args.facts, args.seed, Path(folder)))
    print("\n".join(report(result, args.paragraphs, args.seed)))


if __name__ == "__main__":
    main()

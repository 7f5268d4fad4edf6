"""Contradiction checks: precision and recall of the plumbing, with contradictions planted.

A 40-paragraph story is written through the real engine against the scripted server. The
bible holds 6 entries with dated facts. The scripted writer's paragraphs are fixed: some hold a
sentence that contradicts a fact in force (planted), some name the same entries and agree, some
contradict a fact that has ended (no contradiction any more), and a few contradict a fact of an
entry that the paragraph names but the instruction, the memory and the paragraphs before do not
(the bible's activation does not send it, so the check cannot see it).

The continuity role's answers come from an honest checker that reads what the server
RECEIVED (tests/scripted_continuity.py): it reports a planted pair only when the request shows
that fact among its facts to check and that sentence in its paragraph. So the figures measure
the plumbing: does the fact reach the check, is the answer parsed and matched back to the fact.

Truth: every planted sentence that contradicts a fact in force at its paragraph. Found: the
step's contradictions, as (fact id, sentence). Baseline: flag every fact in force of each entry
the new paragraph names (what a name-matching check without a model would say).

    python benchmarks/contradictions.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longyarn.recurrent_core.backends.openai_backend import OpenAIBackend  # noqa: E402
from longyarn.recurrent_core.bible import FactDraft  # noqa: E402
from longyarn.recurrent_core.bible_activation import find_name, fold  # noqa: E402
from longyarn.recurrent_core.embeddings import default_embedder  # noqa: E402
from longyarn.recurrent_core.engine import Engine, EngineConfig  # noqa: E402
from longyarn.storage.db import open_store  # noqa: E402
from tests.scripted_continuity import continuity_checker  # noqa: E402
from tests.scripted_server import Reply, ScriptedServer, story_responder  # noqa: E402

PARAGRAPHS = 40
ENTRIES = {  # name: (kind, aliases, facts as (text, from, until))
    "Mara": ("character", ("the captain",), (("Mara is a sailor.", 1, 20), ("Mara is the harbour master.", 21, None))),
    "Tobias": ("character", (), (("Tobias walks with a limp.", 1, None),)),
    "Wenna": ("character", (), (("Wenna is blind.", 1, None),)),
    "Salt Marsh": ("place", (), (("The Salt Marsh is flooded.", 1, None),)),
    "Brass key": ("object", (), (("The brass key opens the mill door.", 1, None),)),
    "Old Mill": ("place", (), (("The Old Mill burned down years ago.", 1, None),)),
}
# Sentences that contradict each fact, and sentences about the same entry that agree.
AGAINST = {
    "Mara is a sailor.": "Mara has never set foot on a boat.",
    "Mara is the harbour master.": "Mara has no post at the harbour at all.",
    "Tobias walks with a limp.": "Tobias sprints up the hill without the slightest limp.",
    "Wenna is blind.": "Wenna reads the letter by candlelight.",
    "The Salt Marsh is flooded.": "The Salt Marsh lies bone dry under the sun.",
    "The brass key opens the mill door.": "The brass key fits no lock in the village.",
    "The Old Mill burned down years ago.": "The Old Mill stands whole, its sails turning.",
}
AGREEING = {
    "Mara": "Mara coils a rope on the quay.",
    "Tobias": "Tobias leans on his stick by the door.",
    "Wenna": "Wenna listens to the rain with her eyes closed.",
    "Salt Marsh": "Water stands in the reeds of the Salt Marsh.",
    "Brass key": "The brass key is cold in her pocket.",
    "Old Mill": "Soot still marks the stones of the Old Mill.",
}
ENTRY_OF = {fact: name for name, (_, _, facts) in ENTRIES.items() for fact, _, _ in facts}


@dataclass(frozen=True)
class Planned:
    instruction: str
    paragraph: str
    planted: tuple[str, ...]  # facts its sentences contradict (in force or not)
    key: str = ""  # in its instruction only: how the scripted writer knows which paragraph to write


def plan_story() -> list[Planned]:
    """Paragraph by paragraph: what the instruction names and what the paragraph says."""
    names = list(ENTRIES)
    plans = []
    for number in range(1, PARAGRAPHS + 1):
        name = names[number % len(names)]
        facts = [fact for fact, start, until in ENTRIES[name][2]]
        sentences, planted = [AGREEING[name]], []
        instruction = f"{name} goes on with the day."
        if number % 3 == 0:  # a contradiction of the entry's first fact (ended for Mara after 20)
            sentences.append(AGAINST[facts[0]])
            planted.append(facts[0])
        if number % 7 == 0:  # a contradiction of an entry the instruction does not name
            other = names[(number + 2) % len(names)]
            other_fact = ENTRIES[other][2][-1][0]
            sentences.append(AGAINST[other_fact])
            planted.append(other_fact)
        if name == "Mara" and number % 2 == 0:  # named by alias in the instruction
            instruction = "The captain goes on with the day."
        plans.append(Planned(instruction, " ".join(["The morning is grey.", *sentences, "Gulls cry."]), tuple(planted)))
    return plans


def in_force(fact: str, paragraph: int) -> bool:
    for _name, (_, _, facts) in ENTRIES.items():
        for text, start, until in facts:
            if text == fact:
                return start <= paragraph and (until is None or paragraph <= until)
    return False


def responder(plans: list[Planned]):
    checker = continuity_checker([(fact, AGAINST[fact]) for fact in AGAINST])

    def respond(request: dict) -> Reply:
        role = request.get("_role")
        if role == "writer":
            text = request["messages"][-1]["content"]
            for plan in reversed(plans):  # the newest key first: "(part 12.)" before "(part 1.)"
                if plan.key in text:
                    return Reply(plan.paragraph)
        if role == "continuity":
            return Reply(json.dumps(checker(request)))
        return story_responder(request)

    return respond


async def run(db: Path) -> dict:
    plans = plan_story()
    keyed = [
        Planned(f"{plan.instruction} (part {number}.)", plan.paragraph, plan.planted, f"(part {number}.)")
        for number, plan in enumerate(plans, 1)
    ]
    store = open_store(str(db))
    try:
        with ScriptedServer(responder(keyed)) as server:
            backend = OpenAIBackend("scripted-model", base_url=server.base_url, api_key=None)
            engine = Engine(store, backend, default_embedder(), EngineConfig())
            story, _ = await engine.start_story("A harbour village.", "", title="Harbour", outline="A harbour village.")
            facts_by_text = {}
            for name, (kind, aliases, facts) in ENTRIES.items():
                entry = store.add_entry(story.id, name=name, kind=kind, aliases=aliases,
                                        facts=[FactDraft(text, start, until) for text, start, until in facts])
                facts_by_text.update({fact.text: fact.id for fact in store.entry_facts(entry.id)})
            truth, found, baseline = set(), set(), set()
            started = time.perf_counter()
            checks = 0
            for number, plan in enumerate(keyed, 1):
                completed = await engine.run_step(story.id, plan.instruction)
                checks += completed.contradictions is not None
                for fact in plan.planted:
                    if in_force(fact, number):
                        truth.add((number, facts_by_text[fact], AGAINST[fact]))
                for item in completed.contradictions or ():
                    found.add((number, item.fact_id, item.sentence))
                for name, (_, aliases, facts) in ENTRIES.items():
                    if any(find_name(word, fold(plan.paragraph)) >= 0 for word in (name, *aliases)):
                        for text, start, until in facts:
                            if in_force(text, number):
                                baseline.add((number, facts_by_text[text], AGAINST[text]))
            seconds = time.perf_counter() - started
            requests = sum(1 for r in server.requests if r["_role"] == "continuity")
    finally:
        store.close()
    return {"truth": truth, "found": found, "baseline": baseline, "checks": checks, "requests": requests, "seconds": seconds}


def scores(found: set, truth: set) -> tuple[int, int, int, float, float]:
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    return hits, len(found) - hits, len(truth) - hits, precision, recall


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(run(Path(folder) / "bench.db"))
    truth = result["truth"]
    print(f"{PARAGRAPHS} paragraphs, {len(ENTRIES)} entries; {len(truth)} planted contradictions of facts in force")
    print(f"checks: {result['checks']} paragraphs checked, {result['requests']} continuity requests, "
          f"{result['seconds']:.1f} s for the whole story")
    for label, found in (("continuity check", result["found"]), ("baseline: every named entry's facts", result["baseline"])):
        hits, false_alarms, misses, precision, recall = scores(found, truth)
        print(f"{label:38s} precision {precision:6.1%} ({hits}/{hits + false_alarms})  "
              f"recall {recall:6.1%} ({hits}/{hits + misses})  false alarms {false_alarms}, misses {misses}")
    missed = sorted(truth - result["found"])
    if missed:
        print("missed (paragraph, fact id, sentence):")
        for item in missed:
            print(f"  {item[0]:3d}  {item[1][:8]}  {item[2]}")


if __name__ == "__main__":
    main()

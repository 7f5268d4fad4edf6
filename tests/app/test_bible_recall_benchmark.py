"""benchmarks/bible_recall.py at a small size: the same story written with and without the story
bible against the scripted server; with the bible, every fact asked about reaches the writer's
prompt, and the report ends with its one-line summary."""

from __future__ import annotations

import asyncio
import re

from benchmarks.bible_recall import compare, report

PARAGRAPHS, FACTS = 12, 3


def test_with_the_bible_every_asked_fact_reaches_the_writer_prompt(tmp_path, embedder):
    result = asyncio.run(compare(PARAGRAPHS, FACTS, seed=3, folder=tmp_path))

    with_bible, without = result["with"], result["without"]
    assert [a.fact.entry for a in with_bible] == ["Brass key", "Harbour gate", "Ilse"]
    assert [a.paragraph for a in with_bible] == [a.paragraph for a in without]
    assert all(a.in_bible and a.in_prompt for a in with_bible), [(a.fact.entry, a) for a in with_bible]
    assert all(a.bible_tokens > 0 for a in with_bible)
    assert not any(a.in_bible or a.bible_tokens for a in without), "the baseline has no bible"
    for asked in (*with_bible, *without):  # a fact found by recall or the bible is in the prompt
        assert asked.in_prompt >= (asked.in_bible or asked.in_recall)

    lines = report(result, PARAGRAPHS, seed=3)
    assert re.fullmatch(r"bible_recall with=100\.0% without=\d+\.\d% n=3", lines[-1]), lines[-1]
    assert re.fullmatch(r"with bible: 3/3 \(100%\) \[bible 3, recall \d\]; without \(baseline, recall only\): "
                        r"\d/3 \(\d+%\) \[recall \d\]", lines[-3]), lines[-3]
    assert lines[-2].startswith("Story bible section at the asking steps: median ")

"""Recall episodes for training, and the benchmark's items: the split keeps the benchmark honest."""

from __future__ import annotations

import random
import re

import pytest
from tokenizers import Tokenizer

from longyarn.recurrent_core.local_lm.runtime import DEMO_MODEL_DIR
from longyarn.training.recall_episodes import (
    BENCHMARK,
    KINDS,
    TRAINING,
    Filler,
    RecallRows,
    layout,
    make_item,
    plant_facts,
)
from longyarn.training.tokenizer_training import normalise_book
from tests.local_lm.test_train_run import make_book

SEEDS = (0, 1234)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(DEMO_MODEL_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def filler(tokenizer) -> Filler:
    # Made-up books: what the split is about is names and templates, not the filler's words.
    return Filler([normalise_book(make_book(seed, paragraphs=200)) for seed in range(3)], tokenizer, min_sentences=20)


def benchmark_items(filler: Filler, seed: int) -> list:
    """The items benchmarks/recall.py asks for `seed` (its rng per length, three depths)."""
    items = []
    for length in (512, 1024):
        rng = random.Random(f"{seed}-{length}")
        items += [make_item(rng, BENCHMARK, filler, length, (0.1, 0.5, 0.9)[i % 3]) for i in range(60)]
    return items


@pytest.mark.parametrize("seed", SEEDS)
def test_no_benchmark_fact_sentence_or_question_is_in_the_training_output_for_the_same_seed(tokenizer, filler, seed):
    rows = RecallRows(tokenizer, filler, length=2048, seed=seed, end_of_text_id=0)
    training_text = "\n".join(tokenizer.decode(rows.row()[0]) for _ in range(120))
    items = benchmark_items(filler, seed)
    planted = {fact.statement for item in items for fact in item.facts}
    asked = {fact.question for item in items for fact in item.facts}
    assert len(planted) > 300 and training_text.count("Answer:") > 1000
    assert not [sentence for sentence in planted if sentence in training_text]
    assert not [question for question in asked if question in training_text]
    # And what makes that so, whatever the seed: no name and no template is on both sides.
    assert not set(TRAINING.names) & set(BENCHMARK.names)
    for kind in KINDS:
        training = {t.statement for t in TRAINING.templates[kind]} | {t.question for t in TRAINING.templates[kind]}
        benchmark = {t.statement for t in BENCHMARK.templates[kind]} | {t.question for t in BENCHMARK.templates[kind]}
        assert not training & benchmark
    training_words = set(re.findall(r"[A-Z][a-z]+", training_text))
    assert not training_words & set(BENCHMARK.names)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_plants_different_answers_and_one_planted_nowhere(kind):
    rng = random.Random(kind)
    for _ in range(50):
        _, facts, unplanted = plant_facts(rng, BENCHMARK, 3, kind)
        answers = [fact.answer for fact in facts] + [unplanted]
        assert len(set(answers)) == 4 and all(answer.startswith(" ") for answer in answers)
        assert len({fact.question for fact in facts}) == 3


def test_an_item_hides_the_asked_fact_at_its_depth_and_lays_out_each_order(filler):
    item = make_item(random.Random(2), BENCHMARK, filler, 600, depth=0.9)
    statement = item.facts[item.asked].statement
    assert item.passage.index(statement) > 0.7 * len(item.passage)
    assert layout(item.passage, item.question, "context") == f"{item.passage}\n\nQuestion: {item.question}\nAnswer:"
    jrt = layout(item.passage, item.question, "jrt")
    assert jrt.startswith(f"Question: {item.question}\n\n{item.passage}\n\n{item.passage}\n\n")
    assert jrt.endswith(f"Question: {item.question}\nAnswer:")


def test_training_rows_are_full_and_flag_only_the_answers_values(tokenizer, filler):
    rows = RecallRows(tokenizer, filler, length=1024, seed=5, end_of_text_id=0)
    ids, flags = rows.row()
    assert len(ids) == len(flags) == 1025
    flagged = tokenizer.decode([token for token, flag in zip(ids, flags) if flag])
    assert flagged.strip() and "Answer" not in flagged and "Question" not in flagged and " In the" not in flagged
    again = RecallRows(tokenizer, filler, length=1024, seed=5, end_of_text_id=0).row()
    assert again == (ids, flags), "the same seed gives the same rows"

"""`longyarn report ID`: the long-form quality report a writer reads, run as the command runs."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from longyarn.app.cli import main
from longyarn.app.report.figures import length_score, repetition_windows, repetition_trend
from longyarn.recurrent_core.replies import fallbacks as sentences
from longyarn.recurrent_core.types import NewStep

VOCABULARY = (
    "harbour lantern orchard meadow quarrel whisper thunder velvet copper marrow ribbon saddle "
    "kettle bramble cinder falcon gravel hollow ivory juniper kestrel ledger mantle nettle "
    "oyster pebble quiver raven satchel thimble umber vessel willow yarrow zephyr amber beacon "
    "candle dapple ember fennel gable heron inkwell jasper kindle lattice minnow nimbus "
    "opal parlour quartz rafter sorrel tallow urchin vellum wicker barley cobble drizzle"
).split()
VERBS = "carried found mended lost watched painted folded opened hid counted crossed called".split()
CHORUS = "and the bells of the old town rang out over the water once again"


def varied_paragraph(rng: random.Random, words: int = 170) -> str:
    """Prose-like text whose 4-grams hardly ever repeat."""
    sentences_ = []
    while sum(len(s.split()) for s in sentences_) < words:
        sentences_.append(
            f"The {rng.choice(VOCABULARY)} {rng.choice(VERBS)} a {rng.choice(VOCABULARY)} near the "
            f"{rng.choice(VOCABULARY)} {rng.choice(VOCABULARY)}."
        )
    return " ".join(sentences_)


def collapsing_paragraph(rng: random.Random, share: float) -> str:
    """A paragraph of which `share` is one refrain said over and over."""
    refrain = int(12 * share)
    return varied_paragraph(rng, int(170 * (1 - share))) + " " + " ".join([CHORUS.capitalize() + "."] * refrain)


def add_story(store, paragraphs: list[str], fallbacks: dict[int, tuple[str, ...]], **story) -> str:
    created = store.create_story(title=story.get("title", "The Bells"), premise=story.get("premise", "A town of bells."),
                                 genre="", outline=story.get("outline", "The bells ring until they do not."))
    for index, paragraph in enumerate(paragraphs):
        head = store.get_story(created.id).head_step_id
        store.commit_step(
            NewStep(story_id=created.id, parent_id=head, instruction=f"Go on ({index}).", paragraph=paragraph,
                    short_term_memory="", memory_reason="", next_instructions=("a", "b", "c"), backend="test",
                    model="test", fallbacks=fallbacks.get(index, ())),
            embedding=np.zeros(384, dtype=np.float32), embedding_model="test",
        )
    return created.id


def report(db_path, story_id, out, capsys) -> tuple[int, str, str]:
    code = main(["report", story_id, "--db", str(db_path), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_length_score_is_longwriters_against_the_requested_range():
    asked = (120, 220)
    assert length_score(170, asked) == 100 and length_score(120, asked) == 100 and length_score(220, asked) == 100
    assert length_score(440, asked) == pytest.approx(100 * (1 - 1 / 3))  # twice the top: -1/3
    assert length_score(60, asked) == pytest.approx(50)  # half the bottom: -1/2
    assert length_score(1000, asked) == 0 and length_score(0, asked) == 0


def test_a_story_that_collapses_into_repetition_with_fallbacks_is_flagged(store, db_path, tmp_path, capsys):
    rng = random.Random(3)
    # Twenty sound paragraphs, then twenty that repeat a refrain more and more.
    paragraphs = [varied_paragraph(rng) for _ in range(20)]
    paragraphs += [collapsing_paragraph(rng, 0.2 + 0.035 * i) for i in range(20)]
    guard = sentences.degenerate_paragraph_kept(
        ["copied its context (80 words in a row from the previous paragraph)", "repeated itself (45% of it came before)",
         "repeated itself (40% of it came before)"], 3)
    fallbacks = {3: (sentences.MEMORY_KEPT,), 7: (sentences.INSTRUCTIONS_DERIVED, sentences.PARAGRAPH_CUT),
                 25: (guard,), 30: (sentences.paragraph_written_again(["came back empty"]),)}
    story_id = add_story(store, paragraphs, fallbacks)
    out = tmp_path / "report.html"

    code, stdout, stderr = report(db_path, story_id, out, capsys)

    assert code == 0, stderr
    html = out.read_text(encoding="utf-8")
    assert "Rising: repeated 4-grams climb" in html and "Rising" in stdout
    assert html.count("<svg") == 3
    # Fallbacks by part, and the guard's catches by kind, as the writer reads them.
    assert re.search(r"<td>short-term memory \(memory\)</td><td>1</td>", html)
    assert re.search(r"<td>next instructions \(planner\)</td><td>1</td>", html)
    assert re.search(r"<td>paragraph cut at its length limit \(writer\)</td><td>1</td>", html)
    assert re.search(r"<td>paragraph degenerated, caught by the guard \(writer\)</td><td>2</td>", html)
    assert re.search(r"<td>copied its context</td><td>1</td>", html)
    assert re.search(r"<td>repeated itself</td><td>2</td>", html)
    assert re.search(r"<td>came back empty</td><td>1</td>", html)
    assert "Degeneration guard: caught 2 paragraph(s) (1 copied its context, 2 repeated itself, 1 came back empty)." in stdout
    assert "memory 1" in stdout and "instructions 1" in stdout and "paragraph 1" in stdout
    # One self-contained page: nothing is fetched from anywhere.
    assert not re.search(r"<script|<link|@import|(src|href)=\"(https?:)?//|url\((?!#)", html)


def test_a_sound_story_is_not_flagged_and_lengths_are_scored(store, db_path, tmp_path, capsys):
    rng = random.Random(4)
    paragraphs = [varied_paragraph(rng, 170) for _ in range(30)] + [varied_paragraph(rng, 440)]
    story_id = add_story(store, paragraphs, {}, title="A town of bells", premise="A town of bells.",
                         outline="A town of bells.")

    code, stdout, _ = report(db_path, story_id, tmp_path / "r.html", capsys)

    assert code == 0
    assert "Not rising" in stdout and "caught 0 paragraph(s)" in stdout
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "The title is the premise" in html and "The outline is the premise" in html
    # Thirty paragraphs within the range score 100; the long one (about twice the top) far less.
    scores = [float(s) for s in re.findall(r"<td>([\d.]+)</td></tr>", html.split("Chapters")[1].split("</table>")[0])]
    assert scores[:3] == [100.0, 100.0, 100.0] and scores[3] < 75


def test_repetition_windows_are_two_thousand_words_and_a_short_story_has_no_trend():
    rng = random.Random(5)
    windows = repetition_windows([varied_paragraph(rng, 200) for _ in range(50)])
    assert len(windows) == 5 and all(2000 <= w.words < 2300 for w in windows)
    assert repetition_trend(windows[:2]).rising is None


def test_an_unknown_story_or_an_empty_one_is_one_sentence_and_exit_code_2(store, db_path, tmp_path, capsys):
    code, stdout, stderr = report(db_path, "no-such-story", tmp_path / "r.html", capsys)
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1 and "no-such-story" in stderr

    empty = store.create_story(title="Empty", premise="Nothing yet.", genre="", outline="")
    code, stdout, stderr = report(db_path, empty.id, tmp_path / "r.html", capsys)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "no paragraphs yet" in stderr
    assert not (tmp_path / "r.html").exists()

"""The guard against degenerate paragraphs: a model that copies its context, loops, leaks the
prompt's markup or returns nothing is asked again with gentler sampling, as a real small model
needed. The real openai client, a scripted server, real SQLite and embeddings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from longyarn.recurrent_core.errors import ModelError
from longyarn.recurrent_core.replies.degeneration import events_in
from longyarn.recurrent_core.types import ParagraphDelta, Sampling, StepCompleted
from tests.conftest import make_engine
from tests.scripted_server import Reply, story_responder

FIRST = (
    "The keeper climbed the iron stairs at dusk, counting each step as her father had taught her, "
    "and at the top she found the great lamp cold and the logbook open at a page she had never seen. "
    "Someone had written a single line in green ink: the door in the sea opens only at the lowest tide. "
    "She read it twice, closed the book, and listened to the water working at the rocks below."
)
SOUND = (
    "By morning the tide had drawn back farther than anyone in the village could remember, and a "
    "wet path of stones ran out from the lighthouse toward a dark shape rising from the sand. "
    "Ines pulled on her boots, took the lantern and the brass key from the hook by the stove, and "
    "went down to meet it before the gulls woke."
)
LOOP = "She walked to the door and she knocked on the door and no one answered her at all. " * 4
WRITER_SAMPLING = Sampling(temperature=0.9, top_p=0.95, max_tokens=900)


def scripted_writer(server, *replies: str) -> None:
    """The writer answers with `replies` in turn (then sound paragraphs); other roles as usual."""
    queue = list(replies)

    def respond(request):
        if request["_role"] == "writer":
            return Reply(queue.pop(0) if queue else SOUND)
        return story_responder(request)

    server.responder = respond


def writer_requests(server) -> list[dict]:
    return [r for r in server.requests if r["_role"] == "writer"]


async def second_step(store, server, embedder, *replies: str, **config):
    """A story whose first paragraph is FIRST; the second is written from `replies`."""
    engine = make_engine(store, server, embedder, sampling={"writer": WRITER_SAMPLING}, **config)
    story, _ = await engine.start_story("A lighthouse keeper finds a door in the sea.", title="Tide",
                                        outline="A keeper finds a door.")
    scripted_writer(server, FIRST)
    await engine.run_step(story.id)
    server.requests.clear()
    scripted_writer(server, *replies)
    events = [event async for event in engine.step(story.id, "Ines goes down to the door at low tide.")]
    return engine, story, events


def assert_asked_again_gently(server, attempts: int) -> None:
    sent = writer_requests(server)
    assert len(sent) == attempts
    assert (sent[0]["presence_penalty"], sent[0]["frequency_penalty"]) == (0.0, 0.0)
    for retry, request in enumerate(sent[1:], 1):
        assert request["presence_penalty"] == pytest.approx(0.5 * retry)
        assert request["frequency_penalty"] == pytest.approx(0.5 * retry)
        assert request["messages"] == sent[0]["messages"], "the same prompt, gentler sampling"


async def test_a_paragraph_that_copies_the_previous_one_is_written_again_gently(store, server, embedder):
    _, _, events = await second_step(store, server, embedder, FIRST + " " + FIRST)

    completed = events[-1]
    assert isinstance(completed, StepCompleted)
    assert completed.step.paragraph == SOUND
    assert_asked_again_gently(server, 2)
    told = [f for f in completed.fallbacks if "gentler sampling" in f]
    assert told and "copied its context" in told[0] and "from the previous paragraph" in told[0]
    assert events_in(told[0]) == ["copy"]


async def test_a_paragraph_that_loops_is_written_again_gently(store, server, embedder):
    _, _, events = await second_step(store, server, embedder, LOOP)

    assert events[-1].step.paragraph == SOUND
    assert_asked_again_gently(server, 2)
    assert any("repeated itself" in f for f in events[-1].fallbacks)


@pytest.mark.parametrize("leak", [
    "<<< " + SOUND.replace("By morning", "by morning"),
    "## Previous paragraph\n" + SOUND,
    SOUND + "\nStory frame: Title: Tide",
])
async def test_a_paragraph_that_leaks_the_prompts_markup_is_written_again(store, server, embedder, leak):
    _, _, events = await second_step(store, server, embedder, leak)

    assert events[-1].step.paragraph == SOUND
    assert_asked_again_gently(server, 2)
    assert any("leaked the prompt's markup" in f for f in events[-1].fallbacks)


async def test_an_empty_paragraph_is_asked_again_and_three_empties_store_nothing(store, server, embedder):
    engine, story, events = await second_step(store, server, embedder, "")
    assert events[-1].step.paragraph == SOUND
    assert_asked_again_gently(server, 2)

    head = store.get_story(story.id).head_step_id
    server.requests.clear()
    scripted_writer(server, "", "  ", "\n")
    with pytest.raises(ModelError, match="came back empty 3 times"):
        await engine.run_step(story.id, "Ines opens the door.")
    assert_asked_again_gently(server, 3)
    assert store.get_story(story.id).head_step_id == head, "nothing was stored"


async def test_the_real_small_model_failure_keeps_the_best_attempt_flagged(store, server, embedder):
    # What a 0.5B model served by llama.cpp did: the quote marks, then paragraph 1 three times.
    degenerate = "<<< " + " ".join([FIRST] * 3)
    _, story, events = await second_step(store, server, embedder, degenerate, degenerate, LOOP + SOUND)

    assert_asked_again_gently(server, 3)
    completed = events[-1]
    # The least degenerate attempt is kept (the loop covers less of it than the copies do),
    # and it is shown again since the last one streamed was another.
    assert completed.step.paragraph.endswith(SOUND)
    assert isinstance(events[-4], ParagraphDelta) and events[-4].snapshot == completed.step.paragraph
    flag = [f for f in completed.fallbacks if "best of the 3 attempts, the third, was kept" in f]
    assert flag, completed.fallbacks
    assert events_in(flag[0]) == ["copy", "copy", "repetition"]
    stored = store.branch(story.id)[-1]
    assert stored.fallbacks == completed.fallbacks, "batch and the report read them from storage"


async def test_with_degeneration_stop_the_step_stops_with_a_clear_sentence(store, server, embedder):
    with pytest.raises(ModelError) as raised:
        await second_step(store, server, embedder, LOOP, LOOP, LOOP, degeneration="stop")
    message = str(raised.value)
    assert "repeated itself" in message and "nothing was stored" in message and 'degeneration = "keep"' in message
    assert_asked_again_gently(server, 3)


async def test_sound_paragraphs_are_not_asked_for_twice(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A lighthouse keeper finds a door in the sea.", title="Tide", outline="A door.")
    for _ in range(6):
        completed = await engine.run_step(story.id)
        assert not any("gentler sampling" in f for f in completed.fallbacks)
    assert len(writer_requests(server)) == 6


CORPUS = Path(os.environ.get("LONGYARN_CORPUS_DIR", "/work/shared/corpus/gutenberg"))


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the public-domain books are not here")
def test_real_novels_are_never_taken_for_degenerate_paragraphs():
    # Every paragraph of two held-out books, judged against the four before it: no false alarm.
    from longyarn.recurrent_core.replies.degeneration import find_degeneration
    from longyarn.training.tokenizer_training import normalise_book

    judged = 0
    for name in ("1661-adventures-of-sherlock-holmes.txt", "55-wonderful-wizard-of-oz.txt"):
        paragraphs = normalise_book((CORPUS / name).read_text(encoding="utf-8")).split("\n\n")
        for index, paragraph in enumerate(paragraphs):
            if len(paragraph.split()) < 40:
                continue
            context = [("Previous paragraph", paragraphs[index - 1] if index else ""),
                       ("Recalled passages", "\n\n".join(paragraphs[max(0, index - 5) : max(0, index - 1)]))]
            assert find_degeneration(paragraph, prompt_texts=context, quote_marks=("<<<", ">>>"),
                                     section_names=("Story frame", "Previous paragraph")) is None, paragraph
            judged += 1
    assert judged > 1000

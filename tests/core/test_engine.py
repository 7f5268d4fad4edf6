"""The engine step end to end: the real openai client, a scripted server, real SQLite and embeddings."""

from __future__ import annotations

import asyncio
import json

import pytest

from longyarn.recurrent_core.errors import InvalidInput, ModelError
from longyarn.recurrent_core.types import ParagraphDelta, PhaseChanged, StepCompleted, StepStarted
from tests.conftest import make_engine
from tests.scripted_server import Reply, ScriptedServer, story_responder


async def collect(engine, story_id, instruction=None, **kwargs):
    events = []
    async for event in engine.step(story_id, instruction, **kwargs):
        events.append(event)
    return events


def planted_responder(paragraphs_by_keyword: dict[str, str]):
    """Writer replies chosen by a keyword of the instruction; other roles answer as usual."""

    def respond(request):
        if request["_role"] == "writer":
            text = json.dumps(request["messages"])
            for keyword, paragraph in paragraphs_by_keyword.items():
                if f"[{keyword}]" in text:
                    return Reply(paragraph)
        return story_responder(request)

    return respond


async def test_a_step_streams_the_paragraph_and_commits_memory_and_three_instructions(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, fallbacks = await engine.start_story("A lighthouse keeper finds a door in the sea.", "fable")
    assert story.title and story.outline and not fallbacks

    events = await collect(engine, story.id)
    assert isinstance(events[0], StepStarted)
    deltas = [e for e in events if isinstance(e, ParagraphDelta)]
    assert len(deltas) > 3, "the paragraph should arrive in pieces"
    completed = events[-1]
    assert isinstance(completed, StepCompleted)
    step = completed.step
    assert deltas[-1].snapshot.strip() == step.paragraph
    assert step.short_term_memory and step.memory_reason
    assert len(set(step.next_instructions)) == 3
    assert completed.fallbacks == ()
    # Stored, and the head moved.
    assert [s.id for s in store.branch(story.id)] == [step.id]
    assert store.get_story(story.id).head_step_id == step.id

    # The next step follows the chosen instruction and sees the short-term memory.
    chosen = step.next_instructions[1]
    completed2 = (await collect(engine, story.id, chosen))[-1]
    writer_request = [r for r in server.requests if r["_role"] == "writer"][-1]
    sent = json.dumps(writer_request["messages"])
    assert chosen.rstrip(".") in sent
    assert step.short_term_memory[:40] in sent
    assert completed2.step.parent_id == step.id
    assert completed2.step.instruction == chosen


async def test_recall_brings_back_an_old_paragraph_by_meaning_with_its_score(store, server, embedder):
    planted = {
        "dragon": "Far below the castle, the old dragon Ysolde guarded a hoard of silver bells "
        "and slept on a bed of cold ash.",
        "bakery": "In the village bakery, Tomas kneaded rye dough before dawn and sang to the ovens.",
        "storm": "The storm tore the sails from the fishing boats and the harbour flooded.",
        "market": "At the market, merchants argued over the price of saffron and wool.",
        "road": "The road north climbed through pine forest toward the pass.",
    }
    server.responder = planted_responder(planted)
    engine = make_engine(store, server, embedder, recall_k=2)
    story, _ = await engine.start_story("A kingdom of bells.", "fantasy", title="Bells", outline="Bells ring.")
    for keyword in planted:
        await collect(engine, story.id, f"Write about the [{keyword}].")

    events = await collect(engine, story.id, "The hero goes down to face the sleeping dragon and its hoard.")
    started = events[0]
    recalled_texts = [m.text for m in started.recalled]
    assert planted["dragon"] in recalled_texts
    assert planted["road"] not in recalled_texts, "the previous paragraph is in the prompt already"
    assert len(started.recalled) == 2
    assert started.recalled[0].score >= started.recalled[1].score > 0
    recalled_section = next(s for s in started.context if s.name == "Recalled passages")
    assert planted["dragon"] in recalled_section.text


async def test_sibling_branch_paragraphs_are_never_recalled(store, server, embedder):
    planted = {
        "comet": "A green comet split the night sky above the observatory.",
        "opening": "The orphan Lio arrived at the city gates with nothing but a drum.",
    }
    server.responder = planted_responder(planted)
    engine = make_engine(store, server, embedder, recall_k=3)
    story, _ = await engine.start_story("An orphan drummer.", "", title="Drum", outline="A drum.")
    opening = (await collect(engine, story.id, "Begin with the [opening]."))[-1].step
    comet = (await collect(engine, story.id, "Describe the [comet]."))[-1].step
    # Undo the comet and write a different second paragraph: a new branch.
    store.set_head(story.id, opening.id)
    await collect(engine, story.id, "Lio plays the drum in the square.")
    started = (await collect(engine, story.id, "A green comet appears in the sky."))[0]
    assert comet.paragraph not in [m.text for m in started.recalled]
    assert opening.paragraph in [m.text for m in started.recalled]


async def test_a_cut_stream_is_written_again_and_never_stored_half_written(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A clockmaker's last clock.", "", title="Clock", outline="A clock.")
    full = "The clockmaker wound the last clock and listened to it breathe in the dark shop."
    server.enqueue(Reply(full, stream_cut_after=2, chunk_chars=8))
    events = await collect(engine, story.id, "Begin.")
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases.count("writing") == 2, "the paragraph is started over after the cut"
    step = events[-1].step
    assert step.paragraph != full[:16]
    assert len(step.paragraph.split()) > 20
    assert store.count_steps(story.id) == 1


async def test_a_model_that_keeps_failing_leaves_storage_as_it_was(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A clockmaker's last clock.", "", title="Clock", outline="A clock.")
    first = (await collect(engine, story.id))[-1].step
    version = store.memory_version(story.id)
    server.responder = lambda request: Reply(status=500)
    with pytest.raises(ModelError) as failure:
        await collect(engine, story.id, "Continue.")
    assert "\n" not in str(failure.value)
    assert store.get_story(story.id).head_step_id == first.id
    assert store.count_steps(story.id) == 1
    assert store.memory_version(story.id) == version


async def test_cancelling_a_step_mid_paragraph_stores_nothing(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    server.enqueue(Reply("word " * 200, chunk_chars=5, chunk_delay_s=0.02))
    seen = asyncio.Event()

    async def consume():
        async for event in engine.step(story.id, "Begin."):
            if isinstance(event, ParagraphDelta):
                seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(seen.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.count_steps(story.id) == 0
    assert store.get_story(story.id).head_step_id is None


async def test_unreadable_memory_is_repaired_then_falls_back_to_the_old_memory(store, server, embedder):
    engine = make_engine(store, server, embedder, parse_retries=2)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    first = (await collect(engine, story.id))[-1].step

    def garbled_memory(request):
        if request["_role"] == "memory":
            return Reply("I'd rather talk about the weather.")
        return story_responder(request)

    server.responder = garbled_memory
    completed = (await collect(engine, story.id, "The ferryman meets a ghost."))[-1]
    memory_requests = [r for r in server.requests if r["_role"] == "memory"]
    assert len(memory_requests) == 1 + 1 + 2, "one for the first step, then the try and two repairs"
    assert completed.step.short_term_memory == first.short_term_memory
    assert any("memory" in sentence.lower() for sentence in completed.fallbacks)
    assert store.get_step(completed.step.id).fallbacks == completed.fallbacks


async def test_a_setting_the_server_refuses_is_named_once_in_the_step_that_met_it(store, embedder):
    from longyarn.recurrent_core.types import Sampling

    sampling = {role: Sampling(seed=7) for role in ("opening", "writer", "memory", "planner")}
    with ScriptedServer(rejected_parameters=("seed",)) as strict_server:
        engine = make_engine(store, strict_server, embedder, sampling=sampling)
        story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
        first = (await collect(engine, story.id))[-1]
        second = (await collect(engine, story.id))[-1]

    refused = [sentence for sentence in first.fallbacks if "does not accept the seed setting" in sentence]
    assert len(refused) == 1, first.fallbacks
    assert store.get_step(first.step.id).fallbacks == first.fallbacks
    assert not any("seed" in sentence for sentence in second.fallbacks), "said once, not every step"
    assert second.step.paragraph, "the steps are written without the setting"


@pytest.mark.parametrize(
    ("premise", "title"),
    [
        ("A fox learns to read and then opens a library.", "A fox learns to read and then opens"),
        ("In a city where it never stops raining, a detective hunts a ghost.", "In a city where it never stops raining"),
        ("Mara, a ferrywoman, hides a key.", "Mara, a ferrywoman, hides a key"),
        ('"Nobody leaves," the keeper says.', "Nobody leaves, the keeper says"),
    ],
)
async def test_a_title_taken_from_the_premise_reads_as_a_title(store, server, embedder, premise, title):
    server.responder = lambda request: Reply("I would rather not.")  # no title to read
    engine = make_engine(store, server, embedder, parse_retries=0)
    story, fallbacks = await engine.start_story(premise, "")
    assert story.title == title
    assert any("title was taken from the premise" in sentence for sentence in fallbacks)


async def test_servers_without_structured_output_get_labelled_text(store, embedder):
    with ScriptedServer(refused_response_formats=("json_schema", "json_object")) as plain_server:
        engine = make_engine(store, plain_server, embedder)
        story, fallbacks = await engine.start_story("A ferryman.", "drama")
        completed = (await collect(engine, story.id))[-1]
    # The two refusals are said once, where they were met; nothing else fell back.
    assert len(fallbacks) == 2 and all("does not accept json_" in sentence for sentence in fallbacks)
    assert not completed.fallbacks
    assert len(set(completed.step.next_instructions)) == 3
    later = [r for r in plain_server.requests[3:] if r["_role"] in ("memory", "planner")]
    assert later and all("response_format" not in r for r in later), "the backend remembers"


async def test_a_step_on_a_one_slot_server_keeps_its_memory_and_plans(store, embedder):
    # The memory and plan requests go out together; a server that cuts overlapping requests
    # gets them again one at a time, and the step keeps the model's memory, not a fallback.
    with ScriptedServer(one_slot=True, latency_s=0.2) as one_slot_server:
        engine = make_engine(store, one_slot_server, embedder)
        story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
        first = (await collect(engine, story.id))[-1]
        second = (await collect(engine, story.id))[-1]

    assert one_slot_server.overlap_drops == 1
    [notice] = first.fallbacks
    assert "one request at a time" in notice
    assert not second.fallbacks, "said once"
    for completed in (first, second):
        assert completed.step.memory_reason and len(set(completed.step.next_instructions)) == 3


async def test_a_persons_edit_of_the_short_term_memory_reaches_the_next_step(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    first = (await collect(engine, story.id))[-1].step
    store.update_short_term_memory(first.id, "Remember: the ferryman is secretly the river god.")
    await collect(engine, story.id, "Continue.")
    last_writer = [r for r in server.requests if r["_role"] == "writer"][-1]
    assert "secretly the river god" in json.dumps(last_writer["messages"])


async def test_bad_instructions_are_refused_without_touching_the_story(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    with pytest.raises(InvalidInput, match="empty"):
        await collect(engine, story.id, "   ")
    with pytest.raises(InvalidInput, match="characters long"):
        await collect(engine, story.id, "x" * 5000)
    assert store.count_steps(story.id) == 0
    assert not [r for r in server.requests if r["_role"] == "writer"]


async def test_the_context_is_trimmed_to_the_budget_and_says_what_was_cut(store, server, embedder):
    from tests.scripted_server import prompt_tokens

    engine = make_engine(store, server, embedder, context_budget_tokens=900)
    long_outline = "The outline goes on. " * 400
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline=long_outline)
    started = (await collect(engine, story.id))[0]
    outline = next(s for s in started.context if s.name == "Outline")
    assert outline.trimmed_chars > 0
    assert started.prompt_tokens <= 900 and started.budget_tokens == 900
    assert all(prompt_tokens(request) <= 900 for request in server.requests)


async def test_batch_choices_by_the_model_pick_the_instruction_it_names(store, server, embedder):
    import random

    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    step = (await collect(engine, story.id))[-1].step
    server.enqueue(Reply("Choice: 3"))
    instruction, fallback = await engine.choose_instruction(step, "model", random.Random(0))
    assert instruction == step.next_instructions[2] and fallback is None
    server.enqueue(*[Reply("I like them all.")] * 3)
    instruction, fallback = await engine.choose_instruction(step, "model", random.Random(0))
    assert instruction == step.next_instructions[0] and "first" in fallback


async def test_a_finished_paragraph_is_kept_when_memory_and_planner_calls_fail(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    first = (await collect(engine, story.id))[-1].step

    def only_the_writer_works(request):
        if request["_role"] in ("memory", "planner"):
            return Reply(status=503)
        return story_responder(request)

    server.responder = only_the_writer_works
    completed = (await collect(engine, story.id, "The ferryman meets a ghost."))[-1]
    assert "ghost" in completed.step.paragraph
    assert completed.step.short_term_memory == first.short_term_memory
    assert len(set(completed.step.next_instructions)) == 3
    assert len(completed.fallbacks) >= 2, "both stand-ins are stated"
    assert store.count_steps(story.id) == 2


# ---- what instruction-tuned servers really send -----------------------------------------

REASONING = "Okay, the user wants the ferryman to meet a ghost. I should keep it eerie."
GHOST_PROSE = (
    "The lantern guttered as the ferry touched the landing. A figure waited there in a coat "
    "too thin for the cold, and when the ferryman raised the light, it cast no shadow at all."
)


def role_replies(role: str, *replies: Reply):
    """`role` gets these replies in turn; other roles (and it, after them) answer as usual."""
    queue = list(replies)

    def respond(request):
        if request["_role"] == role and queue:
            return queue.pop(0)
        return story_responder(request)

    return respond


def writer_replies(*replies: Reply):
    return role_replies("writer", *replies)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(f"{REASONING}\n</think>\n\n{GHOST_PROSE}", id="lone </think> (R1 distill, QwQ)"),
        pytest.param(f"<think>{REASONING}</think>\n\n{GHOST_PROSE}", id="<think> block (Qwen3)"),
    ],
)
async def test_reasoning_never_reaches_the_story_or_the_screen(store, server, embedder, raw):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    server.responder = writer_replies(Reply(raw, chunk_chars=9))
    events = await collect(engine, story.id, "The ferryman meets a ghost.")
    assert events[-1].step.paragraph == GHOST_PROSE
    # What the screen shows since the last (re)start of the paragraph is the prose alone.
    last_start = max(i for i, e in enumerate(events) if isinstance(e, PhaseChanged) and e.phase == "writing")
    shown = "".join(e.delta for e in events[last_start:] if isinstance(e, ParagraphDelta))
    assert shown == GHOST_PROSE
    if raw.startswith("<think>"):
        assert not any("user wants" in e.snapshot for e in events if isinstance(e, ParagraphDelta))


async def test_a_paragraph_cut_off_by_max_tokens_ends_at_its_last_full_sentence(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    server.responder = writer_replies(Reply(GHOST_PROSE + " The ferryman opened his mouth to", finish_reason="length"))
    completed = (await collect(engine, story.id, "The ferryman meets a ghost."))[-1]
    assert completed.step.paragraph == GHOST_PROSE
    assert completed.fallbacks[0] == (
        "The model reached its length limit mid-sentence, so the paragraph was cut back to its "
        "last full sentence."
    )
    assert store.get_step(completed.step.id).fallbacks == completed.fallbacks


async def test_a_reasoning_model_that_only_reasons_gets_a_clear_error_and_nothing_is_stored(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    server.responder = writer_replies(Reply(f"<think>{REASONING} " * 20, finish_reason="length"))
    with pytest.raises(ModelError) as failure:
        await collect(engine, story.id, "The ferryman meets a ghost.")
    message = str(failure.value)
    assert "reasoning" in message and "max_tokens" in message and "\n" not in message
    assert store.count_steps(story.id) == 0
    assert len([r for r in server.requests if r["_role"] == "writer"]) == 1, "asking again would reason again"


async def test_instructions_cut_off_by_max_tokens_are_asked_again_with_room_to_finish(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    cut = Reply(
        "Instruction 1: Have the ferryman refuse the fare.\nInstruction 2: Show the ghost's face.\n"
        "Instruction 3: Let the river",
        finish_reason="length",
    )
    whole = Reply(
        "Instruction 1: Have the ferryman refuse the fare.\nInstruction 2: Show the ghost's face.\n"
        "Instruction 3: Let the river rise over the landing."
    )
    planner_replies = [cut, whole]

    server.responder = role_replies("planner", *planner_replies)
    completed = (await collect(engine, story.id, "The ferryman meets a ghost."))[-1]
    assert completed.step.next_instructions == (
        "Have the ferryman refuse the fare.",
        "Show the ghost's face.",
        "Let the river rise over the landing.",
    )
    assert completed.fallbacks == ()
    planner_requests = [r for r in server.requests if r["_role"] == "planner"]
    assert planner_requests[1]["max_tokens"] == 2 * planner_requests[0]["max_tokens"]


async def test_a_cut_memory_update_is_used_when_asking_again_brings_nothing_readable(store, server, embedder):
    engine = make_engine(store, server, embedder)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    cut = Reply(
        "Reason: The ghost matters now.\nShort-term memory: The ferryman keeps the crossing. A ghost "
        "has asked to be taken over. The river is",
        finish_reason="length",
    )
    memory_replies = [cut] + [Reply("I'm sorry, I can't help with that.")] * 5

    server.responder = role_replies("memory", *memory_replies)
    completed = (await collect(engine, story.id, "The ferryman meets a ghost."))[-1]
    # The complete sentences of the cut update, not the memory from before the paragraph.
    assert completed.step.short_term_memory == (
        "The ferryman keeps the crossing. A ghost has asked to be taken over."
    )
    assert any("cut" in fallback for fallback in completed.fallbacks)


async def test_a_cut_outline_is_kept_when_asking_again_overruns_the_context(store, server, embedder):
    engine = make_engine(store, server, embedder)
    opening_replies = [
        Reply(
            "Title: The Last Crossing\nOutline: 1. A ferryman takes a ghost across. 2. The ghost "
            "names the ferryman's debt. 3. The",
            finish_reason="length",
        ),
        Reply(status=400, error_message="This model's maximum context length is 4096 tokens."),
    ]

    server.responder = role_replies("opening", *opening_replies)
    story, fallbacks = await engine.start_story("A ferryman who carries ghosts.", "ghost story")
    assert story.title == "The Last Crossing"
    assert story.outline.startswith("1. A ferryman takes a ghost across. 2. The ghost names the ferryman's debt.")
    assert any("cut off" in fallback for fallback in fallbacks)

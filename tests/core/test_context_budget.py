"""Every request the engine makes fits the context budget, in the stated order (issue 13, defect 2).

The scripted server has a small context here, as an 8k server does: a request over it gets
the 400 a real server sends. The tests read what the server received.
"""

from __future__ import annotations

import random

import pytest

from tests.conftest import make_engine
from tests.scripted_server import ScriptedServer, prompt_tokens

BUDGET = 3000
LONGEST_REPLY = 1200  # the opening's max_tokens, the largest of the roles'
PREMISE = ("A lighthouse keeper finds a door in the sea, and behind it a city that remembers "
           "every ship it ever drowned. ") * 930  # about 100 KB
OUTLINE = "Setting: the Farrow light. Main characters: Ilse, the keeper. Arc: the door opens at low tide."


@pytest.fixture
def small_server():
    with ScriptedServer(context_tokens=BUDGET + LONGEST_REPLY) as running:
        yield running


def user_text(request: dict) -> str:
    return request["messages"][-1]["content"]


async def test_a_long_premise_never_crowds_the_outline_out_and_every_request_fits(store, small_server, embedder):
    engine = make_engine(store, small_server, embedder, context_budget_tokens=BUDGET)
    assert len(PREMISE) > 100_000
    story, fallbacks = await engine.start_story(PREMISE, "fable")
    assert any("premise is longer than the context budget" in f for f in fallbacks)
    story = store.update_story(story.id, outline=OUTLINE)

    for instruction in (None, "Ilse rows out to the door at low tide."):
        await engine.run_step(story.id, instruction)
    step = store.branch(story.id)[-1]
    await engine.choose_instruction(step, "model", random.Random(0))

    roles = {request["_role"] for request in small_server.requests}
    assert roles == {"opening", "writer", "memory", "planner", "chooser"}
    assert small_server.over_context == 0
    for request in small_server.requests:
        assert prompt_tokens(request) <= BUDGET, request["_role"]
    writer = [user_text(r) for r in small_server.requests if r["_role"] == "writer"]
    planner = [user_text(r) for r in small_server.requests if r["_role"] == "planner"]
    for prompt in writer + planner:
        assert "## Outline\n" + OUTLINE in prompt, "the outline outranks the premise"
        assert "Premise: A lighthouse keeper" in prompt, "the premise's start is kept"


async def test_the_writer_keeps_memory_and_the_previous_paragraphs_end_before_recalled_passages(store, embedder):
    async with ScriptedServer(context_tokens=1000 + 900) as server:
        engine = make_engine(store, server, embedder, context_budget_tokens=1000, recall_k=3)
        story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline=OUTLINE)
        for number in range(4):
            await engine.run_step(story.id, f"The ferry crosses for the {number + 1}th time.")
        started = (await engine.run_step(story.id, "The ghost speaks.")).step
        sent = {s.name: s for s in (await _sent(store, started.id)).sections}
        last = [r for r in server.requests if r["_role"] == "writer"][-1]
        assert prompt_tokens(last) <= 1000 and server.over_context == 0
        assert sent["Short-term memory"].trimmed_chars == 0
        assert sent["Previous paragraph"].trimmed_chars == 0
        assert sent["Recalled passages"].trimmed_chars > 0, "the weakest recollections go first"


async def test_a_budget_too_small_for_the_rules_themselves_says_so_and_sends_nothing(store, server, embedder):
    from longyarn.recurrent_core.role_prompts import ContextBudgetTooSmall

    engine = make_engine(store, server, embedder, context_budget_tokens=300)
    story, _ = await engine.start_story("A ferryman.", "", title="Ferry", outline="A ferry.")
    with pytest.raises(ContextBudgetTooSmall) as refused:
        await engine.run_step(story.id)
    assert "context budget of 300" in str(refused.value) and "context_budget_tokens" in str(refused.value)
    assert not [r for r in server.requests if r["_role"] == "writer"]
    assert store.count_steps(story.id) == 0


async def _sent(store, step_id):
    from longyarn.recurrent_core.context import load_sent_context

    return load_sent_context(store, step_id)

"""Whatever a model replies, reading it never fails and a step always ends complete."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from longyarn.recurrent_core.replies.opening import parse_opening
from longyarn.recurrent_core.replies.chooser import parse_choice
from longyarn.recurrent_core.replies.labels import (
    INSTRUCTION_ITEM_NAMES,
    INSTRUCTION_LIST_NAMES,
    MEMORY_NAMES,
    REASON_NAMES,
    OUTLINE_NAMES,
    TITLE_NAMES,
)
from longyarn.recurrent_core.replies.memory import parse_memory_update
from longyarn.recurrent_core.replies.planner import parse_instructions
from longyarn.recurrent_core.replies.roles import describe_problem
from longyarn.recurrent_core.replies.writer import clean_paragraph
from longyarn.recurrent_core.step_outputs import instructions_from_paragraph, resolve_step_outputs

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

LABELS = (
    MEMORY_NAMES + REASON_NAMES + TITLE_NAMES + OUTLINE_NAMES + INSTRUCTION_ITEM_NAMES
    + INSTRUCTION_LIST_NAMES
)
JSON_KEYS = ("short_term_memory", "reason", "instructions", "title", "outline", "options", "Summary", "x")

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzAEMT", min_size=1, max_size=8)
sentences = st.lists(words, min_size=1, max_size=12).map(lambda ws: " ".join(ws) + ".")


@st.composite
def label_lines(draw):
    """A label as models decorate it, maybe numbered, maybe followed by text."""
    label = draw(st.sampled_from(LABELS))
    label = draw(st.sampled_from([label, label.title(), label.upper(), label.replace(" ", "-")]))
    number = draw(st.sampled_from(["", " 1", " 2", " 3", " A", " B"]))
    prefix = draw(st.sampled_from(["", "**", "## ", "- ", "1. ", "### ", "*"]))
    suffix = draw(st.sampled_from([":", ":**", "**:", "", " -", ")"]))
    rest = draw(st.one_of(st.just(""), sentences, st.text(max_size=30)))
    return f"{prefix}{label}{number}{suffix} {rest}"


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30), sentences),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(JSON_KEYS), children, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def json_fragments(draw):
    """JSON as models send it: whole, cut off anywhere, fenced or not."""
    value = draw(st.dictionaries(st.sampled_from(JSON_KEYS), json_values, max_size=4))
    text = json.dumps(value)
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    if draw(st.booleans()):
        text = f"```json\n{text}\n```"
    return text


replies = st.one_of(
    st.none(),
    st.text(),
    st.lists(
        st.one_of(label_lines(), json_fragments(), sentences, st.text(max_size=20), st.just("```")),
        max_size=8,
    ).flatmap(lambda parts: st.sampled_from(["\n", " ", "\n\n", ""]).map(lambda sep: sep.join(parts))),
)


@PROPERTY_SETTINGS
@given(reply=replies)
def test_reading_any_reply_never_fails(reply):
    opening = parse_opening(reply)
    memory = parse_memory_update(reply)
    instructions = parse_instructions(reply)
    paragraph = clean_paragraph(reply)
    parse_choice(reply)
    for role in ("opening", "memory", "planner", "chooser", "writer"):
        problem = describe_problem(role, reply)
        assert problem is None or problem.endswith(".")
    for value in (opening.title, opening.outline, memory.short_term_memory, memory.reason):
        assert value is None or value.strip()
    assert all(item and item == item.strip() for item in instructions)
    assert len({item.casefold() for item in instructions}) == len(instructions)
    assert paragraph == paragraph.strip()


@PROPERTY_SETTINGS
@given(
    memory_reply=replies,
    planner_reply=replies,
    old_memory=st.one_of(st.just(""), sentences),
    paragraph=st.one_of(st.text(), st.lists(sentences, max_size=5).map(" ".join)),
    outline=st.one_of(st.just(""), sentences),
)
def test_a_step_always_ends_complete(memory_reply, planner_reply, old_memory, paragraph, outline):
    outputs = resolve_step_outputs(
        memory_reply=memory_reply,
        planner_reply=planner_reply,
        old_memory=old_memory,
        paragraph=paragraph,
        outline=outline,
    )
    if old_memory:
        assert outputs.short_term_memory.strip()
    assert outputs.memory_reason.strip()
    assert len(outputs.instructions) == 3
    assert all(item.strip() for item in outputs.instructions)
    assert len({" ".join(item.casefold().split()) for item in outputs.instructions}) == 3
    something_missing = (
        describe_problem("memory", memory_reply) is not None
        or describe_problem("planner", planner_reply) is not None
    )
    assert bool(outputs.fallbacks) == something_missing
    assert all(sentence.endswith(".") for sentence in outputs.fallbacks)


@PROPERTY_SETTINGS
@given(memory=st.lists(sentences, min_size=1, max_size=4).map(" ".join), reason=sentences, data=st.data())
def test_a_cut_off_json_memory_is_never_more_than_what_arrived(memory, reason, data):
    reply = json.dumps({"reason": reason, "short_term_memory": memory})
    cut = reply[: data.draw(st.integers(0, len(reply)))]
    parsed = parse_memory_update(cut)
    if parsed.short_term_memory is not None:
        assert memory.startswith(parsed.short_term_memory)
    if cut == reply:
        assert (parsed.short_term_memory, parsed.reason) == (memory, reason)


@PROPERTY_SETTINGS
@given(items=st.lists(sentences, min_size=1, max_size=5, unique_by=str.casefold), style=st.integers(0, 3))
def test_distinct_instructions_in_any_list_style_come_back_in_order(items, style):
    formats = [
        lambda i, t: f"{i}. {t}",
        lambda i, t: f"Instruction {i}: {t}",
        lambda i, t: f"**Option {i}:** {t}",
        lambda i, t: f"- {t}",
    ]
    reply = "\n".join(formats[style](i, t) for i, t in enumerate(items, 1))
    assert parse_instructions(reply) == items


@PROPERTY_SETTINGS
@given(paragraph=st.text(), outline=st.text(max_size=40))
def test_derived_instructions_are_always_three_distinct(paragraph, outline):
    instructions = instructions_from_paragraph(paragraph, outline)
    assert len(set(instructions)) == 3 and all(item.strip() for item in instructions)

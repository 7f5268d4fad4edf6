"""Model replies as real models write them, and what a user gets from each."""

import json

import pytest

from longyarn.recurrent_core.replies.opening import parse_opening
from longyarn.recurrent_core.replies.chooser import parse_choice
from longyarn.recurrent_core.replies.fallbacks import PROSE_ONLY_OUTPUTS
from longyarn.recurrent_core.replies.memory import parse_memory_update
from longyarn.recurrent_core.replies.planner import parse_instructions
from longyarn.recurrent_core.replies.roles import describe_problem
from longyarn.recurrent_core.replies.sentences import ends_mid_sentence, trim_to_last_sentence
from longyarn.recurrent_core.replies.writer import clean_paragraph
from longyarn.recurrent_core.step_outputs import (
    MEMORY_WORD_LIMIT,
    instructions_from_paragraph,
    outputs_from_paragraph,
    resolve_step_outputs,
)
from longyarn.recurrent_core.prompts import completion_cue

MEMORY = "Mara holds the brass key. Tomas follows her to the lighthouse."
REASON = "Dropped the storm, which has passed; added the key."
THREE = ["Have Mara unlock the lighthouse door.", "Show Tomas lying about the map.", "Let the fog roll in."]
PARAGRAPH = (
    "The fog came in over the harbour before noon. Mara pressed the brass key into her palm "
    "and watched Tomas at the end of the pier. \"You said the lamp was dead,\" she called. "
    "Tomas did not turn around."
)


# ---- the memory update -----------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(f"Short-term memory: {MEMORY}\nReason: {REASON}", id="plain labels"),
        pytest.param(f"**Short-term memory:** {MEMORY}\n\n**Reason:** {REASON}", id="bold labels"),
        pytest.param(f"**Short-term memory**: {MEMORY}\n**Reason**: {REASON}", id="bold, colon outside"),
        pytest.param(f"## Short-term memory\n{MEMORY}\n\n## Reason\n{REASON}", id="markdown headings"),
        pytest.param(f"1. **Updated memory**: {MEMORY}\n2. **Reason**: {REASON}", id="numbered list of labels"),
        pytest.param(f"Reason: {REASON}\nShort-term memory: {MEMORY}", id="reordered"),
        pytest.param(f"Summary: {MEMORY}\nRationale: {REASON}", id="synonyms summary/rationale"),
        pytest.param(f"Updated memory: {MEMORY}\nExplanation: {REASON}", id="synonyms updated/explanation"),
        pytest.param(
            f"Output Memory:\nRational: {REASON}\nUpdated Memory: {MEMORY}", id="RecurrentGPT's own format"
        ),
        pytest.param(f"Short-term memory: {MEMORY} Reason: {REASON}", id="labels run together on one line"),
        pytest.param(
            f'Here is the update:\n```json\n{{"short_term_memory": "{MEMORY}", "reason": "{REASON}"}}\n```\nLet me know!',
            id="fenced JSON with prose around",
        ),
        pytest.param(
            f'Sure. {{"reason": "{REASON}", "short_term_memory": "{MEMORY}"}} Hope this helps.',
            id="bare JSON inside prose, reordered",
        ),
        pytest.param(
            f'{{"memory_update": {{"Updated memory": "{MEMORY}", "Rationale": "{REASON}", "mood": "tense"}}}}',
            id="nested JSON with synonyms and an extra field",
        ),
        pytest.param(f'{{"short_term_memory": "{MEMORY}", "reason": "{REASON}",}}', id="JSON with trailing comma"),
        pytest.param(f"<think>Let me see what changed.</think>\nShort-term memory: {MEMORY}\nReason: {REASON}", id="think block"),
    ],
)
def test_memory_update_is_read_from_messy_formats(reply):
    parsed = parse_memory_update(reply)
    assert parsed.short_term_memory == MEMORY
    assert parsed.reason == REASON
    assert describe_problem("memory", reply) is None


def test_memory_as_a_json_list_becomes_lines():
    parsed = parse_memory_update('{"short_term_memory": ["Mara has the key.", "Tomas lies."], "reason": "x"}')
    assert parsed.short_term_memory == "Mara has the key.\nTomas lies."


def test_multiline_memory_under_a_heading_keeps_its_lines():
    parsed = parse_memory_update("### Updated memory\n- Mara has the key.\n- Tomas lies.\n### Reason\nAdded both.")
    assert parsed.short_term_memory == "- Mara has the key.\n- Tomas lies."
    assert parsed.reason == "Added both."


def test_memory_without_reason_is_read_and_the_gap_described():
    reply = f"Short-term memory: {MEMORY}"
    parsed = parse_memory_update(reply)
    assert parsed.short_term_memory == MEMORY
    assert parsed.reason is None
    assert "reason" in describe_problem("memory", reply)


def test_truncated_json_memory_keeps_the_part_that_arrived():
    reply = '{"reason": "Added the key.", "short_term_memory": "Mara holds the brass key and runs to'
    parsed = parse_memory_update(reply)
    assert parsed.short_term_memory == "Mara holds the brass key and runs to"
    assert parsed.reason == "Added the key."
    assert parsed.truncated
    assert "cut off" in describe_problem("memory", reply)


def test_truncated_json_inside_a_key_drops_only_the_broken_key():
    parsed = parse_memory_update('```json\n{"short_term_memory": "Mara has the key.", "rea')
    assert parsed.short_term_memory == "Mara has the key."
    assert parsed.reason is None


def test_truncated_labelled_memory_drops_the_half_written_label():
    parsed = parse_memory_update(f"Short-term memory: {MEMORY}\n**Reas")
    assert parsed.short_term_memory == MEMORY
    assert parsed.reason is None


def test_completion_prompt_reply_is_read_with_its_cue():
    reply = f" {MEMORY}\nReason: {REASON}"
    parsed = parse_memory_update(completion_cue("memory") + reply)
    assert (parsed.short_term_memory, parsed.reason) == (MEMORY, REASON)
    # Even without the cue the unlabelled start before "Reason:" is the memory.
    assert parse_memory_update(reply).short_term_memory == MEMORY


@pytest.mark.parametrize("reply", ["", "   ", "I cannot help with that.", '{"mood": "tense"}', "{", None])
def test_unreadable_memory_reply_gives_nothing(reply):
    parsed = parse_memory_update(reply)
    assert parsed.short_term_memory is None
    assert describe_problem("memory", reply) is not None


def test_emphasis_inside_the_text_is_kept_and_only_label_markup_goes():
    reply = "**Short-term memory:** **Mara** has the key.\nReason: *Tomas* lied."
    parsed = parse_memory_update(reply)
    assert parsed.short_term_memory == "**Mara** has the key."
    assert parsed.reason == "*Tomas* lied."
    assert parse_instructions("1. **The Tower** — Mara climbs.\n2. **Run now.**") == [
        "**The Tower** — Mara climbs.",
        "Run now.",
    ]


def test_memory_text_with_braces_is_kept_verbatim():
    reply = "Short-term memory: Mara writes {name} on the wall.\nReason: added the sign."
    assert parse_memory_update(reply).short_term_memory == "Mara writes {name} on the wall."


# ---- the instructions -----------------------------------------------------------------


def numbered(template, marks="123"):
    return "\n".join(template.format(mark=mark, text=text) for mark, text in zip(marks, THREE))


A, B, C = (json.dumps(text) for text in THREE)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(numbered("Instruction {mark}: {text}"), id="labels"),
        pytest.param(numbered("**Instruction {mark}:** {text}"), id="bold labels"),
        pytest.param(numbered("### Instruction {mark}\n{text}"), id="heading labels"),
        pytest.param(numbered("Option {mark}: {text}", "ABC"), id="option letters"),
        pytest.param("Options:\n" + numbered("{mark}) {text}"), id="header and 1)"),
        pytest.param("Next steps:\n" + numbered("- {text}"), id="header and dashes"),
        pytest.param("Here are three ideas:\n\n" + numbered("{mark}. {text}"), id="1. list"),
        pytest.param(
            "1. **Have Mara unlock the lighthouse door.**\n2. *Show Tomas lying about the map.*\n"
            '3. "Let the fog roll in."',
            id="emphasis and quotes",
        ),
        pytest.param(
            "1. Have Mara unlock the\n   lighthouse door.\n2. Show Tomas lying about the map.\n"
            "3. Let the fog roll in.",
            id="wrapped item",
        ),
        pytest.param(f'{{"instructions": [{A}, {B}, {C}]}}', id="JSON"),
        pytest.param(f'```json\n{{"options": [{A}, {B}, {C}], "note": "x"}}\n```', id="JSON synonym"),
        pytest.param(f"[{A}, {B}, {C}]", id="JSON array"),
        pytest.param(
            f'{{"instruction_1": {A}, "instruction_2": {B}, "instruction_3": {C}}}', id="JSON numbered keys"
        ),
        pytest.param(
            f'{{"instructions": [{{"title": "Door", "instruction": {A}}}, {{"instruction": {B}}}, '
            f'{{"instruction": {C}}}]}}',
            id="JSON objects",
        ),
        pytest.param(numbered("Instruction {mark}: {text}").replace("\n", " "), id="one line"),
        pytest.param(
            f" {THREE[0]}\nInstruction 2: {THREE[1]}\nInstruction 3: {THREE[2]}", id="continued from cue"
        ),
    ],
)
def test_instructions_are_read_from_messy_formats(reply):
    assert parse_instructions(reply) == THREE
    assert describe_problem("planner", reply) is None


def test_duplicate_and_empty_instructions_are_dropped():
    reply = "1. Go north.\n2. go north\n3. \n4. **Go north.**\n5. Wait for dawn."
    assert parse_instructions(reply) == ["Go north.", "Wait for dawn."]


def test_more_than_three_instructions_are_all_returned_in_order():
    reply = "\n".join(f"{i}. Direction number {i}." for i in range(1, 6))
    assert len(parse_instructions(reply)) == 5


def test_truncated_json_instructions_drop_the_half_written_one():
    reply = '{"instructions": ["%s", "%s", "Let the fo' % tuple(THREE[:2])
    assert parse_instructions(reply) == THREE[:2]
    assert "2" in describe_problem("planner", reply)


def test_memory_sections_do_not_leak_into_instructions():
    reply = f"Instruction 1: {THREE[0]}\nShort-term memory: {MEMORY}\nInstruction 2: {THREE[1]}"
    assert parse_instructions(reply) == THREE[:2]


# ---- the opening: title and outline ---------------------------------------------------

OUTLINE = (
    "Setting: a fishing town on a foggy coast.\n"
    "Main characters: Mara, a keeper's daughter.\n"
    "Arc: she relights the lamp."
)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(f"Title: The Dark Lamp\nOutline:\n{OUTLINE}", id="labels"),
        pytest.param(f"**Title:** *The Dark Lamp*\n\n**Outline:**\n{OUTLINE}", id="markdown"),
        pytest.param(f"# The Dark Lamp\n\n{OUTLINE}", id="heading and parts"),
        pytest.param(f'Title: "The Dark Lamp"\n\n## Story bible\n{OUTLINE}', id="story bible, as older templates ask"),
        pytest.param(f'```json\n{{"title": "The Dark Lamp", "outline": {json.dumps(OUTLINE)}}}\n```', id="JSON"),
    ],
)
def test_opening_is_read_from_messy_formats(reply):
    parsed = parse_opening(reply)
    assert parsed.title == "The Dark Lamp"
    assert parsed.outline == OUTLINE
    assert describe_problem("opening", reply) is None


def test_opening_json_with_parts_instead_of_an_outline_keeps_them_all():
    reply = '{"title": "The Dark Lamp", "setting": "A foggy coast.", "characters": [{"name": "Mara", "role": "keeper"}]}'
    parsed = parse_opening(reply)
    assert parsed.title == "The Dark Lamp"
    assert "A foggy coast." in parsed.outline and "Mara" in parsed.outline and "keeper" in parsed.outline


def test_opening_without_title_says_so():
    reply = f"Outline: {OUTLINE}"
    assert parse_opening(reply).title is None
    assert describe_problem("opening", reply) == "The reply had no readable title."


# ---- the paragraph ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Paragraph: The fog came in.", "The fog came in."),
        ("**Paragraph 2:**\nThe fog came in.", "The fog came in."),
        ("Next paragraph:\n\nThe fog came in.", "The fog came in."),
        ("Here is the next paragraph:\n\nThe fog came in.", "The fog came in."),
        ("```\nThe fog came in.\n```", "The fog came in."),
        ('"The fog came in over the harbour."', "The fog came in over the harbour."),
        ('"Run," she said. "Now."', '"Run," she said. "Now."'),
        ("  The fog came in.  \n", "The fog came in."),
        ("The fog came in.\n\nMara ran.", "The fog came in.\nMara ran."),
        (f"The fog came in.\n\nShort-term memory: {MEMORY}\nInstruction 1: {THREE[0]}", "The fog came in."),
        (f"The fog came in.\n\n---\n\n**Instruction 1:** {THREE[0]}", "The fog came in."),
        ("The fog came in.\n\n*(Note: I kept it short.)*", "The fog came in."),
        ("Note: meet me at dawn. Mara read it twice.", "Note: meet me at dawn. Mara read it twice."),
        ("<think>The user wants fog.</think>The fog came in.", "The fog came in."),
        ('{"paragraph": "The fog came in."}', "The fog came in."),
        ("The {name} of the ship was gone.", "The {name} of the ship was gone."),
        ("", ""),
    ],
)
def test_clean_paragraph(reply, expected):
    assert clean_paragraph(reply) == expected


# ---- the chooser ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"choice": 2}', 2),
        ("Choice: 3", 3),
        ("I would go with option B.", 2),
        ("The first one.", 1),
        ("none", None),
    ],
)
def test_parse_choice(reply, expected):
    assert parse_choice(reply) == expected


# ---- fallbacks ------------------------------------------------------------------------


def test_instructions_from_paragraph_use_its_last_moment_and_its_character():
    first, second, third = instructions_from_paragraph(PARAGRAPH)
    assert "Tomas did not turn around" in first
    assert "Tomas" in second  # named twice after a sentence start; Mara's names start sentences
    assert len({first, second, third}) == 3


def test_a_heading_in_capitals_is_not_taken_for_a_character():
    # The demo model writes book headings mid-paragraph; "Show how THE reacts" helps nobody.
    paragraph = "The tide was out. THE HISPANIOLA lay at anchor, and Jim watched her. Jim waited."
    assert "Show how Jim reacts" in instructions_from_paragraph(paragraph)[1]


def test_instructions_from_an_empty_paragraph_are_still_three():
    instructions = instructions_from_paragraph("")
    assert len(set(instructions)) == 3 and all(instructions)


def test_a_complete_reply_needs_no_fallback():
    outputs = resolve_step_outputs(
        memory_reply=f"Short-term memory: {MEMORY}\nReason: {REASON}",
        planner_reply='{"instructions": ["%s", "%s", "%s", "A fourth."]}' % tuple(THREE),
        old_memory="Old memory.",
        paragraph=PARAGRAPH,
    )
    assert outputs.short_term_memory == MEMORY
    assert outputs.memory_reason == REASON
    assert outputs.instructions == tuple(THREE)
    assert outputs.fallbacks == ()


def test_an_unreadable_memory_keeps_the_old_one_and_says_so():
    outputs = resolve_step_outputs(
        memory_reply="Sorry, I can't do that.",
        planner_reply="\n".join(THREE),
        old_memory="Mara is at the harbour.",
        paragraph=PARAGRAPH,
    )
    assert outputs.short_term_memory == "Mara is at the harbour."
    assert outputs.fallbacks == (
        "The model's memory update could not be read, so the previous short-term memory was kept.",
    )


def test_a_prose_only_model_s_memory_is_a_window_over_the_latest_paragraphs():
    memory = ""
    paragraphs = [
        f"Day {day} began at the harbour. " + "The nets were mended slowly. " * 30 + f"Night {day} fell."
        for day in range(1, 8)
    ]
    for day, paragraph in enumerate(paragraphs, 1):
        outputs = outputs_from_paragraph(old_memory=memory, paragraph=paragraph, outline="")
        memory = outputs.short_term_memory
        assert len(memory.split()) <= MEMORY_WORD_LIMIT + 1
        if day > 1:
            assert memory.endswith(f"Day {day} began at the harbour. Night {day} fell.")
    assert "Day 7 began" in memory and "Day 6 began" in memory and "Day 1 began" not in memory
    assert len(set(outputs.instructions)) == 3
    assert outputs.fallbacks == (PROSE_ONLY_OUTPUTS,)


def test_the_prose_only_memory_keeps_whole_sentences_with_their_quotes_and_a_writer_s_notes():
    paragraph = "Dr. Livesey came late to the inn. “Who's there?” asked Mara. Mr. Trelawney laughed."
    outputs = outputs_from_paragraph(old_memory="Mara keeps the inn.", paragraph=paragraph)
    assert outputs.short_term_memory == (
        "Mara keeps the inn. Dr. Livesey came late to the inn. Mr. Trelawney laughed."
    )
    notes = " ".join(f"note{i}" for i in range(149))  # an edited memory without full stops
    carried = outputs_from_paragraph(old_memory=notes, paragraph=paragraph).short_term_memory
    assert "note148" in carried and "note0 " not in carried and carried.endswith("Mr. Trelawney laughed.")
    quoted = outputs_from_paragraph(old_memory="x.", paragraph="He ran. “Who's there?”").short_term_memory
    assert quoted.endswith("“Who's there?”")


def test_a_failed_memory_call_at_the_story_start_begins_from_the_paragraph():
    outputs = resolve_step_outputs(
        memory_reply=None, planner_reply="\n".join(THREE), old_memory="", paragraph=PARAGRAPH
    )
    assert outputs.short_term_memory.startswith("The fog came in over the harbour")
    assert "started from the new paragraph" in outputs.fallbacks[0]


def test_a_missing_reason_gets_a_default_and_a_note():
    outputs = resolve_step_outputs(
        memory_reply=f"Short-term memory: {MEMORY}",
        planner_reply="\n".join(THREE),
        old_memory="Old.",
        paragraph=PARAGRAPH,
    )
    assert outputs.short_term_memory == MEMORY
    assert outputs.memory_reason
    assert outputs.fallbacks == ("The model gave no reason for its memory update.",)


def test_missing_instructions_are_derived_from_the_paragraph_and_said_so():
    outputs = resolve_step_outputs(
        memory_reply=f"Short-term memory: {MEMORY}\nReason: {REASON}",
        planner_reply=f"1. {THREE[0]}",
        old_memory="Old.",
        paragraph=PARAGRAPH,
    )
    assert outputs.instructions[0] == THREE[0]
    assert outputs.instructions[1:] == instructions_from_paragraph(PARAGRAPH)[:2]
    assert outputs.fallbacks == (
        "The model proposed only 1 of the three next instructions, so the last two were derived "
        "from the new paragraph.",
    )


def test_a_failed_planner_call_derives_all_three():
    outputs = resolve_step_outputs(
        memory_reply=f"Short-term memory: {MEMORY}\nReason: {REASON}",
        planner_reply=None,
        old_memory="Old.",
        paragraph=PARAGRAPH,
        outline="Mara relights the lamp.",
    )
    assert outputs.instructions == instructions_from_paragraph(PARAGRAPH, "Mara relights the lamp.")
    assert "could not be read" in outputs.fallbacks[0]


def test_a_derived_instruction_never_repeats_one_the_model_gave():
    derived = instructions_from_paragraph(PARAGRAPH)
    outputs = resolve_step_outputs(
        memory_reply=f"Short-term memory: {MEMORY}\nReason: {REASON}",
        planner_reply=f"1. {derived[1]}\n2. {derived[0]}",
        old_memory="Old.",
        paragraph=PARAGRAPH,
    )
    assert len({i.lower() for i in outputs.instructions}) == 3


def test_describe_problem_for_unknown_role_is_a_programming_error():
    with pytest.raises(ValueError):
        describe_problem("narrator", "text")


# ---- reply shapes from instruction-tuned servers (vLLM, Ollama, llama.cpp, OpenAI) ---------

PROSE = "Mara pressed the key into the lock. The door gave way with a groan."
ASKED = "Have Mara open the lighthouse door."


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            "Okay, the user wants Mara to open the door. Keep it tense.\n</think>\n\n" + PROSE,
            id="R1 distill: template opened the think block, only </think> in the reply",
        ),
        pytest.param("<thinking>Plan the beat.</thinking>\n" + PROSE, id="thinking tags"),
        pytest.param("Sure, here's the next paragraph.\n\n" + PROSE, id="preface ending in a full stop"),
        pytest.param("Certainly!\n\n" + PROSE, id="bare 'Certainly!'"),
        pytest.param(PROSE + "\n\nLet me know if you'd like me to adjust the tone or pacing!", id="let me know"),
        pytest.param(PROSE + "\n\nI hope this paragraph captures the tension you wanted.", id="I hope this captures"),
        pytest.param(PROSE + "\n\n---\n\n(Word count: 182)", id="word count after a rule"),
        pytest.param('```json\n{"paragraph": "%s"}\n```' % PROSE, id="fenced JSON"),
        pytest.param('Here is the paragraph:\n{"next_paragraph": "%s"}' % PROSE, id="preface then JSON"),
        pytest.param("**Direction:** Have Mara open the lighthouse door.\n\n" + PROSE, id="echoed direction label"),
        pytest.param(ASKED + "\n\n" + PROSE, id="echoed instruction line"),
        pytest.param(ASKED + " " + PROSE, id="instruction restated as the first sentence"),
        pytest.param("# Chapter 3: The Door\n\n" + PROSE, id="markdown chapter heading"),
        pytest.param("**The Door**\n\n" + PROSE, id="bold title line"),
        pytest.param(PROSE + "<|eot_id|>assistant\n\nShort-term memory: x", id="Llama-3 end token leaked"),
        pytest.param(PROSE + "<|im_end|>\n<|im_start|>user\nGreat, go on.", id="ChatML end token leaked"),
        pytest.param("<|im_start|>assistant\n" + PROSE, id="ChatML start token leaked"),
    ],
)
def test_a_writer_reply_keeps_only_the_story(reply):
    assert clean_paragraph(reply, ASKED) == PROSE


def test_book_headings_before_the_prose_go():
    # What a model trained on books (the demo model) writes before its prose.
    reply = "THE OLD SEA-DOG AT THE ADMIRAL BENBOW\nCHAPTER XXV. I Strike the Jolly Roger\n" + PROSE
    assert clean_paragraph(reply, ASKED) == PROSE
    assert clean_paragraph("Chapter 12\n\n" + PROSE, ASKED) == PROSE


@pytest.mark.parametrize(
    "prose",
    [
        '"STOP!" he cried, and the lantern swung.\n' + PROSE,
        "STOP, he thought, and the lantern swung.\n" + PROSE,
        "Chapter 12, she said, was where the book went wrong.\n" + PROSE,
        "Chapter 12 had always been her favourite.\n" + PROSE,
        "Part 2 of the plan was simple: wait for the tide.\n" + PROSE,
        "Book 3 lay open on the table.\n" + PROSE,
        "A VERY old man stood in the doorway.\n" + PROSE,
        "BOOM!\n" + PROSE,
        "NO! NO! NO!\n" + PROSE,
        "— I WON'T! —\n" + PROSE,
        PROSE + "\nNO ENTRY, said the sign.",
    ],
)
def test_prose_that_opens_in_capitals_or_with_a_chapter_stays(prose):
    assert clean_paragraph(prose, ASKED) == prose


@pytest.mark.parametrize(
    "prose",
    [
        PROSE + "\nI hope this rain stops before dawn, Mara thought.",
        '"Here is the paragraph he underlined," Tomas said. ' + PROSE,
        "Part of her wanted to run.\n" + PROSE,
        PROSE + "\nThis was the door her father had sealed.",
    ],
)
def test_closing_remarks_go_but_prose_that_looks_like_them_stays(prose):
    reply = prose + "\n\nLet me know if you would like a darker tone."
    assert clean_paragraph(reply, ASKED) == prose


@pytest.mark.parametrize(
    "prose",
    [
        "Here is the passage beneath the chapel. Mara lifted the lantern and went down.",
        "Plan: get in, get the ledger, get out. That was all Mara had.",
        "She was <thinking> about it, and the tide was turning.",
        "Direction: north, the compass insisted, though the stars disagreed.",
    ],
)
def test_prose_that_opens_like_a_preface_or_label_is_kept_whole(prose):
    assert clean_paragraph(prose, ASKED) == prose


@pytest.mark.parametrize(
    ("cut", "kept"),
    [
        ("他走了。她笑了。\n他说：“再见。”然后他", "他走了。她笑了。\n他说：“再见。”"),
        ("Sie ging zur Tür. „Komm her.“ Er kam nicht, und", "Sie ging zur Tür. „Komm her.“"),
        ("She left. “Come back,” he said. Then he", "She left. “Come back,” he said."),
    ],
)
def test_a_cut_reply_keeps_every_complete_sentence_in_any_language(cut, kept):
    assert ends_mid_sentence(cut)
    assert trim_to_last_sentence(cut) == kept


@pytest.mark.parametrize(
    "last_block",
    [
        '"Let me know if you see him," she said.',
        '"I did what you asked," Tomas said, and turned away.',
        "I asked the doctor whether the medicine helps, and he only shrugged.",
        "I didn't like the tone of his voice, or the way he kept pacing the pier.",
        "Would you like to know what she found? So did I, and so did the sea.",
        "This passage led down to the cellar, colder with every step.",
        "This memory would stay with her for years.",
        "I ran in the direction of the lighthouse, my lungs burning, and did not look back.",
        "I read the last paragraph of her letter twice before I folded it away.",
        "Shall I tell you what the sea gave back that night?",
        "Let me know when you arrive, the note said, and nothing else.",
        "Would you like a table by the window, the waiter asked.",
        "Do you want me to say it? she asked, and he nodded.",
        "If you'd like to know how it ended, ask the keeper's daughter.",
        "300 words, no more, survived of the captain's log.",
        "This summary of his life, the judge said, is a lie.",
    ],
)
def test_a_last_block_of_first_person_prose_or_dialogue_is_kept(last_block):
    # A second paragraph of the reply that merely resembles a remark to the user is story.
    reply = PROSE + "\n\n" + last_block
    assert clean_paragraph(reply, ASKED) == PROSE + "\n" + last_block


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            "**Option 1: The Confrontation**\nHave Mara confront Tomas at the pier.\n\n"
            "**Option 2: The Map**\nShow Tomas hiding the map.\n\n"
            "**Option 3: Fog**\nLet the fog roll in over the town.",
            id="bold titled options",
        ),
        pytest.param(
            "### 1. The Confrontation\nHave Mara confront Tomas at the pier.\n\n"
            "### 2. The Map\nShow Tomas hiding the map.\n\n### 3. Fog\nLet the fog roll in over the town.",
            id="numbered headings",
        ),
        pytest.param(
            "1. **The Confrontation**\n   Have Mara confront Tomas at the pier.\n"
            "2. **The Map**\n   Show Tomas hiding the map.\n3. **Fog**\n   Let the fog roll in over the town.",
            id="bold titles with indented descriptions",
        ),
    ],
)
def test_titled_instructions_keep_title_and_description_without_markup(reply):
    assert parse_instructions(reply) == [
        "The Confrontation: Have Mara confront Tomas at the pier.",
        "The Map: Show Tomas hiding the map.",
        "Fog: Let the fog roll in over the town.",
    ]


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            numbered("Instruction {mark}: {text}")
            + "\n\nThese directions keep the tension high while leaving room to unfold.",
            id="closing remark after labels",
        ),
        pytest.param(
            "Let me weigh instruction 1: maybe a chase. Option 2: no.\n</think>\n"
            + numbered("Instruction {mark}: {text}"),
            id="reasoning before a lone </think>",
        ),
        pytest.param(numbered("Instruction {mark}: {text}") + "<|eot_id|>", id="end token leaked"),
    ],
)
def test_instructions_leave_out_commentary_and_reasoning(reply):
    assert parse_instructions(reply) == THREE


def test_an_instruction_cut_off_by_the_length_limit_is_dropped_not_offered():
    reply = "Instruction 1: Have Mara unlock the door.\nInstruction 2: Show Tomas lying.\nInstruction 3: Let the fog"
    assert parse_instructions(reply, cut_off=True) == ["Have Mara unlock the door.", "Show Tomas lying."]
    assert describe_problem("planner", reply, cut_off=True) is not None
    outputs = resolve_step_outputs(
        memory_reply=f"Reason: {REASON}\nShort-term memory: {MEMORY}",
        planner_reply=reply, old_memory="", paragraph=PARAGRAPH, planner_cut_off=True,
    )
    assert "Let the fog" not in outputs.instructions
    assert "only 2 of the three" in outputs.fallbacks[0]


def test_a_memory_cut_off_after_its_reason_keeps_its_full_sentences_and_says_so():
    reply = f"Reason: {REASON}\nShort-term memory: Mara holds the brass key. Tomas follows her to the"
    parsed = parse_memory_update(reply, cut_off=True)
    assert parsed.short_term_memory == "Mara holds the brass key."
    assert parsed.reason == REASON and parsed.truncated
    assert "cut off" in describe_problem("memory", reply, cut_off=True)
    outputs = resolve_step_outputs(
        memory_reply=reply, planner_reply="\n".join(THREE), old_memory="Old.", paragraph=PARAGRAPH,
        memory_cut_off=True,
    )
    assert outputs.fallbacks == ("The model's memory update was cut off, so the part that arrived was kept.",)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            f"Short-term memory: {MEMORY}\nReason: {REASON}\n\nLet me know if you need anything else!",
            id="closing offer",
        ),
        pytest.param(
            f"The storm is over. Reason: it passed.\n</think>\nShort-term memory: {MEMORY}\nReason: {REASON}",
            id="reasoning with a label before a lone </think>",
        ),
    ],
)
def test_memory_leaves_out_commentary_and_reasoning(reply):
    parsed = parse_memory_update(reply)
    assert (parsed.short_term_memory, parsed.reason) == (MEMORY, REASON)


def test_a_choice_after_reasoning_is_the_one_after_the_reasoning():
    assert parse_choice("Options 1 and 3 are dull.\n</think>\nChoice: 2") == 2


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<thi", ""),
        ("<think>Mara should", ""),
        ("<think>plan</think>\n\nMara ran", "Mara ran"),
        ("Okay, so</think>Mara ran", "Mara ran"),
        ("Mara ran<|eo", "Mara ran"),
        ("Mara ran<|eot_id|>assistant\n\nSure", "Mara ran"),
        ("Mara [whispered] <", "Mara [whispered] "),
    ],
)
def test_what_streams_to_the_screen_never_shows_reasoning_or_template_tokens(raw, shown):
    from longyarn.recurrent_core.replies.clean import streamed_prose

    assert streamed_prose(raw) == shown

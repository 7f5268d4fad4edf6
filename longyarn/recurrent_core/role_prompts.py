"""Every request's prompt, fitted to the context budget in a stated order.

The whole prompt as the backend sends it (system rules, task, output format, and the context,
twice under JRT) must fit `context_budget_tokens`; the backend measures it (`prompt_tokens`).
When it does not fit, context sections are trimmed, least needed first, each by no more than
it takes; a section is cut at its end, or (the previous paragraph) at its start. The task and
the template's own words are never cut: a budget too small for them is an error that says so.

What each request keeps longest (the last named is trimmed first):

- writer:  the instruction > author's note > short-term memory > previous paragraph (its end)
           > outline > story bible (whole entries, the last activated first) > story frame
           (title, genre, premise) > chapters (within their own budget first: the oldest
           summaries go first) > recalled passages (weakest first)
- memory:  the instruction > new paragraph > short-term memory
- planner: new paragraph > short-term memory > author's note > outline > story frame > story bible
- chooser: the three directions > latest paragraph > short-term memory
- opening: the premise (its start)
- summary: the text to summarise (its start; longer texts are summarised in parts first)
- chapter_summary: the chapter's text (its start; a longer chapter is summarised in parts
           first) > story frame
- passage: the instruction and the passage > text before it (its end) > author's note >
           short-term memory > outline > story frame
- repair:  as the role it repairs; the unreadable reply is cut to its last 2,000 characters
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from . import prompts
from .context import (
    AUTHORS_NOTE,
    ELLIPSIS,
    FACTS_TO_CHECK,
    LATEST_PARAGRAPH,
    NEW_PARAGRAPH,
    OUTLINE,
    PREMISE,
    PREVIOUS_PARAGRAPH,
    RECALLED_PASSAGES,
    SHORT_TERM_MEMORY,
    STORY_BIBLE,
    STORY_FRAME,
    TEXT_BEFORE,
    TEXT_TO_SUMMARISE,
    TRIMMED_BY_WHOLE_LINES,
    TRIMMED_FROM_START,
    recalled_passages_text,
    story_frame_text,
    trim_text,
    trim_whole_lines,
)
from .chapter_memory import CHAPTER_TEXT, CHAPTERS, scene_break_rule
from .errors import InvalidInput
from .types import ContextSection, Prompt, RecalledMemory, Story

# Trimmed first to last, per role (see the module docstring).
TRIM_ORDER: dict[str, tuple[str, ...]] = {
    "writer": (
        RECALLED_PASSAGES, CHAPTERS, STORY_FRAME, STORY_BIBLE, OUTLINE, PREVIOUS_PARAGRAPH, SHORT_TERM_MEMORY,
        AUTHORS_NOTE,
    ),
    "memory": (STORY_BIBLE, SHORT_TERM_MEMORY, NEW_PARAGRAPH),
    "planner": (STORY_BIBLE, STORY_FRAME, OUTLINE, AUTHORS_NOTE, SHORT_TERM_MEMORY, NEW_PARAGRAPH),
    "chooser": (SHORT_TERM_MEMORY, LATEST_PARAGRAPH),
    "continuity": (NEW_PARAGRAPH, FACTS_TO_CHECK),
    "opening": (PREMISE,),
    "summary": (TEXT_TO_SUMMARISE,),
    "chapter_summary": (STORY_FRAME, CHAPTER_TEXT),
    "passage": (STORY_FRAME, OUTLINE, SHORT_TERM_MEMORY, AUTHORS_NOTE, TEXT_BEFORE),
}
# What the writer's task adds when its prompt has a story bible section (none without one).
BIBLE_RULE = (
    "\n\nKeep to the story bible: it says what is true, as of this paragraph, of the people, "
    "places and things it names."
)
REPAIR_REPLY_CHARS = 2000
MAX_FIT_ROUNDS = 8
# Cut a little more than the estimate says, so that fitting takes a round or two, not many.
OVERCUT = 1.03

Measure = Callable[[Prompt], int]
CountTokens = Callable[[str], int]


class ContextBudgetTooSmall(InvalidInput):
    """A prompt does not fit the context budget even with every context section trimmed away."""


@dataclass(frozen=True)
class AuthorsNote:
    """A story's note on style, tone, point of view or tense, placed `depth` sections before
    the end of the writer's context (0: last, right before the task), as in NovelAI."""

    text: str = ""
    depth: int = 0

    @classmethod
    def of(cls, story: Story) -> AuthorsNote:
        note = story.settings.get("authors_note") or {}
        if isinstance(note, str):
            return cls(note)
        return cls(str(note.get("text") or ""), max(0, int(note.get("depth") or 0)))


@dataclass
class PromptFitter:
    """Builds each role's prompt within `budget_tokens`, as `measure` counts a whole request.

    `template_folders` are searched for a role's template before the shipped one (a story's
    own folder first, then the writer's; see `prompts.load_template`).
    """

    budget_tokens: int
    measure: Measure
    count_tokens: CountTokens
    context_repeats: int = 1  # JRT: each token of context is sent this many times
    template_folders: tuple[Path, ...] = ()
    chapter_budget_tokens: int = 600  # the Chapters section's own budget (see `_chapters_section`)

    # ---- the roles ----

    def writer(
        self,
        story: Story,
        instruction: str,
        short_term_memory: str,
        recalled: Sequence[RecalledMemory],
        previous_paragraph: str,
        bible: str = "",
        chapters: Sequence[str] = (),
    ) -> Prompt:
        """The next paragraph's prompt. Sections most relevant to the prompt cache come first:
        the story, then what changes with each step; the author's note at its depth. The story
        bible's section (`bible`: its activated entries, one a line) is there only when it has
        entries, so a story without a bible gets the very prompt it got before the bible. So is
        the Chapters section (`chapters`: see `chapter_memory.chapter_memory_entries`), with
        the reply format's scene-break mark."""
        sections = [
            self.section(STORY_FRAME, story_frame_text(story)),
            self.section(OUTLINE, outline_text(story)),
            *self._bible_section(bible),
            self.section(SHORT_TERM_MEMORY, short_term_memory),
            *self._chapters_section(chapters),
            self.section(RECALLED_PASSAGES, recalled_passages_text(recalled)),
            self.section(PREVIOUS_PARAGRAPH, previous_paragraph),
        ]
        sections = self._with_note(sections, AuthorsNote.of(story))
        prompt = self.render("writer", sections, instruction=instruction)
        if bible.strip():  # a story with a bible: what its section is for
            prompt = replace(prompt, task=prompt.task + BIBLE_RULE)
        if chapters:  # a story with chapters: how the model marks a chapter's end
            prompt = replace(prompt, output_format=prompt.output_format + scene_break_rule(True))
        return self._fitted(prompt, TRIM_ORDER["writer"])

    def memory(self, instruction: str, short_term_memory: str, paragraph: str, bible_facts: str = "") -> Prompt:
        """`bible_facts`: the active bible entries and their facts in force, which the reply
        may end or add to (see bible_proposals); "" leaves the section out."""
        sections = [
            self.section(SHORT_TERM_MEMORY, short_term_memory or "(empty: this is the story's start)"),
            *([self.section(STORY_BIBLE, bible_facts)] if bible_facts else []),
            self.section(NEW_PARAGRAPH, paragraph),
        ]
        return self.fit("memory", sections, instruction=instruction)

    def planner(self, story: Story, short_term_memory: str, paragraph: str, bible: str = "") -> Prompt:
        """Three directions for the next paragraph; `bible` as the writer's prompt sent it."""
        note = AuthorsNote.of(story)
        sections = [
            self.section(STORY_FRAME, story_frame_text(story)),
            self.section(OUTLINE, outline_text(story)),
            *self._bible_section(bible),
            self.section(AUTHORS_NOTE, note.text),
            self.section(SHORT_TERM_MEMORY, short_term_memory),
            self.section(NEW_PARAGRAPH, paragraph),
        ]
        return self.fit("planner", sections)

    def chooser(self, short_term_memory: str, paragraph: str, options: Sequence[str]) -> Prompt:
        sections = [self.section(SHORT_TERM_MEMORY, short_term_memory), self.section(LATEST_PARAGRAPH, paragraph)]
        numbered = "\n".join(f"{number}. {text}" for number, text in enumerate(options, 1))
        return self.fit("chooser", sections, instructions=numbered)

    def continuity(self, facts: str, paragraph: str) -> Prompt:
        """Whether `paragraph` contradicts `facts` (one a line, each with its id's start)."""
        return self.fit("continuity", [self.section(FACTS_TO_CHECK, facts), self.section(NEW_PARAGRAPH, paragraph)])

    def opening(self, premise: str, genre: str) -> Prompt:
        """The story's title and outline, planned from its premise."""
        return self.fit("opening", [self.section(PREMISE, premise)], genre=genre or "any")

    def chapter_summary(self, story: Story, chapter_text: str, *, chapter: str, words: int) -> Prompt:
        """A closed chapter's summary (at most `words` words) and title, from its text."""
        sections = [self.section(STORY_FRAME, story_frame_text(story)), self.section(CHAPTER_TEXT, chapter_text)]
        return self.fit("chapter_summary", sections, chapter=chapter, words=words)

    def summary(self, what: str, text: str, words: int) -> Prompt:
        """A summary of `text` (a premise or an outline) in about `words` words."""
        return self.fit("summary", [self.section(TEXT_TO_SUMMARISE, text)], what=what, words=words)

    def passage(
        self,
        story: Story,
        short_term_memory: str,
        text_before: str,
        *,
        task: str,
        passage: str,
        instruction: str,
    ) -> Prompt:
        """Co-writing inside the text: `task` ("rewrite", "expand", "describe", "shorten" or
        "continue") on `passage`, with the story and the text before it as context."""
        sections = [
            self.section(STORY_FRAME, story_frame_text(story)),
            self.section(OUTLINE, outline_text(story)),
            self.section(SHORT_TERM_MEMORY, short_term_memory),
            self.section(AUTHORS_NOTE, AuthorsNote.of(story).text),
            self.section(TEXT_BEFORE, text_before),
        ]
        return self.fit(
            "passage", sections, task=PASSAGE_TASKS[task], passage=passage or "(nothing yet)",
            instruction=instruction or "(none)",
        )

    def repair(self, original: Prompt, reply: str, problem: str) -> Prompt:
        """Ask again after an unreadable reply, with the original's rules and context."""
        repair = self.render(
            "repair",
            original.context,
            problem=problem,
            previous_reply=reply[-REPAIR_REPLY_CHARS:],
            original_task=original.task,
            output_format=original.output_format,
        )
        prompt = replace(
            original,
            task=repair.task,
            output_format=repair.output_format or original.output_format,
            template=repair.template,
        )
        return self._fitted(prompt, TRIM_ORDER.get(original.role, ()))

    # ---- fitting ----

    def section(self, name: str, text: str) -> ContextSection:
        return ContextSection(name, text, self.count_tokens(text))

    def render(self, role: str, sections: Sequence[ContextSection], **fields: object) -> Prompt:
        return prompts.render_prompt(role, context_sections=sections, folders=self.template_folders, **fields)

    def fit(self, role: str, sections: Sequence[ContextSection], **fields: object) -> Prompt:
        """`role`'s prompt with `sections`, trimmed in the role's order until it fits."""
        return self._fitted(self.render(role, sections, **fields), TRIM_ORDER.get(role, ()))

    def _fitted(self, prompt: Prompt, trim_order: Sequence[str]) -> Prompt:
        for _round in range(MAX_FIT_ROUNDS):
            excess = self.measure(prompt) - self.budget_tokens
            if excess <= 0:
                return prompt
            context = self._trimmed(prompt.context, trim_order, excess)
            if context == prompt.context:
                break
            prompt = replace(prompt, context=context)
        excess = self.measure(prompt) - self.budget_tokens
        if excess <= 0:
            return prompt
        bare = self.measure(replace(prompt, context=()))
        raise ContextBudgetTooSmall(
            f"The {prompt.role}'s prompt takes {bare:,} tokens before any of the story is added, "
            f"more than the context budget of {self.budget_tokens:,}; nothing was sent to the model; "
            "raise context_budget_tokens in the settings (F5), or shorten the instruction."
        )

    def _trimmed(
        self, sections: tuple[ContextSection, ...], trim_order: Sequence[str], excess_tokens: int
    ) -> tuple[ContextSection, ...]:
        """`sections` with about `excess_tokens` fewer tokens sent, cut in `trim_order`."""
        # Under JRT each token of context is sent more than once: cutting one saves that many.
        to_cut = math.ceil(excess_tokens * OVERCUT / max(1, self.context_repeats)) + 1
        result = list(sections)
        for name in trim_order:
            if to_cut <= 0:
                break
            for index, section in enumerate(result):
                if section.name != name or not section.text:
                    continue
                cut = min(section.tokens, to_cut)
                keep_chars = int(len(section.text) * (section.tokens - cut) / max(1, section.tokens))
                if name in TRIMMED_BY_WHOLE_LINES:
                    kept = trim_whole_lines(section.text, keep_chars)
                else:
                    kept = trim_text(section.text, keep_chars, from_start=name in TRIMMED_FROM_START)
                result[index] = ContextSection(
                    name, kept, self.count_tokens(kept), section.trimmed_chars + len(section.text) - len(kept)
                )
                to_cut -= cut
        return tuple(result)

    def _bible_section(self, bible: str) -> list[ContextSection]:
        return [self.section(STORY_BIBLE, bible)] if bible.strip() else []

    def _chapters_section(self, lines: Sequence[str]) -> list[ContextSection]:
        """The Chapters section within `chapter_budget_tokens`: the chapter being written
        (`lines[0]`), then earlier summaries, newest first, while they fit; the rest are left
        out and an ellipsis says so (the section then reads as its whole text cut short, which
        is how the context viewer rebuilds it). No lines, no section."""
        if not lines:
            return []
        whole = "\n".join(lines)
        tokens = self.count_tokens(whole)
        if tokens <= self.chapter_budget_tokens:
            return [ContextSection(CHAPTERS, whole, tokens)]
        kept = [lines[0]]
        for line in lines[1:]:
            if self.count_tokens("\n".join([*kept, line])) > self.chapter_budget_tokens:
                break
            kept.append(line)
        if self.count_tokens(kept[0]) > self.chapter_budget_tokens:
            keep_chars = int(len(whole) * self.chapter_budget_tokens / max(1, tokens))
            text = trim_text(whole, keep_chars, from_start=False)
        else:
            text = "\n".join(kept) + "\n" + ELLIPSIS
        return [ContextSection(CHAPTERS, text, self.count_tokens(text), len(whole) - len(text) + len(ELLIPSIS))]

    def _with_note(self, sections: list[ContextSection], note: AuthorsNote) -> list[ContextSection]:
        if not note.text.strip():
            return sections
        at = max(0, len(sections) - note.depth)
        return [*sections[:at], self.section(AUTHORS_NOTE, note.text), *sections[at:]]


PASSAGE_TASKS = {
    "rewrite": "Rewrite the passage: the same events and meaning, in better prose.",
    "expand": "Expand the passage: the same events, told more fully, with more detail and more of each moment.",
    "describe": "Rewrite the passage with richer description: what can be seen, heard, smelled, touched and tasted.",
    "shorten": "Shorten the passage: the same events in fewer words, keeping what matters most.",
    "continue": "Write what comes next after the text before the passage, in the same voice: about 40 to "
                "100 words. The passage is what already follows; if it has words, lead into them.",
}


def outline_text(story: Story) -> str:
    """The outline as the prompts hold it (none when it only repeats the premise)."""
    return story.outline if story.outline and story.outline != story.premise else ""

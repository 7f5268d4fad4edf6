"""The RecurrentGPT step: one paragraph, an updated short-term memory and three next instructions.

Every front end (the writer UI, the reader, batch) calls `Engine.step`, an async generator of
events. The paragraph streams as `ParagraphDelta`s; the memory update and the three instructions
are asked for concurrently once the paragraph is done; the step is committed in one storage
transaction at the very end, so a cancelled or failed step leaves storage exactly as it was.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from dataclasses import dataclass
from typing import AsyncIterator, Literal

import numpy as np

from .backends.base import ModelBackend
from .bible_activation import BibleActivator, BibleSection, settle
from .bible_proposals import BibleProposals, bible_facts_for_memory, check_proposals
from .context import STORY_BIBLE, chapter_lines, record_step_context
from .continuity import ContinuityOutcome, check_paragraph
from .embeddings import Embedder
from .engine_config import EngineConfig, default_sampling
from .errors import InvalidInput, ModelError, StreamInterrupted
from .guard import ParagraphGuard
from .memory import RecallIndex
from .model_calls import ModelCalls
from .replies import fallbacks as fallback_sentences
from .replies.bible_updates import parse_bible_updates
from .replies.chooser import parse_choice
from .replies.clean import has_reasoning_tag, streamed_prose
from .replies.scene_break import split_scene_break
from .replies.opening import parse_opening, title_from_premise
from .replies.sentences import ends_mid_sentence, trim_to_last_sentence
from .replies.writer import clean_paragraph
from .role_prompts import PromptFitter
from .step_outputs import StepOutputs, outputs_from_paragraph, resolve_step_outputs
from .store import StoryStore
from .types import (
    NewStep,
    ParagraphDelta,
    PhaseChanged,
    BibleActivation,
    Prompt,
    RecalledMemory,
    Step,
    StepCompleted,
    StepEvent,
    StepStarted,
    Story,
    Usage,
)

log = logging.getLogger(__name__)

OPENING_INSTRUCTION = (
    "Open the story: set the scene and introduce the main character, following the outline."
)
MAX_INSTRUCTION_CHARS = 4000

__all__ = ["Engine", "EngineConfig", "OPENING_INSTRUCTION", "default_sampling"]


@dataclass(frozen=True)
class StepPlan:
    """What a paragraph is written from (see `Engine.plan_step`)."""

    story: Story
    parent_id: str | None
    instruction: str
    short_term_memory: str
    recalled: tuple[RecalledMemory, ...]
    fitter: PromptFitter
    prompt: Prompt  # the writer's, within the budget
    prompt_tokens: int
    bible: BibleActivation | None = None  # the story bible entries activated, and why

    def started(self) -> StepStarted:
        return StepStarted(
            self.story.id, self.instruction, self.prompt.context, self.recalled,
            template=self.prompt.template, budget_tokens=self.fitter.budget_tokens,
            prompt_tokens=self.prompt_tokens, bible=self.bible,
        )


@dataclass(frozen=True)
class Remembered:
    """What follows a paragraph: its embedding, the new memory and instructions, the usage, and
    what the memory and planner prompts trimmed to fit: (role, section, characters)."""

    vector: np.ndarray
    outputs: StepOutputs
    usage: Usage
    trimmed: tuple[tuple[str, str, int], ...]
    # The story bible updates the memory reply proposed, checked; None: none were asked for.
    bible: BibleProposals | None = None
    notes: tuple[str, ...] = ()  # sentences for the step's record: updates dropped, or not asked for
    contradictions: tuple | None = None  # what the continuity check found; None: not checked


@dataclass(frozen=True)
class BibleBefore:
    """The story bible before a paragraph: its entries, the branch's facts, the paragraph's
    number, and the memory prompt's section (the active entries' facts; "" for none)."""

    entries: list
    facts: list
    paragraph: int
    prompt_text: str


def finished_paragraph(raw: str, instruction: str, finish_reason: str | None) -> tuple[str, tuple[str, ...]]:
    """A writer reply as the paragraph to keep, and the fallbacks taken ("" if none is left).

    Raises `ModelError` when the model spent its whole length limit reasoning.
    """
    paragraph = clean_paragraph(raw, instruction)
    fallbacks: tuple[str, ...] = ()
    if paragraph and finish_reason == "length" and ends_mid_sentence(paragraph):
        trimmed = trim_to_last_sentence(paragraph)
        if trimmed != paragraph:
            paragraph, fallbacks = trimmed, (fallback_sentences.PARAGRAPH_CUT,)
        else:
            fallbacks = (fallback_sentences.PARAGRAPH_CUT_KEPT,)
    if not paragraph and finish_reason == "length" and has_reasoning_tag(raw):
        raise ModelError(fallback_sentences.ONLY_REASONING)  # asking again would only reason again
    return paragraph, fallbacks


class Engine:
    """The headless story engine shared by every front end."""

    def __init__(
        self,
        store: StoryStore,
        backend: ModelBackend,
        embedder: Embedder,
        config: EngineConfig | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.embedder = embedder
        self.config = config or EngineConfig()
        # Reads `self.config` on every call: settings saved between steps apply to the next one.
        self.calls = ModelCalls(backend, lambda: self.config)
        self.recall_index = RecallIndex(store, embedder.name)
        self.bible = BibleActivator(store, embedder, lambda: self.config)
        self._branch_cache: dict[str, tuple[str, list[str]]] = {}
        self._branch_lock = threading.Lock()
        # Commits under way by story: a cancelled step's commit still finishes (see `step`).
        self._commits_in_flight: dict[str, asyncio.Future] = {}

    # ---- stories -------------------------------------------------------------------

    async def start_story(
        self,
        premise: str,
        genre: str = "",
        *,
        title: str | None = None,
        outline: str | None = None,
        readable: bool = False,
        reader_may_extend: bool = False,
    ) -> tuple[Story, tuple[str, ...]]:
        """Create a story; the model writes its title and outline unless both are given.

        Returns the story and the fallbacks taken (as sentences for the user).
        """
        premise = _clean_text(premise, "premise")
        fallbacks: tuple[str, ...] = ()
        if (title is None or outline is None) and self.backend.info.prose_only:
            title = title or title_from_premise(premise)
            outline = premise if outline is None else outline
            fallbacks = (fallback_sentences.PROSE_ONLY_OPENING,)
        elif title is None or outline is None:
            fitter = self.fitter(None)
            opening_prompt = fitter.opening(premise, genre)
            opening = await self._ask_structured("opening", opening_prompt, fitter)
            parsed = parse_opening(opening.text or "", cut_off=opening.cut_off)
            fallbacks_list = []
            if opening_prompt.context[0].trimmed_chars:
                fallbacks_list.append(fallback_sentences.PREMISE_TRIMMED)
            if title is None:
                title = parsed.title or title_from_premise(premise)
                if not parsed.title:
                    fallbacks_list.append(fallback_sentences.TITLE_FROM_PREMISE)
            if outline is None:
                outline = parsed.outline or premise
                if not parsed.outline:
                    fallbacks_list.append(fallback_sentences.OUTLINE_FROM_PREMISE)
                elif parsed.truncated:
                    fallbacks_list.append(fallback_sentences.OUTLINE_CUT)
            fallbacks = tuple(fallbacks_list) + self.backend.take_notices()
        story = await asyncio.to_thread(
            self.store.create_story,
            title=title.strip(),
            premise=premise,
            genre=genre.strip(),
            outline=outline.strip(),
            readable=readable,
            reader_may_extend=reader_may_extend,
        )
        return story, fallbacks

    # ---- the step ------------------------------------------------------------------

    async def step(
        self,
        story_id: str,
        instruction: str | None = None,
        *,
        parent_step_id: str | None | Literal["head"] = "head",
        branch_owner: str | None = None,
        move_head: bool = True,
    ) -> AsyncIterator[StepEvent]:
        """Write the next paragraph after `parent_step_id` (default: the story's head).

        `instruction` is one of the three candidates, an edited one, or the person's own;
        None means the opening instruction for an empty story. Yields events; the last one is
        `StepCompleted`. Raises `ModelError` (nothing stored) if the model fails for good.
        """
        plan = await self.plan_step(story_id, instruction, parent_step_id)
        yield plan.started()

        usage = Usage()
        # A paragraph that degenerates (copies, loops, leaks markup, is empty) is written again.
        guard = ParagraphGuard(plan.prompt, self.config.degeneration)
        cuts = 0
        ends_chapter: dict[str, bool] = {}  # by attempt: whether the model marked a chapter's end
        while not guard.settled:
            yield PhaseChanged("writing")
            raw, shown, finish_reason = "", "", None
            sampling = guard.sampling(self.calls.sampling("writer"))
            try:
                async for chunk in self.backend.stream(self.calls.request("writer", plan.prompt, sampling=sampling)):
                    if chunk.usage:
                        usage += chunk.usage
                    finish_reason = chunk.finish_reason or finish_reason
                    if not chunk.text:
                        continue
                    raw += chunk.text
                    # Reasoning and template tokens never reach the screen.
                    visible = streamed_prose(raw)
                    if not visible.startswith(shown):
                        # A lone </think>: what was shown so far was reasoning. Start over.
                        yield PhaseChanged("writing")
                        shown = ""
                    if len(visible) > len(shown):
                        delta, shown = visible[len(shown) :], visible
                        yield ParagraphDelta(delta, shown)
            except ModelError as error:
                cuts += 1
                if not isinstance(error, StreamInterrupted) or cuts == self.config.step_attempts:
                    raise
                log.warning("paragraph stream was cut; writing it again (%s)", error)
                continue
            prose, marked = split_scene_break(raw)
            attempt = finished_paragraph(prose, plan.instruction, finish_reason)
            ends_chapter[attempt[0]] = marked
            guard.judge(*attempt)
        paragraph, paragraph_fallbacks = guard.outcome()
        if guard.kept_an_earlier_attempt:  # not the one just shown: show it again
            yield PhaseChanged("writing")
            yield ParagraphDelta(paragraph, paragraph)

        yield PhaseChanged("remembering")
        remembered = await self.remember(plan, paragraph)
        usage = usage + remembered.usage
        yield PhaseChanged("committing")
        step, fallbacks = await self.commit(
            plan, paragraph, remembered, paragraph_fallbacks, branch_owner=branch_owner, move_head=move_head
        )
        yield StepCompleted(
            step, usage, fallbacks, chapter_ends=ends_chapter.get(paragraph, False), bible_updates=remembered.bible,
            contradictions=remembered.contradictions,
        )

    async def plan_step(
        self, story_id: str, instruction: str | None, parent_step_id: str | None | Literal["head"] = "head"
    ) -> StepPlan:
        """What the next paragraph after `parent_step_id` is written from: the instruction
        (checked), the memories it recalls, and the writer's prompt within the budget."""
        story = await asyncio.to_thread(self.store.get_story, story_id)
        parent_id = story.head_step_id if parent_step_id == "head" else parent_step_id
        previous = await asyncio.to_thread(self.store.get_step, parent_id) if parent_id else None
        if instruction is None:
            instruction = OPENING_INSTRUCTION if previous is None else previous.next_instructions[0]
        instruction = _clean_text(instruction, "instruction", MAX_INSTRUCTION_CHARS)
        short_term_memory = previous.short_term_memory if previous else ""
        recalled, bible = await asyncio.to_thread(
            self._recall_and_activate, story_id, instruction, short_term_memory, previous
        )
        fitter = self.fitter(story_id)
        chapters = await asyncio.to_thread(self._chapter_lines, story_id, parent_id)
        prompt = fitter.writer(
            story, instruction, short_term_memory, recalled, previous.paragraph if previous else "",
            bible=bible.text if bible else "", chapters=chapters,
        )
        return StepPlan(
            story, parent_id, instruction, short_term_memory, tuple(recalled), fitter, prompt,
            self.backend.prompt_tokens(prompt), settle(bible, prompt) if bible else None,
        )

    async def remember(self, plan: StepPlan, paragraph: str) -> Remembered:
        """The paragraph's embedding, the new short-term memory and the next three instructions
        (asked of the model, or derived from the paragraph for a prose-only model)."""
        if self.backend.info.prose_only:
            vector = await asyncio.to_thread(lambda: self.embedder.embed([paragraph])[0])
            outputs = outputs_from_paragraph(
                old_memory=plan.short_term_memory, paragraph=paragraph, outline=plan.story.outline
            )
            # Said only where a bible is in use: a story without one loses nothing.
            has_bible = bool(await asyncio.to_thread(self.store.list_entries, plan.story.id))
            return Remembered(vector, outputs, Usage(), (), notes=(fallback_sentences.PROSE_ONLY_BIBLE,) if has_bible else ())
        return await self._remember_and_plan(plan, paragraph)

    async def commit(
        self,
        plan: StepPlan,
        paragraph: str,
        remembered: Remembered,
        paragraph_fallbacks: tuple[str, ...] = (),
        *,
        branch_owner: str | None = None,
        move_head: bool = True,
    ) -> tuple[Step, tuple[str, ...]]:
        """Store the paragraph as a step after the plan's parent, in one transaction; the step
        and the fallbacks it took. Once it starts it finishes, even if the caller is cancelled
        meanwhile: a half-known outcome would be worse than a step that landed."""
        fallbacks = (
            paragraph_fallbacks + remembered.outputs.fallbacks + remembered.notes + self.backend.take_notices()
        )
        new_step = NewStep(
            story_id=plan.story.id,
            parent_id=plan.parent_id,
            instruction=plan.instruction,
            paragraph=paragraph,
            short_term_memory=remembered.outputs.short_term_memory,
            memory_reason=remembered.outputs.memory_reason,
            next_instructions=remembered.outputs.instructions,
            backend=self.backend.info.name,
            model=self.backend.info.model,
            fallbacks=fallbacks,
            branch_owner=branch_owner,
            # Stored with the step, so the context viewer can show it for any paragraph later.
            context=record_step_context(
                plan.prompt.context,
                plan.recalled,
                template=plan.prompt.template,
                budget_tokens=plan.fitter.budget_tokens,
                prompt_tokens=plan.prompt_tokens,
                trimmed_elsewhere=remembered.trimmed,
                bible=plan.bible,
                contradictions=remembered.contradictions,
            ),
        )
        story_id = plan.story.id
        commit = asyncio.ensure_future(asyncio.to_thread(self._commit, new_step, remembered.vector, move_head))
        self._commits_in_flight[story_id] = commit
        commit.add_done_callback(lambda done: self._forget_commit(story_id, done))
        return await asyncio.shield(commit), fallbacks

    async def _remember_and_plan(self, plan: StepPlan, paragraph: str) -> Remembered:
        """The paragraph's embedding, the model's new memory and three instructions, the bible
        updates the memory reply proposed (checked), and what their prompts had trimmed to fit
        the budget: (role, section, characters)."""
        story, short_term_memory, fitter = plan.story, plan.short_term_memory, plan.fitter
        bible = next((s.text for s in plan.prompt.context if s.name == STORY_BIBLE), "")
        known = await asyncio.to_thread(self._bible_before, plan)
        memory_prompt = fitter.memory(plan.instruction, short_term_memory, paragraph, known.prompt_text)
        planner_prompt = fitter.planner(story, short_term_memory, paragraph, bible)
        # A finished paragraph is worth keeping even if these calls fail for good: the
        # resolver then keeps the old memory or derives instructions, and says so.
        # The paragraph's embedding is computed while the model works on memory and plans.
        check_continuity = self.config.continuity_checks
        paragraph_vector, memory_reply, planner_reply, continuity = await asyncio.gather(
            asyncio.to_thread(lambda: self.embedder.embed([paragraph])[0]),
            self._ask_structured("memory", memory_prompt, fitter, give_up_quietly=True),
            self._ask_structured("planner", planner_prompt, fitter, give_up_quietly=True),
            check_paragraph(self._ask_structured, fitter, plan.bible, known.facts, paragraph,
                            entries=known.entries, paragraph_number=known.paragraph)
            if check_continuity else _not_checked(),
        )
        outputs = resolve_step_outputs(
            memory_reply=memory_reply.text,
            planner_reply=planner_reply.text,
            old_memory=short_term_memory,
            paragraph=paragraph,
            outline=story.outline,
            memory_cut_off=memory_reply.cut_off,
            planner_cut_off=planner_reply.cut_off,
        )
        trimmed = tuple(
            (prompt.role, section.name, section.trimmed_chars)
            for prompt in (memory_prompt, planner_prompt)
            for section in prompt.context
            if section.trimmed_chars
        )
        parsed = parse_bible_updates(memory_reply.text)
        proposals = check_proposals(parsed, known.entries, known.facts, known.paragraph)
        return Remembered(
            paragraph_vector, outputs, memory_reply.usage + planner_reply.usage + continuity.usage, trimmed,
            bible=proposals, notes=proposals.dropped_reasons + continuity.notes,
            contradictions=continuity.contradictions,
        )

    def _bible_before(self, plan: StepPlan) -> "BibleBefore":
        """The bible as the new paragraph (numbered here) found it: for the memory prompt, and
        to check what its reply proposes."""
        story_id = plan.story.id
        paragraph = len(self._branch_ids(story_id, plan.parent_id)) + 1 if plan.parent_id else 1
        entries = self.store.list_entries(story_id)
        facts = self.store.facts_on_branch(story_id, plan.parent_id) if entries else []
        active = {entry.entry_id for entry in plan.bible.sent} if plan.bible else set()
        shown = [entry for entry in entries if entry.id in active]
        text = bible_facts_for_memory(shown, facts, paragraph) if shown else ""
        return BibleBefore(entries, facts, paragraph, text)

    async def wait_for_commit(self, story_id: str) -> Step | None:
        """The step a cancelled `step` of this story was committing, once it has landed.

        None if no commit was under way, or if it failed (the step then left storage as it was).
        """
        commit = self._commits_in_flight.get(story_id)
        if commit is None:
            return None
        try:
            return await asyncio.shield(commit)
        except Exception:  # the failure was the step's to report; nothing landed
            return None

    def _forget_commit(self, story_id: str, done: asyncio.Future) -> None:
        if self._commits_in_flight.get(story_id) is done:
            del self._commits_in_flight[story_id]

    async def run_step(self, story_id: str, instruction: str | None = None, **kwargs) -> StepCompleted:
        """Run a step to completion and return its final event (for scripts and batch)."""
        completed = None
        async for event in self.step(story_id, instruction, **kwargs):
            if isinstance(event, StepCompleted):
                completed = event
        assert completed is not None
        return completed

    async def choose_instruction(
        self, step: Step, how: Literal["first", "random", "model"], rng: random.Random
    ) -> tuple[str, str | None]:
        """Pick one of a step's three instructions, as RecurrentGPT's auto mode does.

        Returns the instruction and a fallback sentence if the model's choice was unreadable.
        """
        options = step.next_instructions
        if how == "first":
            return options[0], None
        if how == "random":
            return rng.choice(options), None
        if self.backend.info.prose_only:
            return options[0], fallback_sentences.PROSE_ONLY_CHOICE
        fitter = self.fitter(step.story_id)
        prompt = fitter.chooser(step.short_term_memory, step.paragraph, options)
        reply = await self._ask_structured("chooser", prompt, fitter)
        choice = parse_choice(reply.text or "")
        if choice is None or not 1 <= choice <= len(options):
            return options[0], fallback_sentences.CHOICE_UNREADABLE
        return options[choice - 1], None

    async def story(self, story_id: str) -> Story:
        """The story as stored now."""
        return await asyncio.to_thread(self.store.get_story, story_id)

    async def previous_step(self, step: Step) -> Step | None:
        """The step before `step` in its branch (None for a story's first paragraph)."""
        return await asyncio.to_thread(self.store.get_step, step.parent_id) if step.parent_id else None

    # ---- edits that keep long-term memory in step -----------------------------------

    async def edit_paragraph(self, step_id: str, paragraph: str) -> Step:
        paragraph = _clean_text(paragraph, "paragraph")
        vector = (await asyncio.to_thread(self.embedder.embed, [paragraph]))[0]
        return await asyncio.to_thread(
            self.store.edit_paragraph, step_id, paragraph, embedding=vector, embedding_model=self.embedder.name
        )

    async def search_memories_by_meaning(
        self, story_id: str, text: str, *, k: int = 10, head_step_id: str | None = None
    ) -> list[RecalledMemory]:
        """Memories of the current branch most similar in meaning to `text`, with scores."""
        story = await asyncio.to_thread(self.store.get_story, story_id)
        head = head_step_id or story.head_step_id
        if head is None:
            return []
        branch_ids = await asyncio.to_thread(self._branch_ids, story_id, head)
        query = (await asyncio.to_thread(self.embedder.embed, [text]))[0]
        return await asyncio.to_thread(
            self.recall_index.recall, story_id, query, k=k, branch_step_ids=branch_ids
        )

    # ---- internals -----------------------------------------------------------------

    def _branch_ids(self, story_id: str, head_step_id: str) -> list[str]:
        """Step ids from the root to `head_step_id`, cached per story.

        Walking a 10,000-step tree costs tens of milliseconds, and each step only extends the
        branch the previous one walked, so the common case is a cache hit.
        """
        with self._branch_lock:
            cached = self._branch_cache.get(story_id)
            if cached is not None and cached[0] == head_step_id:
                return list(cached[1])
        ids = self.store.branch_step_ids(story_id, head_step_id)
        with self._branch_lock:
            self._branch_cache[story_id] = (head_step_id, ids)
        return list(ids)

    def _chapter_lines(self, story_id: str, parent_id: str | None) -> list[str]:
        """The writer prompt's Chapters section, line by line (see chapter_memory); none for a
        story without chapters, whose prompt stays as it was."""
        if not self.store.list_chapters(story_id):
            return []
        paragraphs = len(self._branch_ids(story_id, parent_id)) if parent_id else 0
        return chapter_lines(self.store, story_id, parent_id, paragraphs)

    def _recall_and_activate(
        self, story_id: str, instruction: str, short_term_memory: str, previous: Step | None
    ) -> tuple[list[RecalledMemory], BibleSection | None]:
        """The memories the instruction recalls, and the story bible section (see
        bible_activation); one embedding of the instruction serves both."""
        branch_ids = self._branch_ids(story_id, previous.id) if previous else []
        query = self.embedder.embed([instruction])[0] if previous is not None else None
        entries = self.store.list_entries(story_id)
        if query is None and self.bible.wants_query(entries):
            query = self.embedder.embed([instruction])[0]
        recalled = []
        if previous is not None:
            recalled = self.recall_index.recall(
                story_id,
                query,
                k=self.config.recall_k,
                branch_step_ids=branch_ids,
                exclude_step_ids={previous.id},  # the previous paragraph is in the prompt already
            )
        bible = self.bible.activate(
            story_id, entries, instruction=instruction, short_term_memory=short_term_memory,
            previous=previous, branch_ids=branch_ids, query=query, count_tokens=self.backend.count_tokens,
        )
        return recalled, bible

    def _commit(self, new_step: NewStep, vector: np.ndarray, move_head: bool) -> Step:

        step = self.store.commit_step(
            new_step, embedding=vector, embedding_model=self.embedder.name, move_head=move_head
        )
        with self._branch_lock:
            cached = self._branch_cache.get(new_step.story_id)
            if cached is not None and cached[0] == new_step.parent_id:
                self._branch_cache[new_step.story_id] = (step.id, [*cached[1], step.id])
        version = self.store.memory_version(new_step.story_id)
        entry = self.store.memory_for_step(step.id)
        if entry is not None:
            self.recall_index.note_commit(new_step.story_id, entry, vector, version)
        return step

    def fitter(self, story_id: str | None) -> PromptFitter:
        """Builds this story's prompts within the context budget (see `role_prompts`)."""
        return self.calls.fitter(story_id)

    async def _ask_structured(
        self, role: str, prompt: Prompt, fitter: PromptFitter, *, give_up_quietly: bool = False
    ):  # noqa: ANN202 - a RoleReply
        return await self.calls.ask_structured(role, prompt, fitter, give_up_quietly=give_up_quietly)


async def _not_checked() -> ContinuityOutcome:
    return ContinuityOutcome(None, Usage())


def _clean_text(text: str, what: str, limit: int | None = None) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"The {what} is empty; nothing was changed; write a few words and try again.")
    text = "".join(ch for ch in text if ch in "\n\t" or ch >= " ").strip()
    if limit is not None and len(text) > limit:
        raise InvalidInput(
            f"The {what} is {len(text)} characters long, more than the {limit} allowed; "
            f"nothing was changed; shorten it and try again."
        )
    return text

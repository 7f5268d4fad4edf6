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
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal

import numpy as np

from . import prompts
from .backends.base import GenerationRequest, ModelBackend
from .context import (
    PREVIOUS_PARAGRAPH,
    RECALLED_PASSAGES,
    SHORT_TERM_MEMORY,
    STORY_BIBLE,
    TRIMMED_FROM_START,
    record_step_context,
    recalled_passages_text,
    story_bible_text,
    trim_text,
)
from .embeddings import Embedder
from .errors import InvalidInput, ModelError, StreamInterrupted
from .memory import RecallIndex
from .replies import fallbacks as fallback_sentences
from .replies.bible import parse_bible, title_from_premise
from .replies.chooser import parse_choice
from .replies.clean import has_reasoning_tag, streamed_prose
from .replies.roles import JSON_SCHEMAS, describe_problem
from .replies.sentences import ends_mid_sentence, trim_to_last_sentence
from .replies.writer import clean_paragraph
from .step_outputs import StepOutputs, outputs_from_paragraph, resolve_step_outputs
from .store import StoryStore
from .types import (
    ContextSection,
    MemoryEntry,
    NewStep,
    ParagraphDelta,
    PhaseChanged,
    Prompt,
    RecalledMemory,
    Role,
    Sampling,
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


def default_sampling() -> dict[Role, Sampling]:
    """Per-role sampling: a freer writer, a steadier memory keeper and planner.

    max_tokens is a ceiling, not a target: the prompts ask for about 220 words of prose, 150 of
    memory. It leaves room for stories outside English, where a word can cost 3-4 tokens
    (Cyrillic or CJK text on Llama-3 or Mistral tokenizers).
    """
    return {
        "bible": Sampling(temperature=0.9, max_tokens=1200),
        "writer": Sampling(temperature=0.9, top_p=0.95, max_tokens=900),
        "memory": Sampling(temperature=0.3, max_tokens=800),
        "planner": Sampling(temperature=0.8, max_tokens=600),
        "chooser": Sampling(temperature=0.2, max_tokens=20),
    }


@dataclass
class EngineConfig:
    recall_k: int = 3
    parse_retries: int = 2  # repair prompts after an unreadable memory/planner/bible reply
    step_attempts: int = 2  # whole-step retries when a paragraph's stream is cut
    context_budget_tokens: int = 3000  # per prompt; recalled passages are trimmed first
    sampling: dict[str, Sampling] = field(default_factory=default_sampling)


@dataclass(frozen=True)
class _RoleReply:
    text: str | None  # None: no readable reply after the retries
    usage: Usage
    cut_off: bool = False  # the reply hit max_tokens (finish_reason "length")


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
        self.recall_index = RecallIndex(store, embedder.name)
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
            fallbacks = (fallback_sentences.PROSE_ONLY_BIBLE,)
        elif title is None or outline is None:
            bible = await self._ask_structured("bible", self._bible_prompt(premise, genre))
            parsed = parse_bible(bible.text or "", cut_off=bible.cut_off)
            fallbacks_list = []
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
        story = await asyncio.to_thread(self.store.get_story, story_id)
        parent_id = story.head_step_id if parent_step_id == "head" else parent_step_id
        previous = await asyncio.to_thread(self.store.get_step, parent_id) if parent_id else None
        if instruction is None:
            instruction = OPENING_INSTRUCTION if previous is None else previous.next_instructions[0]
        instruction = _clean_text(instruction, "instruction", MAX_INSTRUCTION_CHARS)

        short_term_memory = previous.short_term_memory if previous else ""
        previous_paragraph = previous.paragraph if previous else ""

        recalled = await asyncio.to_thread(self._recall, story_id, instruction, parent_id)
        writer_prompt = self._writer_prompt(story, instruction, short_term_memory, recalled, previous_paragraph)
        yield StepStarted(story_id, instruction, writer_prompt.context, tuple(recalled))

        usage = Usage()
        paragraph = ""
        paragraph_fallbacks: tuple[str, ...] = ()
        for attempt in range(1, self.config.step_attempts + 1):
            yield PhaseChanged("writing")
            raw, shown, finish_reason = "", "", None
            try:
                async for chunk in self.backend.stream(self._request("writer", writer_prompt)):
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
                if not isinstance(error, StreamInterrupted) or attempt == self.config.step_attempts:
                    raise
                log.warning("paragraph stream was cut; writing it again (%s)", error)
                continue
            paragraph = clean_paragraph(raw, instruction)
            if paragraph and finish_reason == "length" and ends_mid_sentence(paragraph):
                trimmed = trim_to_last_sentence(paragraph)
                if trimmed != paragraph:
                    paragraph, paragraph_fallbacks = trimmed, (fallback_sentences.PARAGRAPH_CUT,)
                else:
                    paragraph_fallbacks = (fallback_sentences.PARAGRAPH_CUT_KEPT,)
            if paragraph:
                break
            if finish_reason == "length" and has_reasoning_tag(raw):
                # Asking again would only reason again.
                raise ModelError(fallback_sentences.ONLY_REASONING)
            if attempt == self.config.step_attempts:
                raise ModelError(fallback_sentences.EMPTY_PARAGRAPH_TWICE)

        yield PhaseChanged("remembering")
        if self.backend.info.prose_only:
            paragraph_vector = await asyncio.to_thread(lambda: self.embedder.embed([paragraph])[0])
            outputs = outputs_from_paragraph(
                old_memory=short_term_memory, paragraph=paragraph, outline=story.outline
            )
        else:
            paragraph_vector, outputs, memory_and_plan_usage = await self._remember_and_plan(
                story, instruction, short_term_memory, paragraph
            )
            usage = usage + memory_and_plan_usage
        fallbacks = paragraph_fallbacks + outputs.fallbacks + self.backend.take_notices()

        yield PhaseChanged("committing")
        new_step = NewStep(
            story_id=story_id,
            parent_id=parent_id,
            instruction=instruction,
            paragraph=paragraph,
            short_term_memory=outputs.short_term_memory,
            memory_reason=outputs.memory_reason,
            next_instructions=outputs.instructions,
            backend=self.backend.info.name,
            model=self.backend.info.model,
            fallbacks=fallbacks,
            branch_owner=branch_owner,
            # Stored with the step, so the context viewer can show it for any paragraph later.
            context=record_step_context(writer_prompt.context, recalled),
        )
        # Once committing starts it finishes, even if the caller is cancelled meanwhile:
        # a half-known outcome would be worse than a step that landed.
        commit = asyncio.ensure_future(asyncio.to_thread(self._commit, new_step, paragraph_vector, move_head))
        self._commits_in_flight[story_id] = commit
        commit.add_done_callback(lambda done: self._forget_commit(story_id, done))
        step = await asyncio.shield(commit)
        yield StepCompleted(step, usage, fallbacks)

    async def _remember_and_plan(
        self, story: Story, instruction: str, short_term_memory: str, paragraph: str
    ) -> tuple[np.ndarray, StepOutputs, Usage]:
        """The paragraph's embedding, and the model's new memory and three instructions."""
        # A finished paragraph is worth keeping even if these calls fail for good: the
        # resolver then keeps the old memory or derives instructions, and says so.
        # The paragraph's embedding is computed while the model works on memory and plans.
        paragraph_vector, memory_reply, planner_reply = await asyncio.gather(
            asyncio.to_thread(lambda: self.embedder.embed([paragraph])[0]),
            self._ask_structured(
                "memory",
                self._memory_prompt(story, instruction, short_term_memory, paragraph),
                give_up_quietly=True,
            ),
            self._ask_structured(
                "planner",
                self._planner_prompt(story, short_term_memory, paragraph),
                give_up_quietly=True,
            ),
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
        return paragraph_vector, outputs, memory_reply.usage + planner_reply.usage

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
        prompt = prompts.render_prompt(
            "chooser",
            context_sections=(
                ContextSection("Short-term memory", step.short_term_memory, 0),
                ContextSection("Latest paragraph", step.paragraph, 0),
            ),
            instructions="\n".join(f"{i}. {text}" for i, text in enumerate(options, 1)),
        )
        reply = await self._ask_structured("chooser", prompt)
        choice = parse_choice(reply.text or "")
        if choice is None or not 1 <= choice <= len(options):
            return options[0], fallback_sentences.CHOICE_UNREADABLE
        return options[choice - 1], None

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

    def _recall(self, story_id: str, instruction: str, parent_id: str | None) -> list[RecalledMemory]:
        if parent_id is None:
            return []
        branch_ids = self._branch_ids(story_id, parent_id)
        query = self.embedder.embed([instruction])[0]
        return self.recall_index.recall(
            story_id,
            query,
            k=self.config.recall_k,
            branch_step_ids=branch_ids,
            exclude_step_ids={parent_id},  # the previous paragraph is in the prompt already
        )

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

    def _request(
        self, role: str, prompt: Prompt, json_schema: dict | None = None, *, token_scale: int = 1
    ) -> GenerationRequest:
        sampling = self.config.sampling.get(role) or Sampling()
        if token_scale > 1:
            sampling = sampling.model_copy(
                update={"max_tokens": min(32768, sampling.max_tokens * token_scale)}
            )
        return GenerationRequest(prompt=prompt, sampling=sampling, json_schema=json_schema)

    async def _complete(self, request: GenerationRequest) -> tuple[str, Usage, bool]:
        """The whole reply, its usage, and whether max_tokens cut it off."""
        text, usage, cut_off = "", Usage(), False
        for attempt in range(1, self.config.step_attempts + 1):
            text, usage, cut_off = "", Usage(), False
            try:
                async for chunk in self.backend.stream(request):
                    text += chunk.text
                    if chunk.usage:
                        usage += chunk.usage
                    if chunk.finish_reason:
                        cut_off = chunk.finish_reason == "length"
                return text, usage, cut_off
            except ModelError as error:
                if not isinstance(error, StreamInterrupted) or attempt == self.config.step_attempts:
                    raise
        return text, usage, cut_off

    async def _ask_structured(self, role: str, prompt: Prompt, *, give_up_quietly: bool = False) -> _RoleReply:
        """Ask a role for structured output; repair unreadable replies a bounded number of times.

        With `give_up_quietly`, a model that fails for good yields no reply instead of an error.
        """
        schema = JSON_SCHEMAS.get(role)
        request = self._request(role, prompt, schema)
        usage = Usage()
        token_scale = 1
        cut_text: str | None = None  # the latest reply cut off by max_tokens: its complete part is usable
        for _ in range(self.config.parse_retries + 1):
            try:
                text, call_usage, cut_off = await self._complete(request)
            except ModelError as error:
                if cut_text is not None:
                    # Asking again failed (e.g. the larger max_tokens overran the context): keep
                    # what the cut reply gave; the resolvers say it was cut.
                    log.warning("asking the %s again failed; using its cut reply (%s)", role, error)
                    return _RoleReply(cut_text, usage, True)
                if not give_up_quietly:
                    raise
                log.warning("the %s call failed; using its fallback (%s)", role, error)
                return _RoleReply(None, usage)
            usage += call_usage
            problem = describe_problem(role, text, cut_off=cut_off)
            if problem is None:
                return _RoleReply(text, usage, cut_off)
            if cut_off and text.strip():
                cut_text = text
            log.info("unreadable %s reply (%s); asking again", role, problem)
            if cut_off:
                token_scale *= 2  # the same limit would cut the answer again
            request = self._request(
                role, self._repair_prompt(prompt, text, problem), schema, token_scale=token_scale
            )
        if cut_text is not None and not cut_off:
            # A cut reply beats a later one that could not be read at all ("I'm sorry ...").
            return _RoleReply(cut_text, usage, True)
        # The last reply may still hold usable parts; the resolvers decide and say so.
        return _RoleReply(text if text.strip() else None, usage, cut_off)

    def _section(self, name: str, text: str) -> ContextSection:
        return ContextSection(name, text, self.backend.count_tokens(text))

    def _story_bible(self, story: Story) -> ContextSection:
        return self._section(STORY_BIBLE, story_bible_text(story))

    def _fit(self, sections: list[ContextSection], trim_order: list[str]) -> tuple[ContextSection, ...]:
        """Trim sections in `trim_order` (tail first) until the prompt fits the token budget."""
        budget = self.config.context_budget_tokens
        sections = list(sections)
        for name in trim_order:
            total = sum(s.tokens for s in sections)
            if total <= budget:
                break
            for i, section in enumerate(sections):
                if section.name != name or not section.text:
                    continue
                excess_tokens = total - budget
                keep_tokens = max(0, section.tokens - excess_tokens)
                keep_chars = int(len(section.text) * keep_tokens / max(1, section.tokens))
                kept = trim_text(section.text, keep_chars, from_start=name in TRIMMED_FROM_START)
                sections[i] = ContextSection(
                    name,
                    kept,
                    self.backend.count_tokens(kept),
                    section.trimmed_chars + len(section.text) - len(kept),
                )
        return tuple(sections)

    def _bible_prompt(self, premise: str, genre: str) -> Prompt:
        return prompts.render_prompt("bible", context_sections=(), premise=premise, genre=genre or "any")

    def _writer_prompt(
        self,
        story: Story,
        instruction: str,
        short_term_memory: str,
        recalled: list[RecalledMemory],
        previous_paragraph: str,
    ) -> Prompt:
        # Most relevant first, so that trimming from the tail drops the weakest recollections.
        # longyarn.recurrent_core.context rebuilds these sections from the same sources for the viewer.
        sections = [
            self._story_bible(story),
            self._section(SHORT_TERM_MEMORY, short_term_memory),
            self._section(RECALLED_PASSAGES, recalled_passages_text(recalled)),
            self._section(PREVIOUS_PARAGRAPH, previous_paragraph),
        ]
        context = self._fit(sections, [RECALLED_PASSAGES, STORY_BIBLE, PREVIOUS_PARAGRAPH, SHORT_TERM_MEMORY])
        return prompts.render_prompt("writer", context_sections=context, instruction=instruction)

    def _memory_prompt(self, story: Story, instruction: str, short_term_memory: str, paragraph: str) -> Prompt:
        sections = [
            self._section("Short-term memory", short_term_memory or "(empty: this is the story's start)"),
            self._section("New paragraph", paragraph),
        ]
        context = self._fit(sections, ["Short-term memory"])
        return prompts.render_prompt("memory", context_sections=context, instruction=instruction)

    def _planner_prompt(self, story: Story, short_term_memory: str, paragraph: str) -> Prompt:
        sections = [
            self._story_bible(story),
            self._section("Short-term memory", short_term_memory),
            self._section("New paragraph", paragraph),
        ]
        context = self._fit(sections, ["Story bible", "Short-term memory"])
        return prompts.render_prompt("planner", context_sections=context)

    def _repair_prompt(self, original: Prompt, reply: str, problem: str) -> Prompt:
        repair = prompts.render_prompt(
            "repair",
            context_sections=original.context,
            problem=problem,
            previous_reply=reply[-2000:],
            original_task=original.task,
            output_format=original.output_format,
        )
        return Prompt(
            role=original.role,
            system=original.system,
            task=repair.task,
            context=original.context,
            output_format=repair.output_format or original.output_format,
        )


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

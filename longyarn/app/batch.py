"""`longyarn batch`: whole novels with no one at the keyboard.

Each paragraph is committed as it is written, so a run stopped at any moment (Ctrl+C, a crash,
a reboot) resumes with `--resume ID` and loses nothing that was committed. Several premises run
concurrently against the same server. This module never imports textual.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from longyarn.recurrent_core.engine import Engine
from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.replies.fallbacks import fallbacks_to_tell
from longyarn.recurrent_core.types import StepCompleted

from .batch_chapters import ChapterKeeper
from .export import bible_and_chapters, render_story, write_atomically
from .session.choosing import DEFAULT_CHOICE, Choose
from .session.engine_host import EngineHost
from .session.writing import RunInstruction, WritingSession

OUT_REFRESH_S = 30.0


@dataclass(frozen=True)
class NovelJob:
    premise: str | None = None
    genre: str = ""
    resume_id: str | None = None
    out: Path | None = None
    out_dir: Path | None = None  # write the novel to <out_dir>/<story id>.md
    chapter_every: int = 0  # end a chapter every N paragraphs, or at a scene break (0: no chapters)


@dataclass
class NovelOutcome:
    story_id: str
    paragraphs: int
    out: Path | None


@dataclass
class BibleTally:
    """A novel's story bible updates: proposed by its steps, accepted, and dropped (each with
    its sentence in the step's record, or, refused when accepted, said here)."""

    proposed: int = 0
    accepted: int = 0
    dropped: int = 0
    contradictions: int = 0  # found by the continuity checks (each stored with its step)

    async def count(self, event: StepCompleted, session: WritingSession, reporter: "Reporter", where: str) -> None:
        for found in event.contradictions or ():
            self.contradictions += 1
            reporter.progress(
                f"{where} may contradict {found.entry_name}'s fact {found.fact!r}: {found.sentence!r}"
            )
        proposals = event.bible_updates
        if proposals is None:
            return
        self.proposed += len(proposals.updates)
        self.dropped += len(proposals.dropped)
        refused = [u for u in session.bible.pending if u.step_id == event.step.id and u.id in session.bible.problems]
        for update in refused:  # auto-accept could not apply it: said, and counted as dropped
            reporter.progress(f"{where} story bible: {update.describe()} was not accepted: {session.bible.problems[update.id]}")
            await session.bible.reject(update)
        self.dropped += len(refused)
        self.accepted += len(proposals.updates) - len(refused)

    def summary(self) -> str:
        return (
            f"{self.accepted} updates accepted, {self.dropped} dropped (each with its reason in the paragraph's "
            f"record); {self.contradictions} possible contradictions (see longyarn report)"
        )


class Reporter:
    """Prints `story ID` lines to stdout (scripts read them) and progress to stderr."""

    def __init__(self, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr, quiet: bool = False):
        self.stdout, self.stderr, self.quiet = stdout, stderr, quiet
        self._model_fallbacks_told: set[str] = set()

    def fallback(self, where: str, sentence: str, story_id: str | None = None) -> None:
        """A fallback a step took; one that describes the model (such as a prose-only model's)
        is said once a run, not with every paragraph."""
        for fresh in fallbacks_to_tell([sentence], self._model_fallbacks_told):
            self.progress(f"{where} fallback: {fresh}")

    def novel_started(self, story_id: str, title: str, done: int, total: int, words: int) -> None:
        """A novel is begun or resumed with `done` of its `total` paragraphs (`words` words)."""
        if done >= total:
            self.progress(f"[{story_id}] {title!r} already has {done} paragraphs; none written.")
        else:
            self.progress(f"[{story_id}] {title!r}: {done}/{total} paragraphs written")

    def paragraph_saved(self, story_id: str, done: int, total: int, words: int) -> None:
        """Paragraph `done` of `total` is stored; it has `words` words."""
        self.progress(f"[{story_id}] paragraph {done}/{total} saved")

    def close(self) -> None:
        """The run is over (a live display stops here)."""

    def story(self, story_id: str) -> None:
        print(f"story {story_id}", file=self.stdout, flush=True)

    def progress(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stderr, flush=True)

    def error(self, message: str) -> None:
        """Errors are shown even with --quiet."""
        print(f"error: {message}", file=self.stderr, flush=True)


async def write_novel(
    engine: Engine,
    job: NovelJob,
    *,
    paragraphs: int,
    choose: Choose = DEFAULT_CHOICE,
    seed: int = 0,
    reporter: Reporter,
    on_story: Callable[[str], None] | None = None,
) -> NovelOutcome:
    """Write (or continue) one novel until its current branch holds `paragraphs` paragraphs."""
    if paragraphs < 1:
        raise InvalidInput("--paragraphs must be at least 1; nothing was written; pass a positive number.")
    store = engine.store
    if job.resume_id:
        story = await asyncio.to_thread(store.get_story, job.resume_id)
    else:
        story, fallbacks = await engine.start_story(job.premise or "", job.genre)
        for sentence in fallbacks:
            reporter.fallback(f"[{story.id}]", sentence, story.id)
    reporter.story(story.id)
    if on_story:
        on_story(story.id)
    out = job.out or (job.out_dir / f"{story.id}.md" if job.out_dir else None)
    session = WritingSession(store, EngineHost(None, engine=engine), story.id)
    await session.reload()
    chapters = ChapterKeeper(session, job.chapter_every, reporter)
    await chapters.begin()
    words = sum(len(step.paragraph.split()) for step in session.branch)
    reporter.novel_started(story.id, story.title, len(session.branch), paragraphs, words)
    try:
        tally = await _write_paragraphs(session, paragraphs, choose, seed, reporter, out, chapters)
        if tally.proposed or tally.dropped or tally.contradictions:
            reporter.progress(f"[{story.id}] story bible: {tally.summary()}")
    except BaseException:
        # Stopped or failed: the file still gets every paragraph saved so far.
        if out and store.branch(story.id):  # no await: this may run while being cancelled
            try:
                _write_out(engine, story.id, out)
                reporter.progress(f"[{story.id}] the paragraphs written so far are in {out}")
            except Exception as error:  # the first error is the one to report
                reporter.error(f"{out} could not be written ({error}); the paragraphs are in the database.")
        raise
    if out:
        await asyncio.to_thread(_write_out, engine, story.id, out)
    return NovelOutcome(story.id, len(session.branch), out)


async def _write_paragraphs(
    session: WritingSession, paragraphs: int, choose: Choose, seed: int, reporter: Reporter, out: Path | None,
    chapters: ChapterKeeper,
) -> BibleTally:
    """Keep writing until the branch holds `paragraphs`, each instruction chosen as `choose` says;
    what the steps proposed for the story bible (auto-accepted by the session)."""
    tally = BibleTally()
    story_id, engine = session.story_id, session.host.engine
    assert engine is not None
    done = len(session.branch)
    last_written = time.monotonic()
    run = session.keep_writing(None, paragraphs - done, choose_first=True, how=choose, seed=seed)
    async for event in run:
        if isinstance(event, RunInstruction) and event.fallback:
            reporter.fallback(f"[{story_id}]", event.fallback, story_id)
        if not isinstance(event, StepCompleted):
            continue
        done += 1
        for sentence in event.fallbacks:
            reporter.fallback(f"[{story_id}] paragraph {done}", sentence, story_id)
        await tally.count(event, session, reporter, f"[{story_id}] paragraph {done}")
        reporter.paragraph_saved(story_id, done, paragraphs, len(event.step.paragraph.split()))
        await chapters.after(event)
        # The database holds every paragraph already; the file is refreshed now and then so it
        # can be read while the novel grows, without rewriting it whole after every paragraph.
        if out and time.monotonic() - last_written >= OUT_REFRESH_S:
            await asyncio.to_thread(_write_out, engine, story_id, out)
            last_written = time.monotonic()
    return tally


def check_writable(out: Path, *, folder: bool = False) -> None:
    """Fail before any paragraph is written if `out` (a file, or with `folder` a folder of
    files) cannot be written."""
    if folder and out.exists() and not out.is_dir():
        raise InvalidInput(
            f"--out {out} is a file, but --premises writes one file per novel into a folder; "
            "nothing was written; name a folder."
        )
    if not folder and out.is_dir():
        raise InvalidInput(
            f"--out {out} is a folder; nothing was written; name a file in it, such as {out / 'novel.md'}."
        )
    where = out if folder else out.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        # Try it: os.access says yes to root even where nothing can be written (/proc, read-only mounts).
        tempfile.TemporaryFile(dir=where).close()
        writable = not out.exists() or folder or os.access(out, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        raise InvalidInput(f"Cannot write to --out {out}; nothing was written; choose another --out path.")


def _write_out(engine: Engine, story_id: str, out: Path) -> None:
    story = engine.store.get_story(story_id)
    fmt = {".txt": "txt", ".json": "json"}.get(out.suffix.lower(), "md")
    extras = bible_and_chapters(engine.store, story)
    write_atomically(out, render_story(story, engine.store.branch(story_id), fmt, extras))


def read_premises(path: Path, default_genre: str = "") -> list[NovelJob]:
    """One premise per line; a line may also be JSON: {"premise": ..., "genre": ...}."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InvalidInput(
            f"Cannot read the premises file {path} ({error.strerror}); nothing was written; check the path."
        ) from None
    jobs = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                data = json.loads(line)
                premise = data["premise"]
                if not isinstance(premise, str) or not premise.strip():
                    raise TypeError("no premise")
                jobs.append(NovelJob(premise=premise, genre=str(data.get("genre", default_genre))))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InvalidInput(
                    f"Line {number} of {path} is not a premise or a JSON object with a \"premise\"; "
                    "nothing was written; fix that line."
                ) from None
        else:
            jobs.append(NovelJob(premise=line, genre=default_genre))
    if not jobs:
        raise InvalidInput(f"The premises file {path} holds no premises; nothing was written; add one per line.")
    return jobs


async def write_novels(
    engine: Engine,
    jobs: list[NovelJob],
    *,
    paragraphs: int,
    concurrency: int,
    choose: Choose,
    seed: int,
    reporter: Reporter,
    on_story: Callable[[str], None] | None = None,
) -> list[NovelOutcome | BaseException]:
    """Write several novels at once; one novel's failure does not stop the others."""
    if concurrency < 1:
        raise InvalidInput("--concurrency must be at least 1; nothing was written; pass a positive number.")
    gate = asyncio.Semaphore(concurrency)

    async def one(job: NovelJob) -> NovelOutcome:
        async with gate:
            return await write_novel(
                engine, job, paragraphs=paragraphs, choose=choose, seed=seed, reporter=reporter,
                on_story=on_story,
            )

    return await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)

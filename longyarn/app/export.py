"""Writing a story out as Markdown, plain text, JSON or Word (.docx): the current branch, in order,
under its chapters' headings (a story without chapters has none). EPUB: see epub.py."""

from __future__ import annotations

import json
import os
import re
import tempfile
import textwrap
from pathlib import Path
from typing import Literal, Mapping, Sequence

from longyarn.recurrent_core.chapter_memory import chapter_name
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Step, Story

Format = Literal["md", "txt", "json", "docx", "epub"]
TEXT_FORMATS = ("md", "txt", "json")
FORMATS = (*TEXT_FORMATS, "docx", "epub")


TEXT_WIDTH = 78

# A line of prose that Markdown would read as a heading, list item, quote, rule, code fence,
# table row or HTML block; its first marker character is escaped with a backslash.
_MD_BLOCK_START = re.compile(
    r"^(?:#{1,6}(?=\s|$)|[-+*](?=\s|$)|\d{1,9}[.)](?=\s|$)|>|`{3,}|~{3,}|=+\s*$"
    r"|[-*_](?:\s*[-*_]){2,}\s*$|\||<)"
)


def _md_line(line: str) -> str:
    line = line.strip()  # leading spaces would make an indented code block
    match = _MD_BLOCK_START.match(line)
    if match:
        cut = len(match.group(0)) - len(match.group(0).lstrip("0123456789"))  # "12." -> "12\."
        line = f"{line[:cut]}\\{line[cut:]}"
    return line.rstrip("\\")  # a trailing backslash would swallow the hard break


def _md_paragraph(paragraph: str) -> str:
    """One story paragraph as one Markdown paragraph: its lines (the model's own paragraph
    breaks and dialogue lines) kept apart by hard line breaks, nothing read as markup blocks."""
    lines = [_md_line(line) for line in paragraph.splitlines() if line.strip()]
    return "\\\n".join(lines)


def _md_inline(text: str) -> str:
    return re.sub(r"([\\`*_\[\]<>#])", r"\\\1", " ".join(text.split()))


def render_story(
    story: Story, branch: list[Step], fmt: Format, extras: dict | None = None, *, headings: Mapping[str, str] | None = None
) -> str:
    """The story in a text format; `extras` (see `bible_and_chapters`) join the JSON document,
    their chapters head Markdown and plain text where each begins, and their bible, if it has
    entries, ends them as an appendix. `headings` (chapter names by the id of their first
    paragraph, as a reader's path has them) head the text where `extras` has no chapters."""
    bible = (extras or {}).get("bible") or []
    if headings is None:
        starts = chapter_starts((extras or {}).get("chapters") or [], len(branch))
        headings = {branch[index].id: heading for index, heading in starts.items()}
    if fmt == "md":
        blocks = [f"# {_md_inline(story.title)}"]
        if story.genre.strip():
            blocks.append(f"*{_md_inline(story.genre)}*")
        for step in branch:
            if step.id in headings:
                blocks.append(f"## {_md_inline(headings[step.id])}")
            if step.paragraph.strip():
                blocks.append(_md_paragraph(step.paragraph))
        return "\n\n".join(blocks + _md_bible(bible)) + "\n"
    if fmt == "txt":
        title = " ".join(story.title.split()).upper()
        rule = "=" * min(len(title), TEXT_WIDTH)
        blocks = []
        for step in branch:
            if step.id in headings:
                heading = " ".join(headings[step.id].split())
                blocks.append(f"{_wrap(heading)}\n{'-' * min(len(heading), TEXT_WIDTH)}")
            if step.paragraph.strip():
                blocks.append(_txt_paragraph(step.paragraph))
        body = "\n\n".join(blocks + _txt_bible(bible))
        return f"{_wrap(title)}\n{rule}\n\n{body}\n"
    if fmt == "json":
        document = {
            "id": story.id,
            "title": story.title,
            "premise": story.premise,
            "genre": story.genre,
            "outline": story.outline,
            "paragraphs": [
                {
                    "text": step.paragraph,
                    "instruction": step.instruction,
                    "step_id": step.id,
                    "short_term_memory": step.short_term_memory,
                    "backend": step.backend,
                    "model": step.model,
                    "fallbacks": list(step.fallbacks),
                }
                for step in branch
            ],
            **(extras or {}),
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


def chapter_starts(chapters: list[dict], paragraphs: int) -> dict[int, str]:
    """Each chapter's heading by the index of its first paragraph (one with none yet: left out)."""
    return {
        chapter["first_paragraph"] - 1: chapter["heading"]
        for chapter in chapters
        if 1 <= chapter["first_paragraph"] <= paragraphs
    }


def fact_range(fact: dict) -> str:
    if fact["until"] is None:
        return f"from paragraph {fact['from']}"
    if fact["until"] == fact["from"]:
        return f"paragraph {fact['from']}"
    return f"paragraphs {fact['from']}-{fact['until']}"


def by_kind(bible: list[dict]) -> list[tuple[str, list[dict]]]:
    """The entries under their kinds' headings, in the bible's order (it lists them by kind)."""
    from .bible_files import KIND_HEADINGS

    groups: dict[str, list[dict]] = {}
    for entry in bible:
        groups.setdefault(KIND_HEADINGS.get(entry["kind"], entry["kind"].title()), []).append(entry)
    return list(groups.items())


def _md_bible(bible: list[dict]) -> list[str]:
    """The appendix: each entry's name, aliases, description and facts; the notes are the writer's."""
    if not bible:
        return []
    blocks = ["---", "## Story bible"]
    for heading, entries in by_kind(bible):
        blocks.append(f"### {_md_inline(heading)}")
        for entry in entries:
            also = f" (also: {_md_inline(', '.join(entry['aliases']))})" if entry["aliases"] else ""
            blocks.append(f"**{_md_inline(entry['name'])}**{also}")
            if entry["description"].strip():
                blocks.append(_md_paragraph(entry["description"]))
            if entry["facts"]:
                blocks.append("\n".join(
                    f"- {fact_range(fact).capitalize()}: {_md_inline(fact['text'])}" for fact in entry["facts"]
                ))
    return blocks


def _txt_bible(bible: list[dict]) -> list[str]:
    if not bible:
        return []
    blocks = ["STORY BIBLE\n" + "-" * len("STORY BIBLE")]
    for heading, entries in by_kind(bible):
        blocks.append(heading.upper())
        for entry in entries:
            lines = [entry["name"] + (f" (also: {', '.join(entry['aliases'])})" if entry["aliases"] else "")]
            lines += [line for line in entry["description"].splitlines() if line.strip()]
            lines += [f"- {fact_range(fact).capitalize()}: {fact['text']}" for fact in entry["facts"]]
            blocks.append("\n".join(_wrap(line) for line in lines))
    return blocks


def _wrap(line: str) -> str:
    # Long words (addresses) stay whole rather than being cut mid-word.
    return textwrap.fill(line, width=TEXT_WIDTH, break_long_words=False, break_on_hyphens=False)


def _txt_paragraph(paragraph: str) -> str:
    """Each line of the paragraph wrapped on its own, so dialogue lines stay apart."""
    return "\n".join(_wrap(line) for line in paragraph.splitlines() if line.strip())


def render_docx(story: Story, branch: list[Step], chapters: Sequence[tuple[str, int]] = ()) -> bytes:
    """The story as a Word document: its title, its genre, then each paragraph as one (its own
    line breaks kept), under chapter headings where `chapters` (heading, index of the chapter's
    first paragraph in `branch`) gives them."""
    import io

    import docx  # python-docx: imported only when a .docx is asked for

    document = docx.Document()
    document.core_properties.title = story.title
    document.add_heading(" ".join(story.title.split()), level=0)
    if story.genre.strip():
        document.add_paragraph(" ".join(story.genre.split()), style="Subtitle")
    headings = {index: title for title, index in chapters}
    for index, step in enumerate(branch):
        if index in headings:
            document.add_heading(headings[index], level=1)
        lines = [line.strip() for line in step.paragraph.splitlines() if line.strip()]
        if not lines:
            continue
        paragraph = document.add_paragraph()
        for number, line in enumerate(lines):
            run = paragraph.add_run(_xml_safe(line))
            if number < len(lines) - 1:
                run.add_break()  # a line break inside the paragraph, as the model wrote it
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _xml_safe(text: str) -> str:
    """`text` without the control characters XML (and so Word) cannot hold."""
    return "".join(ch for ch in text if ch in "\t\n" or ord(ch) >= 32)


def bible_and_chapters(store: StoryStore, story: Story) -> dict[str, list]:
    """A story's JSON `bible` (its entries, each with the facts of the current branch) and
    `chapters` (those of the current branch, each with its number, its heading, which is its
    title or "Chapter N" when it has none, and the number of its first paragraph)."""
    from .bible_files import entries_json

    facts = store.facts_on_branch(story.id, story.head_step_id)
    return {
        "bible": entries_json(store.list_entries(story.id), facts),
        "chapters": [
            {
                "number": number, "title": chapter.title, "heading": chapter_name(chapter.title, number),
                "summary": chapter.summary, "first_paragraph": first, "closed": chapter.closed,
            }
            for number, (chapter, first) in enumerate(store.chapters_on_branch(story.id, story.head_step_id), 1)
        ],
    }


def export_story(store: StoryStore, story_id: str, fmt: Format) -> str | bytes:
    """The story's current branch in `fmt`: text, or bytes for .docx (an .epub: see epub.py)."""
    story = store.get_story(story_id)
    branch = store.branch(story_id)
    extras = bible_and_chapters(store, story)
    if fmt == "docx":
        headings = chapter_starts(extras["chapters"], len(branch))
        return render_docx(story, branch, [(heading, index) for index, heading in sorted(headings.items())])
    return render_story(story, branch, fmt, extras)


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777  # a file written again keeps its permissions
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # as open() would create it; mkstemp's 0600 would hide it from others
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:  # name the file asked for, not the temporary one
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        with (os.fdopen(fd, "wb") if isinstance(text, bytes) else os.fdopen(fd, "w", encoding="utf-8")) as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def downloads_folder() -> Path:
    """Where an export goes by default: the platform's downloads folder when it exists (many
    servers have none), else the working directory."""
    import platformdirs

    downloads = platformdirs.user_downloads_path()
    return downloads if downloads.is_dir() else Path.cwd()


def slug(title: str) -> str:
    """A file name from a title: lower case words joined by hyphens."""
    words = re.findall(r"[\w]+", title.lower())
    return "-".join(words)[:60] or "story"

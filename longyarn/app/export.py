"""Writing a story out as Markdown, plain text, JSON or Word (.docx): the current branch, in order."""

from __future__ import annotations

import json
import os
import re
import tempfile
import textwrap
from pathlib import Path
from typing import Literal, Sequence

from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Step, Story

Format = Literal["md", "txt", "json", "docx"]
TEXT_FORMATS = ("md", "txt", "json")
FORMATS = (*TEXT_FORMATS, "docx")


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


def render_story(story: Story, branch: list[Step], fmt: Format) -> str:
    paragraphs = [step.paragraph for step in branch]
    if fmt == "md":
        blocks = [f"# {_md_inline(story.title)}"]
        if story.genre.strip():
            blocks.append(f"*{_md_inline(story.genre)}*")
        blocks += [_md_paragraph(p) for p in paragraphs if p.strip()]
        return "\n\n".join(blocks) + "\n"
    if fmt == "txt":
        title = " ".join(story.title.split()).upper()
        rule = "=" * min(len(title), TEXT_WIDTH)
        body = "\n\n".join(_txt_paragraph(p) for p in paragraphs if p.strip())
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
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


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


def export_story(store: StoryStore, story_id: str, fmt: Format) -> str | bytes:
    """The story's current branch in `fmt`: text, or bytes for .docx."""
    story = store.get_story(story_id)
    if fmt == "docx":
        return render_docx(story, store.branch(story_id))
    return render_story(story, store.branch(story_id), fmt)


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

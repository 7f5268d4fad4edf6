"""A story as an EPUB 3 book (`longyarn export ID --format epub`), made with ebooklib.

The book holds a title page, then one XHTML document per chapter (a story without chapters is
one document), then the story bible as an appendix when the story has one; a table of contents
both as EPUB 3 navigation and as an EPUB 2 NCX, so older readers find it too; and the title,
author, language and a stable identifier (the same story gives the same identifier) as
metadata. The test suite checks what it makes with epubcheck.
"""

from __future__ import annotations

import html
import io
import re
import uuid
from collections.abc import Sequence

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Step, Story

from .export import bible_and_chapters, by_kind, chapter_starts, fact_range

# Who wrote it, when neither --author nor the `author` setting says: the book's metadata needs
# someone, and the account's name on this machine is not something to put in a shared file.
DEFAULT_AUTHOR = "Anonymous"
DEFAULT_LANGUAGE = "en"
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*\Z")
# Identifiers of the same story's books are the same (a reader app sees a new version, not a new book).
_BOOK_NAMESPACE = uuid.UUID("7a1f3c52-5c1e-4e55-9e0b-2d6f3c0b8a41")

STYLE = """body { font-family: serif; line-height: 1.5; margin: 0 5%; }
h1 { text-align: center; margin: 2em 0 1em; }
p { text-indent: 1.5em; margin: 0 0 0.4em; }
p.first, .titlepage p, .bible p { text-indent: 0; }
.titlepage { text-align: center; margin-top: 30%; }
.bible dt { font-weight: bold; margin-top: 1em; }
"""


def check_language(language: str) -> str:
    language = language.strip()
    if not _LANGUAGE_TAG.match(language):
        raise InvalidInput(
            f"{language!r} is not a language tag, so nothing was written; give one such as en, "
            "de or pt-BR."
        )
    return language


def export_epub(
    store: StoryStore, story_id: str, *, author: str | None = None, language: str | None = None
) -> bytes:
    """The story's current branch as an .epub book (see `render_epub`)."""
    story = store.get_story(story_id)
    branch = store.branch(story_id)
    extras = bible_and_chapters(store, story)
    headings = chapter_starts(extras["chapters"], len(branch))
    return render_epub(
        story, branch, [(heading, index) for index, heading in sorted(headings.items())], extras["bible"],
        author=author or DEFAULT_AUTHOR, language=language or DEFAULT_LANGUAGE,
    )


def render_epub(
    story: Story,
    branch: Sequence[Step],
    chapters: Sequence[tuple[str, int]] = (),
    bible: Sequence[dict] = (),
    *,
    author: str = DEFAULT_AUTHOR,
    language: str = DEFAULT_LANGUAGE,
) -> bytes:
    """The story as an .epub file's bytes. `chapters`: (heading, index of the chapter's first
    paragraph in `branch`), in order; `bible`: the entries as `bible_and_chapters` gives them."""
    from ebooklib import epub  # imported only when a book is asked for

    language = check_language(language)
    title = " ".join(story.title.split()) or "Untitled"
    author = " ".join(author.split()) or DEFAULT_AUTHOR
    book = epub.EpubBook()
    book.set_identifier(f"urn:uuid:{uuid.uuid5(_BOOK_NAMESPACE, story.id)}")
    book.set_title(title)
    book.set_language(language)
    book.add_author(author)
    style = epub.EpubItem(uid="style", file_name="style.css", media_type="text/css", content=STYLE)
    book.add_item(style)

    def document(file_name: str, heading: str, body: str) -> epub.EpubHtml:
        page = epub.EpubHtml(title=heading, file_name=file_name, lang=language)
        page.content = f"<html><head><title>{_text(heading)}</title></head><body>{body}</body></html>"
        page.add_item(style)
        book.add_item(page)
        return page

    genre = f"<p>{_text(story.genre)}</p>" if story.genre.strip() else ""
    title_page = document(
        "title.xhtml", title,
        f'<div class="titlepage"><h1>{_text(title)}</h1>{genre}<p>{_text(author)}</p></div>',
    )
    parts = []
    for number, (heading, paragraphs) in enumerate(_parts(title, branch, chapters), 1):
        body = f"<h1>{_text(heading)}</h1>" + "".join(
            _paragraph(paragraph, first=index == 0) for index, paragraph in enumerate(paragraphs)
        )
        parts.append(document(f"chapter-{number:03d}.xhtml", heading, body))
    if bible:
        parts.append(document("bible.xhtml", "Story bible", _bible_body(bible)))
    book.toc = [epub.Link(page.file_name, page.title, page.file_name.removesuffix(".xhtml")) for page in parts]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = [title_page, "nav", *parts]
    buffer = io.BytesIO()
    epub.write_epub(buffer, book, {"epub3_pages": False})
    return buffer.getvalue()


def _parts(title: str, branch: Sequence[Step], chapters: Sequence[tuple[str, int]]) -> list[tuple[str, list[str]]]:
    """(heading, paragraphs) per document: one per chapter, or the whole story under its title.
    Paragraphs before the first chapter (there should be none) go with the story's title."""
    paragraphs = [step.paragraph for step in branch]
    starts = [(heading, index) for heading, index in chapters if 0 <= index < len(paragraphs)]
    if not starts:
        return [(title, [p for p in paragraphs if p.strip()])]
    parts = []
    if starts[0][1] > 0:
        parts.append((title, paragraphs[: starts[0][1]]))
    for number, (heading, index) in enumerate(starts):
        end = starts[number + 1][1] if number + 1 < len(starts) else len(paragraphs)
        parts.append((heading, paragraphs[index:end]))
    return [(heading, [p for p in part if p.strip()]) for heading, part in parts]


def _text(text: str) -> str:
    """Text as XHTML holds it: escaped, without the control characters XML cannot hold."""
    return html.escape("".join(ch for ch in text if ch in "\t\n" or ord(ch) >= 32), quote=False)


def _paragraph(paragraph: str, *, first: bool = False) -> str:
    """One story paragraph as one <p>, its own line breaks (dialogue lines) kept."""
    lines = [_text(line.strip()) for line in paragraph.splitlines() if line.strip()]
    opening = '<p class="first">' if first else "<p>"
    return opening + "<br/>".join(lines) + "</p>" if lines else ""


def _bible_body(bible: Sequence[dict]) -> str:
    parts = ['<div class="bible"><h1>Story bible</h1>']
    for heading, entries in by_kind(list(bible)):
        parts.append(f"<h2>{_text(heading)}</h2><dl>")
        for entry in entries:
            also = f" (also: {_text(', '.join(entry['aliases']))})" if entry["aliases"] else ""
            parts.append(f"<dt>{_text(entry['name'])}{also}</dt>")
            if entry["description"].strip():
                parts.append(f"<dd>{_paragraph(entry['description'], first=True)}</dd>")
            for fact in entry["facts"]:
                parts.append(f"<dd>{_text(fact_range(fact).capitalize())}: {_text(fact['text'])}</dd>")
        parts.append("</dl>")
    parts.append("</div>")
    return "".join(parts)

"""What the story bible's screens share: how entries and facts read at a paragraph (a fact in
force plainly, an ended or later one dimmed, each with its paragraphs), and undo and redo of
the bible's changes from those screens."""

from __future__ import annotations

from typing import Callable, Iterable, Literal

from rich.text import Text
from textual import work
from textual.content import Content

from longyarn.app.bible_files import KIND_HEADINGS, paragraph_range
from longyarn.app.session.bible import StoryBible
from longyarn.app.ui.formatting import store_failure
from longyarn.recurrent_core.bible import BibleEntry, BibleFact

from .help import key_for

FactState = Literal["in force", "ended", "later"]


def fact_state(fact: BibleFact, paragraph: int) -> FactState:
    if fact.holds_at(paragraph):
        return "in force"
    return "later" if fact.from_paragraph > paragraph else "ended"


def fact_line(fact: BibleFact, paragraph: int) -> Content:
    """"• Mara is a sailor.  (from paragraph 1)"; dimmed, with its state, when not in force."""
    learned = ", learned" if fact.step_id else ""
    state = fact_state(fact, paragraph)
    if state == "in force":
        return Content.assemble("• ", fact.text, (f"  ({paragraph_range(fact)}{learned})", "dim"))
    return Content.styled(f"  {fact.text}  ({paragraph_range(fact)}; {state}{learned})", "dim")


def fact_cells(text: str, from_paragraph: int, until_paragraph: int | None, paragraph: int, *, note: str = "") -> list[Text]:
    """A fact's row in the editor's table: its paragraphs, its text, and its state (and `note`:
    "new", "changed")."""
    if until_paragraph is None:
        span = f"{from_paragraph}–"
    else:
        span = f"{from_paragraph}–{until_paragraph}" if until_paragraph != from_paragraph else f"{from_paragraph}"
    holds = from_paragraph <= paragraph and (until_paragraph is None or paragraph <= until_paragraph)
    state = "in force" if holds else ("later" if from_paragraph > paragraph else "ended")
    style = "" if holds else "dim"
    return [Text(span, style=style), Text(text, style=style), Text(state + (f", {note}" if note else ""), style=style)]


def entry_label(entry: BibleEntry) -> Content:
    """The entry in the list: a star when it is in every prompt."""
    return Content.assemble(("★ " if entry.always else "  ", "bold"), entry.name)


def kind_heading(kind: str) -> Content:
    return Content.styled(KIND_HEADINGS.get(kind, kind.title()), "bold")


def entry_matches(entry: BibleEntry, facts: Iterable[BibleFact], query: str) -> bool:
    """Whether the search words are in its name, an alias, a secondary key, its description or
    a fact (case-insensitively)."""
    wanted = " ".join(query.split()).casefold()
    if not wanted:
        return True
    texts = [*entry.names, *entry.secondary_keys, entry.description, *(fact.text for fact in facts)]
    return any(wanted in " ".join(text.split()).casefold() for text in texts)


def entry_detail(entry: BibleEntry, facts: list[BibleFact], paragraph: int) -> Content:
    """Everything about the entry, its facts as at `paragraph`."""
    parts: list[Content | str | tuple[str, str]] = [(entry.name, "bold"), f" · {entry.kind}"]
    if entry.always:
        parts.append((" · ★ always in the prompt", "bold"))
    lines = [Content.assemble(*parts)]
    if entry.aliases:
        lines.append(Content(f"Also: {', '.join(entry.aliases)}"))
    if entry.secondary_keys:
        lines.append(Content(f"Keys: {', '.join(entry.secondary_keys)}"))
    lines.append(Content(""))
    lines.append(Content(entry.description) if entry.description else Content.styled("No description.", "dim"))
    lines.append(Content(""))
    in_force = sum(fact.holds_at(paragraph) for fact in facts)
    lines.append(Content.styled(f"Facts at paragraph {paragraph}: {in_force} of {len(facts)} in force", "bold"))
    lines += [fact_line(fact, paragraph) for fact in facts] or [Content.styled("  None yet.", "dim")]
    if entry.notes:
        lines += [Content(""), Content.styled("Notes (never sent to the model)", "bold"), Content(entry.notes)]
    return Content("\n").join(lines)


def split_keys(text: str) -> tuple[str, ...]:
    """Aliases or keys as typed, comma-separated."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def typed_paragraph(text: str, default: int | None) -> int | str | None:
    """A paragraph number as typed: a number, `default` when empty, else the text itself (so
    that the bible's check says, in its words, why it is no paragraph)."""
    text = text.strip()
    if not text:
        return default
    return int(text) if text.lstrip("-").isdigit() else text


class BibleHistoryKeys:
    """Undo and redo of the bible's changes on the bible's screens, mixed into them: only while
    the newest change is the bible's (the writing screen undoes the others)."""

    bible: StoryBible
    is_busy: Callable[[], bool]  # a paragraph is being written or a move stored: undo waits
    show_status: Callable[[str], None]  # each screen's own status line

    def action_undo(self) -> None:
        self._bible_history("undo")

    def action_redo(self) -> None:
        self._bible_history("redo")

    def _bible_history(self, which: str) -> None:
        if self.is_busy():
            self.show_status(f"The story is changing on the writing screen; {which} once it is done.")
            return
        possible = self.bible.can_undo() if which == "undo" else self.bible.can_redo()
        if not possible:
            newest = self.bible.newest_change() if which == "undo" else None
            self.show_status(
                f"The newest change is {newest}, not the bible's: undo it on the writing screen."
                if newest else f"There is no change to the bible to {which}."
            )
            return
        if getattr(self, "_bible_history_running", False):
            return  # one at a time, in order
        self._bible_history_running = True
        self._run_bible_history(which)

    @work(group="bible-history", exit_on_error=False)
    async def _run_bible_history(self, which: str) -> None:
        try:
            done = await (self.bible.undo() if which == "undo" else self.bible.redo())
        except Exception as error:
            problem = store_failure(error, f"{which} the change")
            self.show_status(problem)
            self.notify(problem, title="The bible is as it was", severity="error", timeout=12)  # type: ignore[attr-defined]
            return
        finally:
            self._bible_history_running = False
        if done:
            again = "redoes" if which == "undo" else "undoes"
            key = key_for(self.app, type(self), "redo" if which == "undo" else "undo")  # type: ignore[attr-defined]
            self.show_status(f"{'Undone' if which == 'undo' else 'Redone'}: {done}; {key} {again} it.")

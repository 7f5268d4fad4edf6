"""The updates to the story bible that the model proposed after its paragraphs, waiting for the
writer: accept, edit or reject each, or turn on auto-accept.

An accepted update is one undoable step of the writer's history, as any change to the bible
(undoing it puts it back here); a rejected one too. An update that cannot be applied (its entry
is gone, a name is taken) stays, with the bible's one sentence saying why.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Awaitable, Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Button, Input, Label, OptionList, Static, Switch
from textual.widgets.option_list import Option

from longyarn.app.session.bible import BibleUpdate, StoryBible
from longyarn.app.session.engine_host import EngineHost
from longyarn.app.settings import save_setting
from longyarn.app.ui.formatting import one_line, store_failure
from longyarn.recurrent_core.bible import check_fact_range, check_fact_text
from longyarn.recurrent_core.errors import BibleError, LongyarnError

from .bible_editor import EntryEditorScreen
from .bible_shared import BibleHistoryKeys, typed_paragraph
from .dialogs import Dialog
from .help import KeysFooter, key_for

KIND_WORDS = {"new_entry": "New entry", "new_fact": "New fact", "end_fact": "Fact ends"}


def update_label(update: BibleUpdate, problem: str | None) -> Content:
    """One line of the queue: what kind of update, from which paragraph, and what it says."""
    where = f"¶{update.paragraph}" if update.paragraph else "¶?"
    if update.kind == "new_entry" and update.entry is not None:
        what = f"{update.entry.kind} {update.entry.name}"
        facts = len(update.entry.facts)
        what += f" ({facts} fact{'s' if facts != 1 else ''})" if facts else ""
    elif update.kind == "new_fact":
        what = f"{update.entry_name}: {update.text}"
    else:
        what = f"{update.entry_name}: {update.text} (its last paragraph: {update.ends_at})"
    mark = ("⚠ ", "bold $text-warning") if problem else ("  ", "")
    return Content.assemble(mark, (f"{KIND_WORDS[update.kind]:<10} {where:>5}  ", "dim"), one_line(what, 200))


class UpdateFactDialog(Dialog):
    """A proposed fact, or a fact's proposed end, for the writer to change before accepting it.
    It accepts through `accept` and stays open, with what was typed, if that fails."""

    BINDINGS = [Binding("ctrl+s", "accept", "Accept", id="update-fact-accept")]

    def __init__(self, update: BibleUpdate, accept: Callable[[BibleUpdate], Awaitable[str | None]]) -> None:
        """`accept(edited)` applies the edited update; the problem in one sentence, or None."""
        super().__init__()
        self.update = update
        self.accept = accept
        self.accepting = False

    def compose(self) -> ComposeResult:
        update = self.update
        ending = update.kind == "end_fact"
        title = f"The end of a fact, proposed from paragraph {update.paragraph or '?'}" if ending else (
            f"A new fact, proposed from paragraph {update.paragraph or '?'}"
        )
        with Vertical(classes="dialog wide"):
            yield Label(title, classes="dialog-title", markup=False)
            yield Label("Entry (its name or an alias)")
            yield Input(update.entry_name, id="update-entry")
            yield Label("The fact that ends" if ending else "Fact")
            yield Input(update.text, id="update-text")
            with Horizontal(classes="update-range"):
                if not ending:
                    with Vertical():
                        yield Label("From paragraph")
                        yield Input(str(update.starts_at), id="update-from", type="integer")
                with Vertical():
                    yield Label("Its last paragraph" + ("" if ending else " (empty: it still holds)"))
                    ends_at = update.ends_at
                    yield Input("" if ends_at is None else str(ends_at), id="update-until", type="integer")
            yield Static("", id="update-problem", classes="problem", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Accept  ^s", id="accept", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#update-problem").display = False
        self.query_one("#update-text").focus()

    def edited(self) -> BibleUpdate:
        """The update as the dialog says; `BibleError` if the fact or its paragraphs are wrong."""
        text = check_fact_text(self.query_one("#update-text", Input).value)
        until = typed_paragraph(self.query_one("#update-until", Input).value, None)
        if self.update.kind == "end_fact":
            start = 1  # the fact's own start is checked when it is found
            if until is None:
                raise BibleError(
                    "A fact that ends needs its last paragraph, so nothing was changed; give the "
                    "number of the last paragraph it holds in."
                )
        else:
            start = typed_paragraph(self.query_one("#update-from", Input).value, self.update.starts_at)
        check_fact_range(start, until)  # type: ignore[arg-type]
        return replace(
            self.update, entry_name=self.query_one("#update-entry", Input).value.strip(), text=text,
            from_paragraph=start if self.update.kind == "new_fact" else None, until_paragraph=until,  # type: ignore[arg-type]
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#accept")
    def action_accept(self) -> None:
        if self.accepting:
            return
        try:
            edited = self.edited()
        except BibleError as error:
            self.show_problem(str(error))
            return
        self.accepting = True
        self._accept(edited)

    @work(group="update-accept", exit_on_error=False)
    async def _accept(self, edited: BibleUpdate) -> None:
        try:
            problem = await self.accept(edited)
        finally:
            self.accepting = False
        if problem is None:
            self.dismiss(True)
        else:
            self.show_problem(problem)

    def show_problem(self, problem: str) -> None:
        widget = self.query_one("#update-problem", Static)
        widget.update(problem)
        widget.display = True


class BibleUpdatesScreen(BibleHistoryKeys, Screen):
    """The proposed updates, oldest first, and what each would do."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="updates-back"),
        Binding("a", "accept", "Accept", id="update-accept"),
        Binding("e", "edit", "Edit", id="update-edit", tooltip="Change the update, then accept it"),
        Binding("r", "reject", "Reject", id="update-reject"),
        Binding("t", "toggle_auto_accept", "Auto-accept", id="update-auto",
                tooltip="Auto-accept: accept every update as it comes (and those waiting), or ask again"),
        Binding("ctrl+z", "undo", "Undo", id="undo"),
        Binding("ctrl+y", "redo", "Redo", id="redo"),
    ]

    HELP_TITLE = "Keys for the bible's updates"
    HELP_NOTES = (("enter", "Edit the highlighted update, then accept it"),)

    def __init__(self, bible: StoryBible, host: EngineHost, *, busy: Callable[[], bool] = lambda: False) -> None:
        super().__init__(id="bible-queue")
        self.bible = bible
        self.host = host
        self.is_busy = busy
        self._stop_listening: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        yield Static("Bible updates", id="updates-title", classes="screen-title", markup=False)
        with Horizontal(classes="switch-row", id="auto-accept-row"):
            yield Switch(self.bible.auto_accept, id="auto-accept")
            yield Label("Accept every update as it comes, and those waiting now (auto-accept)")
        yield OptionList(id="updates", markup=False)
        yield Static("", id="update-detail")
        yield Static("", id="updates-status", classes="hint", markup=False)
        yield KeysFooter()

    def on_mount(self) -> None:
        self._stop_listening = self.bible.listen(self.show_updates)
        self.show_updates()
        self.query_one("#updates").focus()

    def on_unmount(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()

    def show_updates(self) -> None:
        if not self.is_attached:
            return
        pending = self.bible.pending
        updates = self.query_one("#updates", OptionList)
        current = self.highlighted_update()
        index = updates.highlighted or 0
        updates.clear_options()
        updates.add_options(
            Option(update_label(update, self.bible.problems.get(update.id)), id=update.id) for update in pending
        )
        if pending:
            ids = [update.id for update in pending]
            updates.highlighted = ids.index(current.id) if current is not None and current.id in ids else min(index, len(ids) - 1)
        count = len(pending)
        title = f"{count} wait{'s' if count == 1 else ''} for you" if count else "none waits"
        self.query_one("#updates-title", Static).update(f"Bible updates the model proposed · {title}")
        switch = self.query_one("#auto-accept", Switch)
        if switch.value != self.bible.auto_accept:
            switch.value = self.bible.auto_accept
        self.show_detail()

    def highlighted_update(self) -> BibleUpdate | None:
        updates = self.query_one("#updates", OptionList)
        if updates.highlighted is None or updates.option_count == 0:
            return None
        option_id = updates.get_option_at_index(updates.highlighted).id
        return next((update for update in self.bible.pending if update.id == option_id), None)

    @on(OptionList.OptionHighlighted, "#updates")
    def show_detail(self) -> None:
        detail = self.query_one("#update-detail", Static)
        update = self.highlighted_update()
        if update is None:
            detail.update(Content.styled(
                "When the model proposes new entries, new facts or facts that end, they wait here.", "dim"
            ))
        else:
            lines = [Content.assemble(("Proposed: ", "bold"), update.describe())]
            if update.kind == "new_entry" and update.entry is not None:
                entry = update.entry
                if entry.aliases:
                    lines.append(Content(f"Also: {', '.join(entry.aliases)}"))
                if entry.description:
                    lines.append(Content(entry.description))
                lines += [Content(f"• {fact.text}  (from paragraph {fact.from_paragraph})") for fact in entry.facts]
            where = f"paragraph {update.paragraph}" if update.paragraph else "a paragraph"
            lines.append(Content.styled(f"From {where}; facts it adds hold on that paragraph's branch only.", "dim"))
            problem = self.bible.problems.get(update.id)
            if problem:
                lines.append(Content.styled(problem, "$text-warning"))
            detail.update(Content("\n").join(lines))
        self.refresh_bindings()

    def show_status(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#updates-status", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("accept", "edit", "reject"):
            return self.highlighted_update() is not None
        if action == "undo":
            return self.bible.history.can_undo
        if action == "redo":
            return self.bible.history.can_redo
        return True

    # ---- accept, edit, reject ----

    def action_accept(self) -> None:
        update = self.highlighted_update()
        if update is not None:
            self._accept(update)

    @work(group="bible-update", exit_on_error=False)
    async def _accept(self, update: BibleUpdate) -> None:
        problem = await self.accept(update)
        if problem is None:
            self.show_status(f"Accepted {update.describe()}; {self._key('undo')} undoes it.")
        else:
            self.show_status(problem)

    async def accept(self, update: BibleUpdate, edited: BibleUpdate | None = None) -> str | None:
        """Apply the update (or its edit); the problem in one sentence, or None."""
        try:
            await self.bible.accept(update, edited)
        except Exception as error:
            return store_failure(error, "accept the update")
        return None

    async def action_reject(self) -> None:
        update = self.highlighted_update()
        if update is not None:
            try:
                await self.bible.reject(update)
            except Exception as error:
                self.show_status(store_failure(error, "reject the update"))
                return
            self.show_status(f"Rejected {update.describe()}; {self._key('undo')} brings it back.")

    @on(OptionList.OptionSelected, "#updates")
    def action_edit(self) -> None:
        update = self.highlighted_update()
        if update is None:
            return
        if update.kind == "new_entry":
            self._edit_entry(update)
            return

        async def accept_edited(edited: BibleUpdate) -> str | None:
            return await self.accept(update, edited)

        self.app.push_screen(UpdateFactDialog(update, accept_edited), self._edited)

    @work(group="bible-update", exit_on_error=False)
    async def _edit_entry(self, update: BibleUpdate) -> None:
        try:
            view = await self.bible.read()
        except Exception as error:
            self.show_status(store_failure(error, "read the story bible"))
            return
        self.app.push_screen(EntryEditorScreen(self.bible, view, proposal=update), self._edited)

    def _edited(self, accepted: object) -> None:
        if accepted:
            self.show_status(f"Accepted as you edited it; {self._key('undo')} undoes it.")

    def _key(self, binding_id: str) -> str:
        return key_for(self.app, type(self), binding_id)

    # ---- auto-accept ----

    def action_toggle_auto_accept(self) -> None:
        switch = self.query_one("#auto-accept", Switch)
        switch.value = not switch.value

    @on(Switch.Changed, "#auto-accept")
    def _auto_accept_changed(self, event: Switch.Changed) -> None:
        if event.value != self.bible.auto_accept:
            self.set_auto_accept(event.value)

    @work(group="bible-update", exit_on_error=False)
    async def set_auto_accept(self, on: bool) -> None:
        """Turn auto-accept on or off for this story now and for later ones (the config file)."""
        self.bible.auto_accept = on
        if self.host.settings is not None:
            self.host.settings.bible_auto_accept = on  # in place: a model loading keeps its settings
        try:
            await asyncio.to_thread(save_setting, "bible_auto_accept", on)
            kept = ""
        except Exception as error:
            kept = f" It applies until you quit: {error}" if isinstance(error, LongyarnError) else (
                f" It applies until you quit: the config file could not be written ({error})."
            )
        if not on:
            self.show_status("Auto-accept is off: updates wait here for you." + kept)
            return
        waiting = len(self.bible.pending)
        accepted = await self.bible.accept_all() if waiting else 0
        left = len(self.bible.pending)
        said = f"Auto-accept is on: accepted {accepted} waiting update{'s' if accepted != 1 else ''}"
        said += f"; {left} could not be (see why below)" if left else ""
        self.show_status(f"{said}; each is a step {self._key('undo')} takes back.{kept}")

"""Keep writing: several paragraphs in a row, each committed as it lands (the writing screen's
Ctrl+O). Mixed into `WritingScreen`, whose session, step flags and event rendering it uses."""

from __future__ import annotations

import asyncio

from textual import work

from longyarn.app.session.writing import RunInstruction, RunProgress, WritingSession
from longyarn.app.ui.formatting import paragraphs_label
from longyarn.recurrent_core.types import StepCompleted

from .dialogs import KeepWritingDialog


class KeepWriting:
    """Mixed into `WritingScreen`."""

    session: WritingSession
    generating: bool
    moving: bool
    keep_writing_progress: str

    # ---- keep writing: several steps in a row, each committed as it lands ----

    def action_keep_writing(self) -> None:
        if not self._has_model() or self.generating or self.moving:
            return
        # What Enter would write now comes first, so the writer's typed or picked instruction is used.
        first = self.chosen_instruction()

        def start(count: int | None) -> None:
            if count and not (self.generating or self.moving):
                self.save_memory_edit()
                self._begin_generating()
                self.step_worker = self.keep_writing(first, count)

        self.app.push_screen(KeepWritingDialog(first), start)

    @work(exclusive=True, group="step", exit_on_error=False)
    async def keep_writing(self, first: str | None, count: int) -> None:
        """Write `count` paragraphs in a row (`WritingSession.keep_writing`), showing each."""
        written = 0
        in_progress = False  # a paragraph is being written (not between two)
        run = self.session.keep_writing(first, count)
        try:
            while True:
                progress = await self._next_of_run(run)
                if progress is None:
                    break
                in_progress = True
                if not await self._write_paragraph(self._paragraph_of_run(run)):
                    break  # the notice says why
                in_progress = False
                written += 1
        except asyncio.CancelledError:
            if self.is_attached:
                written += int(self.session.landed_on_cancel)
                dropped = "; the one in progress was not kept" if in_progress and not self.session.landed_on_cancel else ""
                self._say_kept_writing(f"Keep writing stopped: {written} of {count} written and saved{dropped}.")
            raise
        finally:
            self._step_over()
            await run.aclose()
        if written == count:
            self._say_kept_writing(f"Kept writing: {paragraphs_label(written)} written and saved.")
        elif self.is_attached:
            self._show_status(f"Keep writing stopped: {written} of {count} written and saved; see the notice.")

    async def _next_of_run(self, run) -> RunProgress | None:  # noqa: ANN001
        """The run's next paragraph, announced; None when the run is over."""
        event = await anext(run, None)
        if event is None:
            return None
        assert isinstance(event, RunProgress)
        self.keep_writing_progress = f"Keep writing: paragraph {event.number} of {event.count}"
        self._show_status(self.keep_writing_progress)
        return event

    async def _paragraph_of_run(self, run):  # noqa: ANN001, ANN202
        """The run's events up to this paragraph's end, with its instruction chosen on the way."""
        async for event in run:
            if isinstance(event, RunProgress):  # waiting for a model that is loading
                self._show_status(f"{self.keep_writing_progress} · waiting for the new model to load…")
                continue
            if isinstance(event, RunInstruction):
                if event.fallback:
                    self.notify(event.fallback, severity="warning", timeout=8)
                continue
            yield event
            if isinstance(event, StepCompleted):
                return

    def _say_kept_writing(self, text: str) -> None:
        if self.is_attached:
            self.notify(text, timeout=8)
            self._show_status(text)


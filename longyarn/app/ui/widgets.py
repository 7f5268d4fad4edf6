"""Widgets of the writing screen: the story (loaded lazily), the streaming paragraph, the
three candidate instructions."""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import OptionList, Static, TextArea
from textual.widgets.option_list import Option

from longyarn.recurrent_core.types import Step

from .formatting import paragraphs_label

# A paragraph of prose is a few hundred characters; 30 of them fill several screens, and
# mounting 30 widgets is quick however long the story is.
PAGE_SIZE = 30
# Streamed text is shown at most this often: a fast backend yields hundreds of chunks a
# second, and re-rendering per chunk would spend the event loop on layout instead of keys.
STREAM_FRAME_S = 1 / 30


class ProseArea(TextArea):
    """A soft-wrapped text box for prose. Textual's TextArea rewraps on a resize but, when the number of
    wrapped rows stays the same, the screen keeps the rows painted at the old width, so the words at the
    cut go missing until something else repaints them."""

    def __init__(self, text: str = "", **kwargs) -> None:
        kwargs.setdefault("soft_wrap", True)
        super().__init__(text, **kwargs)

    def on_resize(self, event: events.Resize) -> None:
        self.refresh()


class ParagraphView(Static):
    """One paragraph of the story; click it (or move to it with the arrows) to select it."""

    def __init__(self, step: Step) -> None:
        super().__init__(step.paragraph, classes="paragraph", markup=False)
        self.step = step

    def on_click(self) -> None:
        if isinstance(self.parent, StoryView):
            self.parent.select(self)
            self.parent.focus()

    def show(self, step: Step) -> None:
        self.step = step
        self.update(step.paragraph)


class ChapterHeading(Static):
    """A chapter's name, above the paragraph that begins it."""

    DEFAULT_CSS = """
    ChapterHeading {
        margin: 1 0 0 0;
        padding: 0 1;
        text-style: bold;
        color: $accent;
    }
    """

    def __init__(self, step_id: str, name: str) -> None:
        super().__init__(f"── {name} ──", markup=False)
        self.step_id = step_id


class StreamingParagraph(Static):
    """The paragraph being written, updated at most once per frame however fast text comes."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.text = ""
        self.chunks_received = 0
        self.renders = 0  # how many times the text was actually re-rendered (benchmarked)
        self._flush_pending = False

    def begin(self) -> None:
        self.text = ""
        self.chunks_received = 0
        self.renders = 0
        self.update("…")
        self.display = True

    def append(self, delta: str) -> None:
        self.text += delta
        self.chunks_received += 1
        if not self._flush_pending:
            self._flush_pending = True
            self.set_timer(STREAM_FRAME_S, self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self.display:
            self.renders += 1
            self.update(self.text.lstrip() or "…")
            if isinstance(self.parent, StoryView):
                self.parent.follow_end()

    def end(self) -> None:
        self.text = ""
        self.update("")
        self.display = False


class StoryView(VerticalScroll, can_focus=True):
    """The story so far: the newest paragraphs first, earlier ones loaded on scrolling up, with
    each chapter's name above the paragraph that begins it (`headings`).

    When focused, ↑/↓ select a paragraph to edit (e) or delete (d).
    """

    BINDINGS = [
        Binding("up,k", "select_previous", "Previous paragraph", show=False),
        Binding("down,j", "select_next", "Next paragraph", show=False),
        Binding("e", "screen.edit_paragraph", "Edit paragraph", id="edit-paragraph"),
        Binding("delete,d", "screen.delete_paragraph", "Delete paragraph", id="delete-paragraph"),
        Binding("c", "screen.split_chapter", "Start a chapter here", id="chapter-split", show=False,
                tooltip="Start a new chapter at the selected paragraph"),
        Binding("t", "screen.chapter_details", "Chapter title and summary", id="chapter-details", show=False,
                tooltip="Rename the selected paragraph's chapter, or edit its summary"),
        Binding("m", "screen.merge_chapter", "Merge chapter with next", id="chapter-merge", show=False,
                tooltip="Merge the selected paragraph's chapter with the chapter after it"),
        Binding("left_square_bracket", "screen.chapter_begins_here", "Chapter begins here", id="chapter-begins",
                show=False, tooltip="Move the start of the selected paragraph's chapter to it"),
        Binding("right_square_bracket", "screen.next_chapter_begins_here", "Next chapter begins here",
                id="chapter-next-begins", show=False,
                tooltip="Move the start of the next chapter back to the selected paragraph"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps: list[Step] = []
        self.headings: dict[str, str] = {}  # a chapter's name by the id of its first paragraph
        self.first_shown = 0  # index in `steps` of the oldest paragraph mounted
        self.follow = True  # scroll along with new text; off while the writer reads further up
        self.earlier = Static("", id="earlier", markup=False)
        self.streaming = StreamingParagraph(id="streaming", classes="paragraph")

    def compose(self):
        yield self.earlier
        yield self.streaming

    def on_mount(self) -> None:
        self.streaming.display = False
        self.earlier.display = False

    @property
    def paragraph_views(self) -> list[ParagraphView]:
        return list(self.query_children(ParagraphView))

    @property
    def selected(self) -> ParagraphView | None:
        return next(iter(self.query_children(".-selected")), None)  # type: ignore[return-value]

    def select(self, view: ParagraphView | None) -> None:
        for other in self.query_children(".-selected"):
            other.remove_class("-selected")
        if view is not None:
            view.add_class("-selected")
            self.scroll_to_widget(view, animate=False)
        self.screen.refresh_bindings()

    def on_focus(self) -> None:
        if self.selected is None and self.paragraph_views:
            self.select(self.paragraph_views[-1])

    def on_blur(self) -> None:
        if self.screen.is_current:  # not when a dialog opens over it: keep the selection
            self.select(None)

    async def action_select_previous(self) -> None:
        views = self.paragraph_views
        current = self.selected
        index = views.index(current) if current in views else len(views)
        if index == 0 and self.first_shown > 0:
            await self.load_earlier()
            views = self.paragraph_views
            index = views.index(current) if current in views else len(views)
        if index > 0:
            self.select(views[index - 1])

    def action_select_next(self) -> None:
        views = self.paragraph_views
        current = self.selected
        if current in views and views.index(current) + 1 < len(views):
            self.select(views[views.index(current) + 1])

    def _views(self, steps: list[Step]) -> list[Static]:
        """Each step's paragraph, after its chapter's heading where one begins there."""
        views: list[Static] = []
        for step in steps:
            if step.id in self.headings:
                views.append(ChapterHeading(step.id, self.headings[step.id]))
            views.append(ParagraphView(step))
        return views

    async def show_branch(
        self, steps: list[Step], page_size: int = PAGE_SIZE, headings: dict[str, str] | None = None
    ) -> None:
        """Show a branch, mounting only its last `page_size` paragraphs (under the chapters'
        `headings`, if given)."""
        await self.remove_children(ChapterHeading)
        await self.remove_children(ParagraphView)
        if headings is not None:
            self.headings = dict(headings)
        self.steps = list(steps)
        self.first_shown = max(0, len(self.steps) - page_size)
        views = self._views(self.steps[self.first_shown :])
        if views:
            await self.mount_all(views, before=self.streaming)
        self._update_earlier()
        self.follow = True
        self.follow_end()

    async def append_step(self, step: Step) -> None:
        self.steps.append(step)
        await self.mount_all(self._views([step]), before=self.streaming)
        self.follow_end()

    def follow_end(self) -> None:
        """Keep the newest text in view, unless the writer scrolled up to read."""
        if self.follow:
            self.scroll_end(animate=False)

    def replace_step(self, step: Step) -> None:
        self.steps = [step if s.id == step.id else s for s in self.steps]
        for view in self.paragraph_views:
            if view.step.id == step.id:
                view.show(step)

    async def remove_step(self, step_id: str) -> None:
        index = next((i for i, s in enumerate(self.steps) if s.id == step_id), None)
        if index is None:
            return
        del self.steps[index]
        if index < self.first_shown:
            self.first_shown -= 1
        for view in self.paragraph_views:
            if view.step.id == step_id:
                await view.remove()
        if index == len(self.steps):  # the last: its heading goes too (else it heads the next one)
            for heading in self.query_children(ChapterHeading):
                if heading.step_id == step_id:
                    await heading.remove()
        self._update_earlier()

    async def load_earlier(self, page_size: int = PAGE_SIZE) -> int:
        """Mount the previous page of paragraphs above the shown ones; keep the view still."""
        count = min(page_size, self.first_shown)
        if count == 0:
            return 0
        start = self.first_shown - count
        views = self._views(self.steps[start : self.first_shown])
        self.first_shown = start
        height_before = self.virtual_size.height
        await self.mount_all(views, after=self.earlier)
        self._update_earlier()

        def keep_position() -> None:
            grown = self.virtual_size.height - height_before
            self.scroll_to(y=self.scroll_y + grown, animate=False, immediate=True)

        self.call_after_refresh(keep_position)
        return count

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value < old_value:
            self.follow = False
        elif new_value >= self.max_scroll_y:
            self.follow = True
        if new_value <= 0 and old_value > 0 and self.first_shown > 0:
            self.run_worker(self.load_earlier(), group="load-earlier", exclusive=True)

    def _update_earlier(self) -> None:
        self.earlier.display = self.first_shown > 0
        if self.first_shown:
            self.earlier.update(
                f"▲ {paragraphs_label(self.first_shown)} before this; scroll up to read them"
            )


class InstructionList(OptionList):
    """The three next instructions (the planner's, or derived from the paragraph for a prose-only
    model); choosing one puts it in the instruction box."""

    BINDINGS = [
        Binding("1", "pick(0)", "Take the first instruction", show=False),
        Binding("2", "pick(1)", "Take the second instruction", show=False),
        Binding("3", "pick(2)", "Take the third instruction", show=False),
    ]

    def show_instructions(self, instructions: tuple[str, ...]) -> None:
        self.clear_options()
        self.add_options(
            Option(Content(f"{number}. {text}"), id=str(number - 1))
            for number, text in enumerate(instructions, start=1)
        )
        self.highlighted = 0 if instructions else None

    def action_pick(self, index: int) -> None:
        if index < self.option_count:
            self.highlighted = index
            self.action_select()

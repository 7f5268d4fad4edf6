"""The report as one self-contained HTML page (inline CSS and SVG, nothing loaded from outside),
and the same figures as a few lines for the terminal."""

from __future__ import annotations

from html import escape

from longyarn.recurrent_core.replies.degeneration import KIND_WORDS

from . import charts
from .continuity import continuity_line, continuity_section
from .figures import CHAPTER_PARAGRAPHS, PARTS, WINDOW_WORDS, StoryFigures

PART_NAMES = {  # each part, and the role whose reply it stands in for
    "title": "title (opening)",
    "outline": "outline (opening)",
    "paragraph": "paragraph cut at its length limit (writer)",
    "degeneration": "paragraph degenerated, caught by the guard (writer)",
    "memory": "short-term memory (memory)",
    "instructions": "next instructions (planner)",
    "bible": "story bible updates dropped, or not asked for (memory)",
    "notice": "server notices",
}

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; } td, th { padding: 0.2rem 0.7rem; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
.flag { color: #b03a2e; font-weight: 600; } .ok { color: #2e7d32; font-weight: 600; } .muted { color: #666; }
svg { max-width: 100%; height: auto; }
"""


def summary_lines(figures: StoryFigures) -> list[str]:
    """The report's figures in a few lines, for the terminal."""
    low, high = figures.requested_words
    lines = [
        f"Story {figures.story.id} ({figures.story.title!r}): {len(figures.steps)} paragraphs, "
        f"{sum(figures.words):,} words.",
        f"Length: {sum(figures.words) / len(figures.words):.0f} words a paragraph against {low}-{high} asked; "
        f"length score S_l {figures.mean_score:.1f} a paragraph, "
        + ", ".join(f"{c.score:.0f}" for c in figures.chapters) + f" a chapter of {CHAPTER_PARAGRAPHS}.",
    ]
    last = figures.windows[-1]
    first = figures.windows[0]
    lines.append(
        f"Repetition ({len(figures.windows)} window{'s' if len(figures.windows) != 1 else ''} of ~{WINDOW_WORDS:,} words): "
        f"distinct-2 {first.distinct_2:.2f} -> "
        f"{last.distinct_2:.2f}, distinct-3 {first.distinct_3:.2f} -> {last.distinct_3:.2f}, repeated 4-grams "
        f"{100 * first.repeated_4:.1f}% -> {100 * last.repeated_4:.1f}%. {figures.trend.verdict}"
    )
    counts = ", ".join(f"{part} {figures.part_counts[part]}" for part in PARTS if figures.part_counts[part])
    lines.append(f"Fallbacks by part (paragraphs): {counts or 'none'}."
                 + (" " + " ".join(figures.story_fallbacks) if figures.story_fallbacks else ""))
    events = ", ".join(f"{figures.guard_events[kind]} {words}" for kind, words in KIND_WORDS.items()
                       if figures.guard_events[kind])
    lines.append(f"Degeneration guard: caught {figures.caught_paragraphs} paragraph(s)"
                 + (f" ({events})." if events else "."))
    if figures.facts:
        rate = figures.recall_at_k
        asked = sum(len(f.asked_at) for f in figures.facts)
        shown = "no later instruction mentions them" if rate is None else f"{100 * rate:.0f}% of {asked} mentions"
        lines.append(f"Long-term memory: {len(figures.facts)} planted facts; recall@{figures.recall_k}: {shown}.")
    else:
        lines.append("Long-term memory: no planted facts are recorded for this story, so recall@k was not measured.")
    lines.append(continuity_line(figures))
    return lines


def render(figures: StoryFigures) -> str:
    """The whole report page."""
    story = figures.story
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Report: {escape(story.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(story.title)}</h1>",
        f'<p class="muted">Story {escape(story.id)} · {len(figures.steps)} paragraphs · {sum(figures.words):,} words'
        f" · premise: {escape(story.premise)}</p>",
        "<h2>Summary</h2><ul>" + "".join(f"<li>{escape(line)}</li>" for line in summary_lines(figures)) + "</ul>",
        _length_section(figures),
        _repetition_section(figures),
        _fallback_section(figures),
        _memory_section(figures),
        continuity_section(figures),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _length_section(figures: StoryFigures) -> str:
    low, high = figures.requested_words
    rows = [[f"{c.first}-{c.last}", f"{c.words:,}", f"{c.requested[0]:,}-{c.requested[1]:,}", f"{c.score:.1f}"]
            for c in figures.chapters]
    return (
        "<h2>Length</h2>"
        f"<p>The writer prompt asks for about {low} to {high} words a paragraph. The length score S_l "
        "(LongWriter) is 100 within the range and falls as a paragraph runs over it (a third of a point "
        "per percent) or under it (half a point); mean per paragraph: "
        f"<strong>{figures.mean_score:.1f}</strong>.</p>"
        + charts.paragraph_lengths(figures)
        + f"<p>Chapters (until stories have chapters, every {CHAPTER_PARAGRAPHS} paragraphs):</p>"
        + _table(["paragraphs", "words", "asked for", "S_l"], rows)
    )


def _repetition_section(figures: StoryFigures) -> str:
    trend = figures.trend
    cls = "flag" if trend.rising else "ok" if trend.rising is False else "muted"
    rows = [[f"{w.first_paragraph}-{w.last_paragraph}", f"{w.words:,}", f"{w.distinct_2:.3f}", f"{w.distinct_3:.3f}",
             f"{100 * w.repeated_4:.1f}%"] for w in figures.windows]
    return (
        "<h2>Repetition</h2>"
        f"<p>In windows of about {WINDOW_WORDS:,} words: distinct-n is the share of a window's n-grams that are "
        "different; repeated 4-grams are the share of its 4-grams that came earlier in the same window.</p>"
        f'<p class="{cls}">{escape(trend.verdict)}</p>'
        + charts.repetition(figures)
        + _table(["paragraphs", "words", "distinct-2", "distinct-3", "repeated 4-grams"], rows)
    )


def _fallback_section(figures: StoryFigures) -> str:
    rows = [[escape(PART_NAMES[part]), str(figures.part_counts[part])] for part in PARTS if figures.part_counts[part]]
    events = [[escape(words), str(figures.guard_events[kind])] for kind, words in KIND_WORDS.items()]
    story_level = "".join(f"<li>{escape(line)}</li>" for line in figures.story_fallbacks)
    return (
        "<h2>Fallbacks</h2>"
        "<p>Where a model's reply could not be used, the step took a stated fallback. Each mark is one "
        "paragraph whose step took one, by part.</p>"
        + (f"<ul>{story_level}</ul>" if story_level else "")
        + charts.fallbacks(figures)
        + _table(["part (role)", "paragraphs"], rows or [["none", "0"]])
        + f"<p>The degeneration guard caught <strong>{figures.caught_paragraphs}</strong> paragraph(s); the "
        "attempts it rejected, by kind:</p>"
        + _table(["attempt", "times"], events)
    )


def _memory_section(figures: StoryFigures) -> str:
    if not figures.facts:
        return ("<h2>Long-term memory</h2><p>No planted facts are recorded for this story, so recall@k was "
                "not measured.</p>")
    rows = []
    for fact in figures.facts:
        stated = str(fact.stated_at) if fact.stated_at else '<span class="flag">not stated</span>'
        asked = ", ".join(map(str, fact.asked_at)) or "-"
        recalled = f"{len(fact.recalled_at)} of {len(fact.asked_at)}" if fact.asked_at else "-"
        rows.append([escape(fact.text), stated, asked, recalled])
    rate = figures.recall_at_k
    shown = "-" if rate is None else f"{100 * rate:.0f}%"
    return (
        "<h2>Long-term memory</h2>"
        f"<p>For each planted fact: the paragraph that states it, the later paragraphs whose instruction "
        f"mentions it (two or more later, so only recall can bring it back), and how often recall brought "
        f"the stating paragraph back among the {figures.recall_k} it recalled. recall@{figures.recall_k}: "
        f"<strong>{shown}</strong>.</p>"
        + _table(["fact", "stated in", "mentioned in", "recalled"], rows)
    )

"""The report's plots as inline SVG (matplotlib, off screen), text kept as text and no fonts,
images or scripts loaded from anywhere."""

from __future__ import annotations

import io

from .figures import PARTS, StoryFigures

_SIZE = (7.5, 2.6)  # inches


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; imported here so the CLI starts without it
    matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    import matplotlib.pyplot as plt

    return plt


def _svg(figure, name: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    figure.tight_layout()
    # The salt makes element ids the same on every run and different between the page's charts.
    with matplotlib.rc_context({"svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    _pyplot().close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # without the XML prologue and doctype: it sits inside HTML


def paragraph_lengths(figures: StoryFigures) -> str:
    """Words per paragraph, with the requested range as a band."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=_SIZE)
    numbers = range(1, len(figures.words) + 1)
    low, high = figures.requested_words
    axes.axhspan(low, high, color="#cfe3cf", label=f"asked for: {low}-{high} words")
    axes.plot(numbers, figures.words, marker="o", markersize=2.5, linewidth=1, color="#34568b", label="words")
    axes.set_xlabel("paragraph")
    axes.set_ylabel("words")
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper right", frameon=False)
    return _svg(figure, "lengths")


def repetition(figures: StoryFigures) -> str:
    """Distinct-2, distinct-3 and the repeated-4-gram rate per window."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=_SIZE)
    xs = [w.last_paragraph for w in figures.windows]
    axes.plot(xs, [w.distinct_2 for w in figures.windows], marker="o", label="distinct-2")
    axes.plot(xs, [w.distinct_3 for w in figures.windows], marker="o", label="distinct-3")
    axes.plot(xs, [w.repeated_4 for w in figures.windows], marker="o", color="#b03a2e", label="repeated 4-grams")
    axes.set_xlabel("paragraph at the end of each window")
    axes.set_xlim(0, len(figures.steps) + 1)
    axes.set_ylim(0, 1.02)
    axes.legend(loc="best", frameon=False)
    return _svg(figure, "repetition")


def fallbacks(figures: StoryFigures) -> str:
    """A mark for every part of every step that was a fallback."""
    plt = _pyplot()
    parts = [part for part in PARTS if figures.part_counts[part]] or list(PARTS[2:])
    figure, axes = plt.subplots(figsize=(_SIZE[0], 0.5 + 0.32 * len(parts)))
    for row, part in enumerate(parts):
        xs = [i + 1 for i, step_parts in enumerate(figures.step_parts) if part in step_parts]
        axes.scatter(xs, [row] * len(xs), marker="|", s=90, color="#b03a2e" if part == "degeneration" else "#34568b")
    axes.set_yticks(range(len(parts)), parts)
    axes.set_ylim(-0.7, len(parts) - 0.3)
    axes.set_xlim(0.5, len(figures.step_parts) + 0.5)
    axes.set_xlabel("paragraph")
    return _svg(figure, "fallbacks")

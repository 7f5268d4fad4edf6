"""The report's continuity section: each contradiction the checks found, with its fact and sentence."""

from __future__ import annotations

from html import escape

from .figures import StoryFigures


def continuity_line(figures: StoryFigures) -> str:
    """One summary line: how many paragraphs were checked, and what was found."""
    if not figures.checked_paragraphs:
        return "Continuity: no paragraph was checked against the story bible (no facts were sent, checks were off, or the model writes prose only)."
    found = len(figures.contradictions)
    return (
        f"Continuity: {figures.checked_paragraphs} paragraphs checked against the story bible; "
        f"{found} contradiction{'s' if found != 1 else ''} found."
    )


def continuity_section(figures: StoryFigures) -> str:
    rows = "".join(
        f"<tr><td>{number}</td><td>{escape(found.entry_name)}</td><td>{escape(found.fact)}</td>"
        f"<td>{escape(found.sentence)}</td><td>{escape(found.explanation)}</td></tr>"
        for number, found in figures.contradictions
    )
    table = (
        "<table><thead><tr><th>Paragraph</th><th>Entry</th><th>Fact</th><th>Sentence</th><th>Why</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>" if rows else ""
    )
    return f"<h2>Continuity</h2><p>{escape(continuity_line(figures))}</p>{table}"

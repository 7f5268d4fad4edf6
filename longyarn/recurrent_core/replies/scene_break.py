"""The writer's mark that a chapter ends with its paragraph: a last line of its own.

The writer prompt of a story with chapters asks for a line "* * *" after the paragraph (see
chapter_memory.scene_break_rule). Models write that mark in many ways, so any of these, alone
on the reply's last line, counts: "* * *", "***", "#", "⁂", "~~~", "---", "[scene break]",
"(end of chapter)", "END OF CHAPTER 3". A mark between two lines of prose is not a chapter's
end (the chapter cannot end inside a paragraph); it is left as the paragraph has it.
"""

from __future__ import annotations

import re

from .clean import prepare

_MARK = re.compile(
    r"""^[ \t>]*(?:
        (?:[*•·∗][ \t]*){3,}            # * * *, ***, • • •
      | (?:[-–—_=~][ \t]*){3,}          # ---, ___, ~~~, ===
      | \#{1,3} | ⁂ | §
      | [\[(<*_]*[ \t]*(?:scene[ \t]+break|chapter[ \t]+break|end[ \t]+of[ \t]+(?:the[ \t]+)?(?:chapter|scene)
            (?:[ \t]+[\w-]+)?|chapter[ \t]+ends?)[ \t]*[\])>*_.]*
    )[ \t]*$""",
    re.IGNORECASE | re.VERBOSE,
)


def split_scene_break(reply: str) -> tuple[str, bool]:
    """The reply without a chapter's end mark on its last line, and whether it had one."""
    text = prepare(reply).rstrip()
    lines = text.split("\n")
    if len(lines) < 2 or not _MARK.match(lines[-1]):
        return reply, False
    prose = "\n".join(lines[:-1]).rstrip()
    return (prose, True) if prose.strip() else (reply, False)

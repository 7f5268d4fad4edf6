"""Prompts: templates kept as data files, and how a `Prompt` is laid out for each kind of model.

Template files
--------------
Each role has one file, `recurrent_core/prompt_files/<role>.md`, in a small markdown format::

    Anything before the first section is a preamble for people (what the role does, which
    fields and context sections it expects) and is ignored.

    ## system
    Who the model is and the rules it always follows.

    ## task
    What to do now. {name} inserts a field; {name:quoted} inserts it between <<< and >>>.

    ## output
    The reply format: the JSON shape and a labelled-text alternative.

    ## cue
    Where a base (not chat-tuned) model continues, e.g. "Short-term memory:". Optional.

- A section starts at a line `## system`, `## task`, `## output` or `## cue`; any other
  `## ` heading is an error, so a typo cannot silently drop a section. `system`, `task`
  and `output` are required. Each section's text is stripped of surrounding blank lines.
- `<!-- ... -->` comments are removed anywhere.
- A field is `{lowercase_name}` or `{lowercase_name:quoted}`. Nothing else in braces is
  touched, so JSON examples such as `{"title": "..."}` are written as they are.
- Substitution is one pass over the template's own text: a field's value is inserted
  verbatim and never read as a template, so braces in story text are safe.
- `{name:quoted}` is for text that someone else wrote (a premise, a reader's instruction):
  it is wrapped in `<<<` and `>>>`, and any `<<<`/`>>>` inside it are neutralised so the
  text cannot close its quotes early.
- In the `cue` section only, a literal `\\n` stands for a newline (the section is stripped,
  so a cue that must end with a newline needs it).

Story text (paragraphs, memories, the story frame) never goes through a template: it travels
as `ContextSection`s, which the layout functions below place under headings.

A writer's own templates
------------------------
`load_template(role, folders)` looks for `<role>.md` (or a file under the role's former name,
`FORMER_ROLE_NAMES`) in each of `folders` first (the front end passes a story's own folder,
then the writer's), and uses the shipped file when none has it.
A template of one's own is parsed exactly as the shipped ones are; one with a mistake is an
error that names its file, never a silent fallback.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from pathlib import Path
from importlib.resources.abc import Traversable
from dataclasses import dataclass, replace
from typing import Iterable

from .errors import LongyarnError
from .local_lm.chat_format import chat_transcript
from .types import ContextSection, Prompt

TEMPLATE_PACKAGE = __package__  # "longyarn.recurrent_core"
TEMPLATE_FOLDER = "prompt_files"
QUOTE_OPEN, QUOTE_CLOSE = "<<<", ">>>"

_SECTION_NAMES = ("system", "task", "output", "cue")
_REQUIRED_SECTIONS = ("system", "task", "output")
_ROLE_NAME = re.compile(r"[a-z][a-z_]*\Z")
_SECTION_HEADING = re.compile(r"^##[ \t]+(\S.*?)[ \t]*$", re.MULTILINE)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*)(?::([a-z]+))?\}")
_FIELD_MODIFIERS = ("quoted",)
_DEFAULT_CUE = "Answer:"


class PromptTemplateError(LongyarnError):
    """A prompt template file is missing or malformed, or a field was not given."""


@dataclass(frozen=True)
class PromptTemplate:
    """One role's prompt template, parsed from its data file."""

    role: str
    system: str
    task: str
    output: str
    cue: str = _DEFAULT_CUE
    source: str = ""  # the file of a writer's own template; "" for the shipped one

    @property
    def fields(self) -> frozenset[str]:
        """The names of the fields the template needs."""
        parts = (self.system, self.task, self.output)
        return frozenset(match.group(1) for part in parts for match in _FIELD.finditer(part))

    def render(self, **fields: object) -> tuple[str, str, str]:
        """Fill in the fields and return (system, task, output_format).

        Extra fields are ignored; a missing one raises `PromptTemplateError` naming it.
        """
        missing = sorted(self.fields - fields.keys())
        if missing:
            names = ", ".join(missing)
            raise PromptTemplateError(
                f"The '{self.role}' prompt needs the field(s) {names}, which were not given; "
                f"nothing was sent to the model; pass them to render()."
            )
        return tuple(_substitute(part, fields) for part in (self.system, self.task, self.output))


def _substitute(template_text: str, fields: dict[str, object]) -> str:
    def replace(match: re.Match) -> str:
        value = str(fields[match.group(1)])
        if match.group(2) == "quoted":
            return quote(value)
        return value

    return _FIELD.sub(replace, template_text)


def quote(text: str) -> str:
    """Wrap someone else's text in the prompt quote marks, so it cannot close them itself."""
    # Runs of angle brackets shrink to one, so the text holds no "<<<" or ">>>" of its own;
    # a space keeps a bracket at either end from merging with the quote marks.
    inner = re.sub(r">{2,}", ">", re.sub(r"<{2,}", "<", text)).strip()
    if inner.startswith("<"):
        inner = " " + inner
    if inner.endswith(">"):
        inner += " "
    return f"{QUOTE_OPEN}{inner}{QUOTE_CLOSE}"


ROLES = (
    "writer", "memory", "planner", "opening", "chooser", "repair", "summary", "passage", "chapter_summary",
    "continuity",
)
"""The roles that have a template, each in `prompt_files/<role>.md`."""
# A role's name before it was renamed: a writer's own template saved under it is still theirs.
FORMER_ROLE_NAMES = {"opening": "bible"}


def load_template(role: str, folders: tuple[Path, ...] = ()) -> PromptTemplate:
    """`role`'s template: the first `<role>.md` in `folders`, else the shipped one (cached;
    a file of one's own is read again once it changes)."""
    _check_role(role)
    own = find_own_template(role, folders)
    if own is not None:
        try:
            return _own_template(role, own, own.stat().st_mtime_ns)
        except FileNotFoundError:  # removed meanwhile: the shipped one applies
            pass
    return _shipped_template(role)


def find_own_template(role: str, folders: tuple[Path, ...]) -> Path | None:
    """The file of the first folder that has a template for `role`, if any: `<role>.md`, or
    one saved under the role's former name."""
    names = (role, FORMER_ROLE_NAMES[role]) if role in FORMER_ROLE_NAMES else (role,)
    for folder in folders:
        for name in names:
            candidate = Path(folder) / f"{name}.md"
            if candidate.is_file():
                return candidate
    return None


def shipped_template_text(role: str) -> str:
    """The text of the template longyarn ships for `role`."""
    _check_role(role)
    return _template_folder().joinpath(f"{role}.md").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=64)
def _own_template(role: str, path: Path, _mtime_ns: int) -> PromptTemplate:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PromptTemplateError(
            f"Your prompt template {path} could not be read ({error}); nothing was sent to the "
            "model; fix the file, or reset it to the shipped one (longyarn prompts reset)."
        ) from None
    template = parse_template(role, source, str(path))
    return replace(template, source=str(path))


def _check_role(role: str) -> None:
    if not isinstance(role, str) or not _ROLE_NAME.match(role):
        raise PromptTemplateError(
            f"{role!r} is not a prompt role name; no template was loaded; use a lowercase "
            f"name such as 'writer'."
        )


@functools.lru_cache(maxsize=None)
def _shipped_template(role: str) -> PromptTemplate:
    """Read and parse `prompt_files/<role>.md` from the installed package (cached)."""
    resource = _template_folder().joinpath(f"{role}.md")
    where = f"{TEMPLATE_FOLDER}/{role}.md"
    try:
        source = resource.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise PromptTemplateError(
            f"There is no prompt template for the role '{role}' ({where} is missing); nothing "
            f"was sent to the model; reinstall longyarn or restore the file."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PromptTemplateError(
            f"The prompt template {where} could not be read ({error}); nothing was sent to "
            f"the model; restore the file as UTF-8 text."
        ) from None
    return parse_template(role, source, where)


def _template_folder() -> Traversable:
    return importlib.resources.files(TEMPLATE_PACKAGE).joinpath(TEMPLATE_FOLDER)


def parse_template(role: str, source: str, where: str = "the template") -> PromptTemplate:
    """Parse a template file's text (see the module docstring for the format)."""
    source = _COMMENT.sub("", source.replace("\r\n", "\n"))
    headings = list(_SECTION_HEADING.finditer(source))
    sections: dict[str, str] = {}
    for index, heading in enumerate(headings):
        name = heading.group(1).strip().lower()
        if name not in _SECTION_NAMES:
            raise PromptTemplateError(
                f"The prompt template {where} has an unknown section '## {heading.group(1)}'; "
                f"nothing was sent to the model; use only {', '.join(_SECTION_NAMES)}."
            )
        if name in sections:
            raise PromptTemplateError(
                f"The prompt template {where} has two '## {name}' sections; nothing was sent "
                f"to the model; merge them into one."
            )
        end = headings[index + 1].start() if index + 1 < len(headings) else len(source)
        sections[name] = source[heading.end() : end].strip()
    for name in _REQUIRED_SECTIONS:
        if not sections.get(name):
            raise PromptTemplateError(
                f"The prompt template {where} has no '## {name}' section, or it is empty; "
                f"nothing was sent to the model; restore the file."
            )
    for name, text in sections.items():
        for match in _FIELD.finditer(text):
            if match.group(2) is not None and match.group(2) not in _FIELD_MODIFIERS:
                raise PromptTemplateError(
                    f"The prompt template {where} uses the unknown field modifier "
                    f"'{match.group(0)}' in '## {name}'; nothing was sent to the model; "
                    f"use {{name}} or {{name:quoted}}."
                )
    cue = sections.get("cue", "").replace("\\n", "\n") or _DEFAULT_CUE
    return PromptTemplate(role, sections["system"], sections["task"], sections["output"], cue)


def render_prompt(
    role: str,
    *,
    context_sections: Iterable[ContextSection],
    folders: tuple[Path, ...] = (),
    **fields: object,
) -> Prompt:
    """Load `role`'s template (see `load_template`), fill in `fields`, and attach the context
    sections."""
    template = load_template(role, folders)
    system, task, output_format = template.render(**fields)
    return Prompt(
        role=role,  # type: ignore[arg-type]  # repair/chooser are roles too
        system=system,
        task=task,
        context=tuple(context_sections),
        output_format=output_format,
        template=template.source,
    )


def completion_cue(role: str, folders: tuple[Path, ...] = ()) -> str:
    """The text a base model's prompt ends with for `role`; parse `cue + reply` afterwards."""
    try:
        return load_template(role, folders).cue
    except PromptTemplateError:
        return _DEFAULT_CUE


# ---- layout ----------------------------------------------------------------------------


def _context_block(context: Iterable[ContextSection]) -> str:
    """Each non-empty section under a heading with its name."""
    return "\n\n".join(
        f"## {section.name}\n{section.text.strip()}" for section in context if section.text.strip()
    )


def _body_parts(prompt: Prompt, jrt_repeats: int) -> list[str]:
    if not isinstance(jrt_repeats, int) or jrt_repeats < 1:
        raise ValueError(f"jrt_repeats must be a positive integer, not {jrt_repeats!r}")
    task = prompt.task.strip()
    context = _context_block(prompt.context)
    output_format = prompt.output_format.strip()
    if jrt_repeats == 1 or not context:
        parts = [context, task, output_format]
    else:
        # JRT ("just read twice"): a recurrent model reads the question before the material,
        # then the material again with the question in mind, then the question once more.
        parts = [task, *([context] * jrt_repeats), task, output_format]
    return [part for part in parts if part]


def user_content(prompt: Prompt, jrt_repeats: int = 1) -> str:
    """The user turn's text: context then task then output format (JRT: see layout_messages)."""
    return "\n\n".join(_body_parts(prompt, jrt_repeats))


def layout_messages(prompt: Prompt, jrt_repeats: int = 1) -> list[dict]:
    """OpenAI chat messages for a prompt: a system message, then one user message.

    With `jrt_repeats=1` the user message holds the context sections (each under a heading
    with its name), the task, and the output format. With `jrt_repeats=2` (JRT, "just read
    twice") it holds the task, the context, the context again, the task again, and the output
    format. Sections with empty text are left out; with no context at all the task appears once.
    """
    messages = []
    if prompt.system.strip():
        messages.append({"role": "system", "content": prompt.system.strip()})
    messages.append({"role": "user", "content": user_content(prompt, jrt_repeats)})
    return messages


# Per role: the context section a base model's completion ends on, and whether a new
# paragraph starts after it (see `layout_completion`).
_PROSE_LEAD_IN = {"writer": ("Previous paragraph", True), "passage": ("Text before the passage", False)}


def layout_completion(prompt: Prompt, jrt_repeats: int = 2, chat: bool = True) -> str:
    """One prompt string for a local recurrent model (RWKV-7).

    `chat=True` (a chat-tuned model such as RWKV-7 G1) gives one user turn of RWKV's chat
    transcript (`local_lm.chat_format`, which collapses the blank lines inside it)::

        User: <system>\\n<user content, as in layout_messages>\\n\\nAssistant:

    `chat=False` (a base model) gives a completion: the system text, the body, and the role's
    cue from its template ("Next paragraph:", "Short-term memory:", "Instruction 1:"), so the
    model continues exactly where the answer starts. Parse `completion_cue(role) + reply`.
    The writer's cue is followed by the previous paragraph, and a passage's by the text before
    it, so the model goes on from prose.

    Order matters for the local model's prefix-state cache, which can reuse the state after
    any prefix it has seen before: the stable parts come first (the system rules, then the
    context in the engine's order: story frame, then short-term memory, recalled passages and
    the previous paragraph), the per-step task last. JRT must put the task first; the system
    rules still come before it, so at least that head stays cacheable.
    """
    system = prompt.system.strip()
    body = user_content(prompt, jrt_repeats)
    if chat:
        return chat_transcript([("user", "\n".join(part for part in (system, body) if part))])
    cue = completion_cue(prompt.role, (Path(prompt.template).parent,) if prompt.template else ())
    # A base model continues prose best straight after prose: end on the story itself. The
    # writer goes on after the previous paragraph, in a new one; co-writing (a passage) goes on
    # from the very words before the cursor or the selection, mid-sentence if need be.
    lead_in = _PROSE_LEAD_IN.get(prompt.role)
    if lead_in is not None:
        section, paragraph_break = lead_in
        previous = next((s.text for s in prompt.context if s.name == section and s.text.strip()), "")
        if previous:
            cue = f"{cue.rstrip()}\n{previous.strip()}" + ("\n\n" if paragraph_break else "")
    return "\n\n".join(part for part in (system, body, cue) if part)

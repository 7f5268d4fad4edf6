"""A writer's own prompt templates: where they live, how they differ from the shipped ones, and
putting the shipped ones back (`longyarn prompts`).

Templates are looked for in `<config dir>/prompts/stories/<story id>/<role>.md` (one story's),
then `<config dir>/prompts/<role>.md` (every story's), then among the shipped ones (see
`longyarn.recurrent_core.prompts.load_template`); a file under a role's former name counts as
the role's. Resetting never deletes a writer's file: it is renamed aside, so their words are kept.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from pathlib import Path

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.prompts import FORMER_ROLE_NAMES, ROLES, parse_template, shipped_template_text

from .settings import prompts_folder


def own_folder(story_id: str | None = None) -> Path:
    """Where a story's own templates live (`story_id`), else the writer's for every story."""
    return prompts_folder() / "stories" / story_id if story_id else prompts_folder()


def _roles(role: str | None) -> tuple[str, ...]:
    if role is None:
        return ROLES
    if role not in ROLES:
        raise InvalidInput(f"There is no prompt role '{role}'; nothing was changed; use one of {', '.join(ROLES)}.")
    return (role,)


def _own_files(role: str, story_id: str | None) -> list[Path]:
    """The writer's files for `role` in the folder: `<role>.md`, then one under its former name."""
    names = (role, FORMER_ROLE_NAMES[role]) if role in FORMER_ROLE_NAMES else (role,)
    folder = own_folder(story_id)
    return [folder / f"{name}.md" for name in names if (folder / f"{name}.md").is_file()]


def own_templates(story_id: str | None = None) -> dict[str, Path]:
    """The roles that have a template of the writer's own in the folder, and the file in use."""
    return {role: files[0] for role in ROLES if (files := _own_files(role, story_id))}


def diff(role: str | None = None, story_id: str | None = None) -> str:
    """A unified diff from each shipped template to the writer's own ("" when none differs)."""
    parts = []
    for name in _roles(role):
        own = own_templates(story_id).get(name)
        if own is None:
            continue
        shipped = shipped_template_text(name).splitlines(keepends=True)
        mine = own.read_text(encoding="utf-8").splitlines(keepends=True)
        parts.extend(difflib.unified_diff(shipped, mine, f"shipped/{name}.md", str(own)))
    return "".join(parts)


def start_own(role: str, story_id: str | None = None) -> Path:
    """Copy the shipped template for `role` into the writer's folder to edit (an existing one
    is kept as it is); its path."""
    (name,) = _roles(role)
    own = own_templates(story_id).get(name) or own_folder(story_id) / f"{name}.md"
    if not own.exists():
        own.parent.mkdir(parents=True, exist_ok=True)
        own.write_text(shipped_template_text(name), encoding="utf-8")
    return own


def check(role: str | None = None, story_id: str | None = None) -> list[str]:
    """One sentence per own template that would not load (it would stop every request of its role)."""
    problems = []
    for name, path in own_templates(story_id).items():
        if role is not None and name != role:
            continue
        try:
            parse_template(name, path.read_text(encoding="utf-8"), str(path))
        except Exception as error:  # PromptTemplateError, or a file that cannot be read
            problems.append(str(error))
    return problems


def reset(role: str | None = None, story_id: str | None = None) -> list[Path]:
    """Use the shipped templates again: each own file is renamed aside (`<role>.md.<time>.bak`),
    never deleted. The files set aside."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    moved = []
    for name in _roles(role):
        for own in _own_files(name, story_id):
            aside = own.with_name(f"{own.name}.{stamp}.bak")
            own.rename(aside)
            moved.append(aside)
    return moved

"""`longyarn bible ID list|add|edit|remove|export|import`: a story's bible from the command line.

Entries are named by their name, an alias or their id, in any case. Facts shown and changed are
those of the story's current branch, numbered by paragraph on it. Bad input is one sentence on
standard error, exit status 2, and nothing changed: every check runs before the first write.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from longyarn.recurrent_core.bible import ENTRY_KINDS

KINDS = "{" + ",".join(ENTRY_KINDS) + "}"
DB_HELP = "database file or SQLAlchemy URL (default: the user data dir)"


def add_bible_parser(commands: argparse._SubParsersAction) -> None:
    bible = commands.add_parser(
        "bible", help="the story bible: characters, places, objects, groups, lore and rules, with dated facts",
        description="The story bible of story ID. Name an entry by its name, an alias or its id.",
    )
    bible.add_argument("story_id", metavar="ID")
    bible.add_argument("--db", help=DB_HELP)
    actions = bible.add_subparsers(dest="bible_action", required=True, metavar="ACTION")

    listing = _action(actions, "list", "the entries by kind, with aliases and facts (as at the current paragraph)")
    listing.add_argument("--format", choices=["text", "json"], default="text")

    add = _action(actions, "add", "add an entry")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", required=True, metavar=KINDS)
    _key_options(add)
    add.add_argument("--description", default="", help="what the model is told about it")
    add.add_argument("--notes", default="", help="your own notes (never sent to the model)")
    add.add_argument("--fact", action="append", default=[], metavar="TEXT", help="a fact (repeat for more)")
    add.add_argument("--fact-from", type=int, default=1, metavar="N",
                     help="the paragraph the facts hold from (default 1)")
    add.add_argument("--always", action="store_true", help="put it in every prompt, named or not")

    edit = _action(actions, "edit", "change an entry or its facts")
    edit.add_argument("entry", metavar="NAME_OR_ID")
    edit.add_argument("--name")
    edit.add_argument("--kind", metavar=KINDS)
    _key_options(edit, verb="add ")
    edit.add_argument("--remove-alias", action="append", default=[], metavar="A")
    edit.add_argument("--remove-secondary-key", action="append", default=[], metavar="K")
    edit.add_argument("--description")
    edit.add_argument("--notes")
    edit.add_argument("--always", action=argparse.BooleanOptionalAction, default=None)
    edit.add_argument("--add-fact", action="append", default=[], metavar="TEXT")
    edit.add_argument("--from", dest="from_paragraph", type=int, metavar="N",
                      help="the paragraph the added facts hold from (default 1)")
    edit.add_argument("--until", type=int, metavar="M", help="the last paragraph the added facts hold in")
    edit.add_argument("--end-fact", metavar="FACT_ID", help="end this fact (its id, as `list` shows it)")
    edit.add_argument("--at", type=int, metavar="M", help="the last paragraph the ended fact holds in")
    edit.add_argument("--remove-fact", action="append", default=[], metavar="FACT_ID")

    remove = _action(actions, "remove", "remove an entry and all its facts")
    remove.add_argument("entry", metavar="NAME_OR_ID")

    export = _action(actions, "export", "write the bible as a JSON file that `import` reads")
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")

    imported = _action(actions, "import", "add the entries of a longyarn, SillyTavern or NovelAI JSON file")
    imported.add_argument("file", type=Path, metavar="FILE")
    imported.add_argument("--replace", action="store_true",
                          help="remove every entry (and its facts) first")


def _action(actions: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    # SUPPRESS: given before the action, --db is not overwritten by this parser's default.
    parser.add_argument("--db", default=argparse.SUPPRESS, help=DB_HELP)
    return parser


def _key_options(parser: argparse.ArgumentParser, verb: str = "") -> None:
    parser.add_argument("--alias", action="append", default=[], metavar="A",
                        help=f"{verb}another name it goes by (repeat for more)")
    parser.add_argument("--secondary-key", action="append", default=[], metavar="K",
                        help=f"{verb}a further word that brings it into a prompt (repeat for more)")


def run_bible(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        story = store.get_story(args.story_id)
        ACTIONS[args.bible_action](store, story, args)
    finally:
        store.close()
    return 0


def _open_store(args: argparse.Namespace):
    from longyarn.recurrent_core.errors import InvalidInput
    from longyarn.storage.db import open_store

    from .settings import load_settings

    db = load_settings(db=args.db).db
    if "://" not in db and not Path(db).expanduser().exists():
        raise InvalidInput(
            f"There is no database at {db}, so there is no story {args.story_id} and nothing was "
            "changed; check --db."
        )
    return open_store(db)


def _list(store, story, args: argparse.Namespace) -> None:
    from .bible_files import bible_text, entries_json

    entries = store.list_entries(story.id)
    facts = store.facts_on_branch(story.id, story.head_step_id)
    if args.format == "json":
        print(json.dumps(entries_json(entries, facts, ids=True), ensure_ascii=False, indent=2))
        return
    sys.stdout.write(bible_text(story, store.count_steps(story.id), entries, facts))
    if not entries:
        print(f"Add one with `longyarn bible {story.id} add --name NAME --kind KIND`.", file=sys.stderr)


def _add(store, story, args: argparse.Namespace) -> None:
    from longyarn.recurrent_core.bible import FactDraft

    entry = store.add_entry(
        story.id, name=args.name, kind=args.kind, aliases=args.alias,
        secondary_keys=args.secondary_key, description=args.description, notes=args.notes,
        always=args.always, facts=[FactDraft(text, args.fact_from) for text in args.fact],
    )
    print(f"Added the {entry.kind} {entry.name!r} ({entry.id}) with {_count(len(args.fact), 'fact')} "
          f"to story {story.id}.")


def _edit(store, story, args: argparse.Namespace) -> None:
    from longyarn.recurrent_core.bible import FactDraft, find_entry, find_fact
    from longyarn.recurrent_core.errors import InvalidInput

    from .session.bible_writes import EntryEdit, check_entry_edit, write_entry_edit

    entries = store.list_entries(story.id)
    entry = find_entry(entries, args.entry)
    facts = store.facts_on_branch(story.id, story.head_step_id)
    changes = {
        field: value
        for field, value in (("name", args.name), ("kind", args.kind), ("description", args.description),
                             ("notes", args.notes), ("always", args.always))
        if value is not None
    }
    if args.alias or args.remove_alias:
        changes["aliases"] = _edited_keys(entry, entry.aliases, args.alias, args.remove_alias, "alias")
    if args.secondary_key or args.remove_secondary_key:
        changes["secondary_keys"] = _edited_keys(
            entry, entry.secondary_keys, args.secondary_key, args.remove_secondary_key, "secondary key"
        )
    if (args.from_paragraph is not None or args.until is not None) and not args.add_fact:
        raise InvalidInput(
            "--from and --until date the facts added with --add-fact, and none was given, so nothing "
            "was changed; add --add-fact TEXT."
        )
    if (args.end_fact is None) != (args.at is None):
        raise InvalidInput(
            "--end-fact FACT_ID and --at M go together (M: the last paragraph the fact holds in), "
            "so nothing was changed; give both."
        )
    start = 1 if args.from_paragraph is None else args.from_paragraph
    ended = find_fact(facts, args.end_fact, entry) if args.end_fact is not None else None
    edit = EntryEdit(
        fields=changes,
        added=tuple(FactDraft(text, start, args.until) for text in args.add_fact),
        changed=((ended, {"until_paragraph": args.at}),) if ended is not None else (),
        removed=tuple(find_fact(facts, fact_id, entry) for fact_id in args.remove_fact),
    )
    if not edit:
        raise InvalidInput(
            f"Nothing to change in {entry.name!r} was given, so nothing was changed; add --name, "
            "--kind, --alias, --description, --notes, --always, --add-fact, --end-fact or --remove-fact."
        )
    check_entry_edit(entries, entry, edit)  # every part, before the first write: a bad one changes nothing
    entry = write_entry_edit(store, entry, edit, [])

    done = []
    if changes:
        done.append(f"changed its {', '.join(field.replace('_', ' ') for field in changes)}")
    if edit.added:
        done.append(f"added {_count(len(edit.added), 'fact')}")
    if ended is not None:
        done.append(f"ended fact {ended.id[:8]} at paragraph {args.at}")
    if edit.removed:
        done.append(f"removed {_count(len(edit.removed), 'fact')}")
    print(f"Edited the {entry.kind} {entry.name!r}: {'; '.join(done)}.")


def _edited_keys(entry, current: tuple[str, ...], added: list[str], removed: list[str], what: str) -> list[str]:
    from longyarn.recurrent_core.bible import name_key
    from longyarn.recurrent_core.errors import BibleError

    kept = list(current)
    for key in removed:
        matching = [k for k in kept if name_key(k) == name_key(key)]
        if not matching:
            raise BibleError(
                f"{entry.name!r} has no {what} {key!r}, so nothing was changed; "
                "list the bible to see its aliases and keys."
            )
        kept.remove(matching[0])
    return kept + list(added)


def _remove(store, story, args: argparse.Namespace) -> None:
    from longyarn.recurrent_core.bible import find_entry

    entry = find_entry(store.list_entries(story.id), args.entry)
    store.remove_entry(entry.id)
    print(f"Removed the {entry.kind} {entry.name!r} and its facts from story {story.id}.")


def _export(store, story, args: argparse.Namespace) -> None:
    from .bible_files import bible_document
    from .export import write_atomically

    document = bible_document(
        story, store.list_entries(story.id), store.facts_on_branch(story.id, story.head_step_id)
    )
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if args.out:
        write_atomically(args.out, text)
        print(f"Wrote {args.out} ({_count(len(document['entries']), 'entry', 'entries')})", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _import(store, story, args: argparse.Namespace) -> None:
    from longyarn.recurrent_core.bible import name_key
    from longyarn.recurrent_core.errors import BibleError

    from .bible_files import read_bible_file

    imported = read_bible_file(args.file)
    existing = store.list_entries(story.id)
    if not args.replace:  # said here with the way out; the store refuses it anyway
        taken = {name_key(name): entry for entry in existing for name in entry.names}
        for draft in imported.drafts:
            for name in (draft.name, *draft.aliases):
                if name_key(name) in taken:
                    held = taken[name_key(name)]
                    raise BibleError(
                        f"{args.file} has an entry called {name!r}, as the bible's {held.kind} "
                        f"{held.name!r} is, so nothing was imported; import with --replace to "
                        "replace the whole bible, or rename one of them first."
                    )
    entries = store.import_entries(story.id, imported.drafts, replace=args.replace)
    replaced = f", replacing its {_count(len(existing), 'entry', 'entries')}" if args.replace else ""
    print(f"Imported {_count(len(entries), 'entry', 'entries')} from {args.file} ({imported.source}) into story {story.id}{replaced}.")
    if imported.dropped_keys:
        print(
            f"Keys that several entries shared were kept on the first only: {', '.join(imported.dropped_keys)}.",
            file=sys.stderr,
        )


def _count(number: int, one: str, many: str = "") -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"


ACTIONS = {"list": _list, "add": _add, "edit": _edit, "remove": _remove, "export": _export, "import": _import}

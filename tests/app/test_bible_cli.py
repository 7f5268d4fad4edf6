"""`longyarn bible` as a writer runs it: real processes on a real database, read back through
the command itself. Bad input is one sentence, exit status 2, no traceback, and nothing lost."""

from __future__ import annotations

import json

import pytest

from longyarn.app.cli import EXIT_ERROR
from longyarn.recurrent_core.bible import FactDraft
from longyarn.storage import open_store
from tests.app.test_batch import run
from tests.storage.helpers import write_chain


@pytest.fixture
def story(tmp_path):
    """A story of three paragraphs on one branch and a sibling of its third; returns (db, id, steps)."""
    db = tmp_path / "bible.db"
    with open_store(db) as store:
        story = store.create_story(title="The Lighthouse", premise="A keeper.", genre="fable", outline="")
        steps = write_chain(store, story.id, ["The lamp was lit.", "Mara climbed.", "The sea rose."])
        write_chain(store, story.id, ["The sea fell."], parent_id=steps[1].id)
        store.set_head(story.id, steps[-1].id)
    return db, story.id, steps


def bible(db, story_id: str, *args: str) -> tuple[int, str, str]:
    return run("bible", story_id, *args, "--db", str(db))


def ok(db, story_id: str, *args: str) -> str:
    code, stdout, stderr = bible(db, story_id, *args)
    assert code == 0, stderr
    return stdout


def entries(db, story_id: str) -> list[dict]:
    return json.loads(ok(db, story_id, "list", "--format", "json"))


def refused(db, story_id: str, *args: str) -> str:
    """Run a command that must fail; returns its one sentence, checking the bible is unchanged."""
    before = entries(db, story_id)
    code, stdout, stderr = bible(db, story_id, *args)
    assert code == EXIT_ERROR, stdout
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error: ") and "nothing was" in stderr
    assert entries(db, story_id) == before, "a refused command changes nothing"
    return stderr


def test_a_writer_adds_entries_and_lists_them_by_kind_with_their_facts(story):
    db, story_id, _ = story
    said = ok(db, story_id, "add", "--name", "Mara", "--kind", "character", "--alias", "the captain",
              "--alias", "Mara Voss", "--secondary-key", "lamp", "--description", "Keeper of the light.",
              "--notes", "Older than she looks.", "--fact", "Mara is a sailor.", "--fact",
              "Mara fears the dark.", "--fact-from", "2", "--always")
    assert said.startswith("Added the character 'Mara'") and "2 facts" in said
    ok(db, story_id, "add", "--name", "Brine", "--kind", "place", "--description", "A harbour town.")
    ok(db, story_id, "add", "--name", "Ada", "--kind", "CHARACTER")

    listing = ok(db, story_id, "list")
    assert listing.splitlines()[0] == f"Story bible of 'The Lighthouse' ({story_id}), at paragraph 3: 3 entries"
    body = listing.split("\n", 2)[2]
    assert body.index("Characters") < body.index("  Ada") < body.index("  Mara") < body.index("Places")
    assert "  Mara  [always]\n    also: the captain, Mara Voss\n    keys: lamp\n    Keeper of the light." in body
    assert "from paragraph 2: Mara is a sailor." in body and "notes: Older than she looks." in body

    [ada, mara, brine] = entries(db, story_id)
    assert (ada["name"], mara["name"], brine["name"]) == ("Ada", "Mara", "Brine")
    assert {key: mara[key] for key in ("kind", "aliases", "description", "notes", "always")} == {
        "kind": "character", "aliases": ["the captain", "Mara Voss"], "description": "Keeper of the light.",
        "notes": "Older than she looks.", "always": True,
    }
    assert [(f["text"], f["from"], f["until"]) for f in mara["facts"]] == [
        ("Mara is a sailor.", 2, None), ("Mara fears the dark.", 2, None),
    ]


def test_facts_change_as_the_story_goes_on(story):
    db, story_id, _ = story
    ok(db, story_id, "add", "--name", "Mara", "--kind", "character", "--alias", "the captain",
       "--fact", "Mara is a sailor.")
    [sailor] = entries(db, story_id)[0]["facts"]

    said = ok(db, story_id, "edit", "THE CAPTAIN", "--end-fact", sailor["id"][:8], "--at", "12",
              "--add-fact", "Mara is a captain.", "--from", "13", "--alias", "Captain Voss",
              "--remove-alias", "the captain", "--no-always", "--description", "She keeps the light.")
    assert said.startswith("Edited the character 'Mara':") and "ended fact" in said

    [mara] = entries(db, story_id)
    assert mara["aliases"] == ["Captain Voss"] and mara["description"] == "She keeps the light."
    assert [(f["text"], f["from"], f["until"]) for f in mara["facts"]] == [
        ("Mara is a sailor.", 1, 12), ("Mara is a captain.", 13, None),
    ]
    listing = ok(db, story_id, "list")
    assert "paragraphs 1-12: Mara is a sailor." in listing and "from paragraph 13: Mara is a captain." in listing

    captain = mara["facts"][1]["id"]
    ok(db, story_id, "edit", "mara", "--remove-fact", captain)
    ok(db, story_id, "edit", mara["id"], "--name", "Mara Voss", "--kind", "group")
    [renamed] = entries(db, story_id)
    assert (renamed["name"], renamed["kind"], len(renamed["facts"])) == ("Mara Voss", "group", 1)

    said = ok(db, story_id, "remove", "captain voss")
    assert said.startswith("Removed the group 'Mara Voss'")
    assert entries(db, story_id) == []


def test_the_listing_shows_the_facts_of_the_current_branch(story):
    db, story_id, steps = story
    ok(db, story_id, "add", "--name", "Mara", "--kind", "character", "--fact", "Mara was born at sea.")
    with open_store(db) as store:  # what a step learns: a fact of its own branch
        mara = store.list_entries(story_id)[0]
        store.add_fact(mara.id, "Mara saw the flood.", from_paragraph=3, step_id=steps[2].id)
    assert [f["text"] for f in entries(db, story_id)[0]["facts"]] == ["Mara was born at sea.", "Mara saw the flood."]

    with open_store(db) as store:
        store.set_head(story_id, steps[1].id)  # undo the third paragraph
    assert [f["text"] for f in entries(db, story_id)[0]["facts"]] == ["Mara was born at sea."]


@pytest.mark.parametrize(
    ("command", "sentence"),
    [
        (["add", "--name", "mara", "--kind", "place"], "'mara' is already the name of the character 'Mara'"),
        (["add", "--name", "Voss", "--kind", "object", "--alias", "The Captain"], "'The Captain' is already an alias of"),
        (["edit", "Brine", "--name", "MARA"], "'MARA' is already the name of the character 'Mara'"),
        (["edit", "Nobody", "--name", "X"], "The story bible has no entry called 'Nobody'"),
        (["remove", "Nobody"], "The story bible has no entry called 'Nobody'"),
        (["edit", "Mara", "--add-fact", "Mara sleeps.", "--from", "5", "--until", "3"],
         "A fact cannot end at paragraph 3 before it starts at paragraph 5"),
        (["edit", "Mara", "--end-fact", "FACT", "--at", "1"], "cannot end at paragraph 1 before it starts at paragraph 2"),
        (["edit", "Mara", "--name", "Mara Voss", "--end-fact", "FACT", "--at", "1"], "cannot end at paragraph 1"),
        (["edit", "Mara", "--end-fact", "ffffffff", "--at", "9"], "'Mara' has none of its facts with id 'ffffffff'"),
        (["edit", "Mara", "--end-fact", "FACT"], "--end-fact FACT_ID and --at M go together"),
        (["edit", "Mara", "--remove-alias", "the sailor"], "'Mara' has no alias 'the sailor'"),
        (["edit", "Mara"], "Nothing to change in 'Mara' was given"),
        (["add", "--name", "Gull", "--kind", "ship"], "'ship' is not a kind of bible entry"),
        (["add", "--name", " ", "--kind", "object"], "A bible entry needs a name"),
    ],
)
def test_bad_input_is_one_sentence_and_changes_nothing(story, command, sentence):
    db, story_id, _ = story
    with open_store(db) as store:  # set up in-process; the commands under test run as a writer's would
        store.add_entry(story_id, name="Mara", kind="character", aliases=["the captain"],
                        facts=[FactDraft("Mara is a sailor.", 2)])
        store.add_entry(story_id, name="Brine", kind="place")
        fact = store.facts_on_branch(story_id, None)[0].id

    stderr = refused(db, story_id, *[fact if part == "FACT" else part for part in command])
    assert sentence in stderr


def without_ids(listed: list[dict]) -> list[dict]:
    """Entries as another story would hold them: the same but for their ids."""
    return [
        {key: value for key, value in entry.items() if key != "id"}
        | {"facts": [(fact["text"], fact["from"], fact["until"]) for fact in entry["facts"]]}
        for entry in listed
    ]


def test_an_exported_bible_imports_into_another_story_and_replaces_on_request(story, tmp_path):
    db, story_id, _ = story
    ok(db, story_id, "add", "--name", "Mara", "--kind", "character", "--alias", "the captain",
       "--fact", "Mara is a sailor.")
    [mara] = entries(db, story_id)
    ok(db, story_id, "edit", "Mara", "--end-fact", mara["facts"][0]["id"], "--at", "12",
       "--add-fact", "Mara is a captain.", "--from", "13")
    ok(db, story_id, "add", "--name", "Brine", "--kind", "place", "--always")
    out = tmp_path / "exported" / "bible.json"
    code, _, stderr = bible(db, story_id, "export", "--out", str(out))
    assert code == 0 and "Wrote" in stderr
    document = json.loads(out.read_text())
    assert (document["format"], document["version"], document["story"]["id"]) == ("longyarn-bible", 1, story_id)

    with open_store(db) as store:
        other = store.create_story(title="Sequel", premise="p", genre="g", outline="").id
    ok(db, other, "add", "--name", "Ada", "--kind", "character")
    said = ok(db, other, "import", str(out))
    assert "Imported 2 entries" in said and "a longyarn bible" in said
    assert without_ids(entries(db, other)) == without_ids([entries(db, other)[0]] + entries(db, story_id))

    stderr = refused(db, other, "import", str(out))
    assert "has an entry called 'Mara', as the bible's character 'Mara' is" in stderr and "--replace" in stderr

    said = ok(db, other, "import", str(out), "--replace")
    assert "replacing its 3 entries" in said
    assert without_ids(entries(db, other)) == without_ids(entries(db, story_id))
    assert json.loads(ok(db, other, "export"))["entries"] == document["entries"]


@pytest.mark.parametrize(
    ("content", "sentence"),
    [
        ('{"entries": [{"title": "Mara"}]}', 'is not a longyarn bible (it has no "format": "longyarn-bible")'),
        ("Mara is a sailor.", "is not JSON"),
        ('{"format": "longyarn-bible", "version": 2, "entries": []}', "is a version 2 bible, newer than"),
        ('{"format": "longyarn-bible", "version": 1, "entries": [{"name": "Gull", "kind": "object",'
         ' "facts": [{"text": "Sinks.", "from": 9, "until": 4}]}]}',
         "Entry 1 of IMPORT (Gull): a fact cannot end at paragraph 4 before it starts at paragraph 9"),
        ('{"format": "longyarn-bible", "version": 1, "entries": [{"name": "Gull", "kind": "object"},'
         ' {"name": "gull", "kind": "lore"}]}', "Two entries are named 'Gull'"),
    ],
)
def test_an_import_file_that_is_not_our_format_changes_nothing(story, tmp_path, content, sentence):
    db, story_id, _ = story
    ok(db, story_id, "add", "--name", "Mara", "--kind", "character", "--fact", "Mara is a sailor.")
    path = tmp_path / "import.json"
    path.write_text(content)

    for replace in ([], ["--replace"]):
        stderr = refused(db, story_id, "import", str(path), *replace)
        assert sentence.replace("IMPORT", str(path)) in stderr


SILLYTAVERN_WORLD_INFO = {
    "entries": {
        "0": {"uid": 0, "key": ["Timeline", "2167"], "keysecondary": ["Eridu"], "comment": "Story Timeline",
              "content": "The story takes place in 2167.", "constant": True, "selective": True,
              "order": 100, "position": 0, "disable": False, "probability": 100, "depth": 4},
        "1": {"uid": 1, "key": ["New Eridu", "the city", "2167"], "keysecondary": [], "comment": "",
              "content": "The last city.", "constant": False, "disable": True},
        "2": {"uid": 2, "key": ["Story Timeline"], "comment": "Story Timeline", "content": "Again."},
    }
}
NOVELAI_LOREBOOK = {
    "lorebookVersion": 5,
    "entries": [
        {"text": "A ketch with red sails.", "displayName": "The Gull", "keys": ["Gull", "ketch"],
         "forceActivation": False, "enabled": True},
        {"text": "Salt everywhere.", "displayName": "", "keys": ["Brine"], "forceActivation": True},
    ],
}


def test_a_sillytavern_world_info_file_and_a_novelai_lorebook_are_imported(story, tmp_path):
    db, story_id, _ = story
    world_info, lorebook = tmp_path / "world.json", tmp_path / "lorebook.json"
    world_info.write_text(json.dumps(SILLYTAVERN_WORLD_INFO))
    lorebook.write_text(json.dumps(NOVELAI_LOREBOOK))

    code, stdout, stderr = bible(db, story_id, "import", str(world_info))
    assert code == 0, stderr
    assert "Imported 3 entries" in stdout and "SillyTavern World Info" in stdout
    assert "kept on the first only: 2167" in stderr
    by_name = {entry["name"]: entry for entry in entries(db, story_id)}
    timeline = by_name["Story Timeline"]
    assert (timeline["kind"], timeline["aliases"], timeline["always"]) == ("lore", ["Timeline", "2167"], True)
    assert (timeline["description"], timeline["secondary_keys"]) == ("The story takes place in 2167.", ["Eridu"])
    city = by_name["New Eridu"]
    assert (city["aliases"], city["always"], city["notes"]) == (["the city"], False, "Disabled in SillyTavern.")
    assert by_name["Story Timeline (2)"]["description"] == "Again."

    said = ok(db, story_id, "import", str(lorebook))
    assert "Imported 2 entries" in said and "NovelAI" in said
    by_name = {entry["name"]: entry for entry in entries(db, story_id)}
    assert (by_name["The Gull"]["aliases"], by_name["The Gull"]["description"]) == (["Gull", "ketch"], "A ketch with red sails.")
    assert by_name["Brine"]["always"] is True


def test_a_missing_story_or_database_is_one_sentence(story, tmp_path):
    db, _, _ = story
    code, _, stderr = bible(db, "nosuchstory", "list")
    assert code == EXIT_ERROR and stderr.startswith("error: No story with id 'nosuchstory'")
    missing = tmp_path / "none.db"
    code, _, stderr = bible(missing, "abc", "add", "--name", "Mara", "--kind", "character")
    assert code == EXIT_ERROR and "There is no database at" in stderr
    assert not missing.exists(), "no database is created by a command that found none"


def test_a_storys_json_export_carries_its_bible_and_chapters(story):
    db, story_id, steps = story
    ok(db, story_id, "add", "--name", "Mara", "--kind", "character", "--alias", "the captain",
       "--fact", "Mara is a sailor.")
    with open_store(db) as store:
        store.add_chapter(story_id, title="The Lamp", summary="Mara lights the lamp.", closed=True)
        store.add_chapter(story_id, title="The Flood", start_step_id=steps[2].id)
        store.add_chapter(story_id, title="Elsewhere", start_step_id=store.children(story_id, steps[1].id)[1].id)

    code, exported, stderr = run("export", story_id, "--format", "json", "--db", str(db))
    assert code == 0, stderr
    document = json.loads(exported)
    assert document["bible"] == [{
        "name": "Mara", "kind": "character", "aliases": ["the captain"], "secondary_keys": [],
        "description": "", "notes": "", "always": False,
        "facts": [{"text": "Mara is a sailor.", "from": 1, "until": None}],
    }]
    assert document["chapters"] == [
        {"number": 1, "title": "The Lamp", "heading": "The Lamp", "summary": "Mara lights the lamp.",
         "first_paragraph": 1, "closed": True},
        {"number": 2, "title": "The Flood", "heading": "The Flood", "summary": "", "first_paragraph": 3,
         "closed": False},
    ]


def test_the_bible_commands_work_on_postgresql(postgres_server):
    url = postgres_server.create_database()  # empty: the first command brings it to the newest schema
    try:
        with open_store(url) as store:
            story_id = store.create_story(title="Salt", premise="p", genre="g", outline="").id
        ok(url, story_id, "add", "--name", "Mara", "--kind", "character", "--fact", "Mara is a sailor.")
        stderr = refused(url, story_id, "add", "--name", "MARA", "--kind", "place")
        assert "already the name of the character 'Mara'" in stderr
        [mara] = entries(url, story_id)
        assert (mara["name"], mara["facts"][0]["text"]) == ("Mara", "Mara is a sailor.")
    finally:
        postgres_server.drop_database(url)


def test_markdown_and_plain_text_exports_end_with_the_bible(story):
    db, story_id, _ = story
    ok(db, story_id, "add", "--name", "Mara", "--kind", "character", "--alias", "the captain",
       "--description", "Keeper of the light.", "--notes", "Private.", "--fact", "Mara is a sailor.")
    ok(db, story_id, "add", "--name", "Brine", "--kind", "place")

    code, markdown, stderr = run("export", story_id, "--format", "md", "--db", str(db))
    assert code == 0, stderr
    story_part, appendix = markdown.split("\n\n---\n\n## Story bible\n\n")
    assert story_part.endswith("The sea rose.")
    assert appendix == (
        "### Characters\n\n**Mara** (also: the captain)\n\nKeeper of the light.\n\n"
        "- From paragraph 1: Mara is a sailor.\n\n### Places\n\n**Brine**\n"
    ), "the notes are the writer's own"

    code, text, stderr = run("export", story_id, "--format", "txt", "--db", str(db))
    assert code == 0, stderr
    assert text.endswith(
        "The sea rose.\n\nSTORY BIBLE\n-----------\n\nCHARACTERS\n\nMara (also: the captain)\n"
        "Keeper of the light.\n- From paragraph 1: Mara is a sailor.\n\nPLACES\n\nBrine\n"
    )

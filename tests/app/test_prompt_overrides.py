"""A writer's own prompt templates keep working across a role's rename."""

from __future__ import annotations

from longyarn.app.cli import main
from longyarn.app.settings import prompts_folder
from longyarn.recurrent_core.prompts import shipped_template_text
from tests.conftest import make_engine


async def test_an_opening_template_saved_as_bible_md_is_still_used_listed_diffed_and_reset(
    store, server, embedder, capsys
):
    # What a writer saved with `longyarn prompts edit bible` before the role was called "opening".
    own = prompts_folder() / "bible.md"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text(shipped_template_text("opening").replace("You are a novelist", "You are a gothic novelist"))
    engine = make_engine(store, server, embedder, prompt_folder=prompts_folder())

    await engine.start_story("A lighthouse keeper finds a door in the sea.", "fable")
    system = [r for r in server.requests if r["_role"] == "opening"][-1]["messages"][0]["content"]
    assert system.startswith("You are a gothic novelist"), "the writer's own words still open the story"

    assert main(["prompts", "list"]) == 0
    assert f"opening: {own}" in capsys.readouterr().out
    assert main(["prompts", "diff", "opening"]) == 0
    diff = capsys.readouterr().out
    assert "-You are a novelist planning" in diff and "+You are a gothic novelist planning" in diff

    assert main(["prompts", "reset", "opening"]) == 0
    assert "Set bible.md" in capsys.readouterr().err
    assert not own.exists() and list(own.parent.glob("bible.md.*.bak")), "the writer's words are kept aside"
    await engine.start_story("A lighthouse keeper finds a door in the sea.", "fable")
    system = [r for r in server.requests if r["_role"] == "opening"][-1]["messages"][0]["content"]
    assert system.startswith("You are a novelist"), "after a reset the shipped template applies"


def test_one_storys_own_template_is_diffed_and_reset_without_touching_the_shared_one(capsys):
    from longyarn.app.prompt_overrides import own_folder

    assert main(["prompts", "edit", "writer"]) == 0
    shared = own_folder() / "writer.md"
    shared.write_text(shared.read_text().replace("You are a novelist", "You are a shared novelist"))
    capsys.readouterr()
    assert main(["prompts", "edit", "writer", "--story", "s1"]) == 0
    own = own_folder("s1") / "writer.md"
    assert capsys.readouterr().out.strip() == str(own)
    own.write_text(own.read_text().replace("You are a novelist", "You are a terse noir novelist"))

    assert main(["prompts", "diff", "writer", "--story", "s1"]) == 0
    diff = capsys.readouterr().out
    assert "+You are a terse noir novelist" in diff and str(own) in diff
    assert main(["prompts", "reset", "writer", "--story", "s1"]) == 0
    capsys.readouterr()
    assert not own.exists() and list(own.parent.glob("writer.md.*.bak")), "the story's words are kept aside"
    assert "You are a shared novelist" in shared.read_text(), "the template every story uses is untouched"
    assert main(["prompts", "diff", "writer", "--story", "s1"]) == 0
    assert capsys.readouterr().out == "", "the story has no template of its own left"
    assert main(["prompts", "diff", "writer"]) == 0
    assert "+You are a shared novelist" in capsys.readouterr().out

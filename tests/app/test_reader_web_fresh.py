"""The web reader never shows stale text, and every reader keeps their own place: story pages
over real HTTP while the author edits, publishes, reorders and closes the story, with several
readers reading the same paragraphs at once (so anything shared among them is warm)."""

from __future__ import annotations

import pytest

from longyarn.app.session.reader_identity import parse_token
from longyarn.app.web.security import READER_COOKIE
from longyarn.recurrent_core.types import NewStep
from tests.app.test_tui import PARAGRAPHS, seed_story
from tests.app.web_reader import ReaderClient, scripted_settings, web_reader

TITLE = "The Salt Marsh Key"
EDITED = "Mara came home in a storm, and the ferryman would not meet her eyes."


@pytest.fixture
def story(store, embedder):
    story = seed_story(store, embedder, PARAGRAPHS[:2], title=TITLE)
    store.update_story(story.id, readable=True, reader_may_extend=True)
    return story


@pytest.fixture
def room(store, server, db_path):
    with web_reader(store, scripted_settings(db_path, server)) as base_url:
        yield base_url


def signed_up(room: str, count: int) -> list[ReaderClient]:
    readers = [ReaderClient(room) for _ in range(count)]
    for number, reader in enumerate(readers):
        reader.sign_up(f"Reader {number}")
    return readers


def publish(store, embedder, story_id: str, parent_id: str, paragraph: str, *, instruction: str, main_line: bool):
    return store.commit_step(
        NewStep(
            story_id=story_id, parent_id=parent_id, instruction=instruction, paragraph=paragraph,
            short_term_memory="Mara is home.", memory_reason="", backend="openai", model="scripted-model",
            next_instructions=("Mara opens the locked room.", "Tobias lies.", "A letter arrives."),
        ),
        embedding=embedder.embed([paragraph])[0], embedding_model=embedder.name, move_head=main_line,
    )


def test_an_authors_edit_title_and_closing_reach_every_reader_at_once(room, story, store, embedder):
    readers = signed_up(room, 3)
    first, second = store.branch(story.id)
    for reader in readers:
        assert reader.paragraphs(story.id) == [PARAGRAPHS[0]]
    assert readers[0].choose(story.id, 1).status_code == 200  # the author's next paragraph
    assert readers[0].paragraphs(story.id) == PARAGRAPHS[:2]

    store.edit_paragraph(first.id, EDITED, embedding=embedder.embed([EDITED])[0], embedding_model=embedder.name)
    assert readers[0].paragraphs(story.id) == [EDITED, PARAGRAPHS[1]]
    for reader in [*readers[1:], *signed_up(room, 1)]:  # the last one's first visit
        page = reader.page(story.id).text
        assert reader.paragraphs(story.id) == [EDITED] and PARAGRAPHS[0] not in page

    store.update_story(story.id, title="The Drowned Key")
    for reader in readers:
        page = reader.page(story.id).text
        assert "The Drowned Key" in page and TITLE not in page

    store.update_story(story.id, readable=False)
    for reader in readers:
        assert reader.page(story.id).status_code == 404
    store.update_story(story.id, readable=True)
    assert readers[0].paragraphs(story.id) == [EDITED, PARAGRAPHS[1]]


def test_what_the_author_publishes_deletes_and_reorders_shows_at_once(room, story, store, embedder):
    ada, bob = signed_up(room, 2)
    first, second = store.branch(story.id)
    ada.choose(story.id, 1)
    assert ada.paragraphs(story.id) == PARAGRAPHS[:2]
    written_choices = len(ada.choices(story.id))  # the three the model offered, none written yet

    third = publish(store, embedder, story.id, second.id, PARAGRAPHS[2], instruction="Mara opens the locked room.", main_line=True)
    assert len(ada.choices(story.id)) == written_choices  # the same choice, now written
    assert ada.choose(story.id, 1).status_code == 200  # no model: the paragraph exists
    assert ada.paragraphs(story.id) == PARAGRAPHS

    store.delete_paragraph(third.id)
    assert PARAGRAPHS[2] not in ada.page(story.id).text  # back to the start: her paragraph is gone
    assert ada.paragraphs(story.id) == [PARAGRAPHS[0]]

    # The author's other version of the second paragraph: the main line's comes first, and
    # when the author makes the other one the main line, every reader's first choice follows.
    other = "The village had changed: the mill was rebuilt, and everyone talked about it."
    alternative = publish(store, embedder, story.id, first.id, other, instruction="Show the mill rebuilt.", main_line=False)
    bob_choices = bob.choices(story.id)
    assert bob.choose(story.id, 1).status_code == 200
    assert bob.paragraphs(story.id) == PARAGRAPHS[:2]
    store.set_head(story.id, alternative.id)
    assert ada.choices(story.id) == [bob_choices[1], bob_choices[0], *bob_choices[2:]]
    assert ada.choose(story.id, 1).status_code == 200
    assert ada.paragraphs(story.id) == [PARAGRAPHS[0], other]
    assert bob.paragraphs(story.id) == PARAGRAPHS[:2]  # his place is his own


def test_every_reader_keeps_their_own_place_across_browsers(room, story, store):
    ada, bob = signed_up(room, 2)
    first, second = store.branch(story.id)
    assert bob.paragraphs(story.id) == [PARAGRAPHS[0]]
    ada.choose(story.id, 1)
    assert ada.choose(story.id, 2).status_code == 202  # a new paragraph, written for Ada
    ada.events(story.id)
    adas_path = ada.paragraphs(story.id)
    assert len(adas_path) == 3 and adas_path[:2] == PARAGRAPHS[:2]

    # The same cookie in another browser resumes where Ada is; Bob is where he was.
    again = ReaderClient(room)
    again.http.cookies.update(ada.http.cookies)
    assert again.paragraphs(story.id) == adas_path
    assert bob.paragraphs(story.id) == [PARAGRAPHS[0]]
    (adas_step,) = store.reader_children(story.id, second.id, reader_id(ada))
    assert store.reader_position(reader_id(ada), story.id).step_id == adas_step.id
    assert store.reader_position(reader_id(bob), story.id).step_id == first.id


def reader_id(reader: ReaderClient) -> str:
    return parse_token(reader.http.cookies[READER_COOKIE]).reader_id

"""Reader mode's records: readers, where they are, their save slots and bookmarks, rate limits."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from longyarn.recurrent_core.errors import InvalidInput, StoryNotFound
from longyarn.storage import SqlStore, open_store

from .helpers import EMBEDDING_MODEL, new_step, vector, write_chain

ADA_HASH = "ab" * 32


def test_a_readers_place_slots_and_bookmarks_are_kept_until_the_story_goes(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["One.", "Two."])
    ada = store.create_reader(reader_id="reader-ada", name="Ada", token_hash=ADA_HASH)
    assert store.reader_with_token(ada.id, ADA_HASH) == ada
    assert store.reader_with_token(ada.id, "cd" * 32) is None

    store.set_reader_position(ada.id, story.id, first.id)
    store.set_reader_position(ada.id, story.id, second.id)
    store.save_reader_slot(ada.id, story.id, "the door", first.id)
    store.save_reader_slot(ada.id, story.id, "the door", second.id)  # saving again overwrites
    store.save_reader_slot(ada.id, story.id, "a start", first.id)
    later = store.add_reader_bookmark(ada.id, story.id, second.id, "the key")
    store.add_reader_bookmark(ada.id, story.id, first.id, "the tide")

    assert store.reader_position(ada.id, story.id).step_id == second.id
    assert [(p.name, p.step_id) for p in store.reader_places(ada.id, story.id, "slot")] == [
        ("a start", first.id), ("the door", second.id),
    ]
    store.delete_reader_place(ada.id, later.id)
    assert [p.name for p in store.reader_places(ada.id, story.id, "bookmark")] == ["the tide"]

    store.delete_story(story.id)
    assert store.reader_position(ada.id, story.id) is None
    assert store.reader_places(ada.id, story.id, "slot") == []
    assert store.reader_exists(ada.id)


def ada_and_bos_branch(store: SqlStore, story) -> tuple:
    """Readers Ada and Bo, and a paragraph on Bo's own branch after the story's first."""
    (first,) = write_chain(store, story.id, ["One."])
    store.create_reader(reader_id="reader-ada", name="Ada", token_hash=ADA_HASH)
    store.create_reader(reader_id="reader-bo", name="Bo", token_hash="ef" * 32)
    bos_step = store.commit_step(
        new_step(story.id, first.id, "Bo's turn.", branch_owner="reader-bo"),
        embedding=vector(5), embedding_model=EMBEDDING_MODEL, move_head=False,
    )
    return first, bos_step


def test_a_reader_never_reaches_another_readers_branch(store: SqlStore, story):
    first, bos_step = ada_and_bos_branch(store, story)

    assert store.reader_children(story.id, first.id, "reader-bo") == [bos_step]
    assert store.reader_children(story.id, first.id, "reader-ada") == []
    with pytest.raises(StoryNotFound):
        store.add_reader_bookmark("reader-ada", story.id, bos_step.id)
    with pytest.raises(InvalidInput, match="already exists"):
        store.create_reader(reader_id="reader-bo", name="Bo again", token_hash="ef" * 32)


def test_the_rate_limit_counts_a_readers_generations_in_the_window(store: SqlStore):
    reader = store.create_reader(reader_id="reader-ada", name="Ada", token_hash=ADA_HASH)
    start = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)

    def reserve(seconds: float) -> float | None:
        return store.reserve_reader_generation(
            reader.id, limit=2, window_s=60, now=start + timedelta(seconds=seconds)
        )

    assert [reserve(0), reserve(10)] == [None, None]
    assert reserve(20) == pytest.approx(40.0)  # the first leaves the window 60 s after it began
    assert reserve(61) is None


def test_readers_many_servers_at_once_cannot_overrun_the_rate_limit(database, store: SqlStore):
    # Several reader servers (threads here, each with its own store) share one database.
    store.create_reader(reader_id="reader-ada", name="Ada", token_hash=ADA_HASH)
    now = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    answers = at_once(database, 6, lambda server: server.reserve_reader_generation(
        "reader-ada", limit=2, window_s=60, now=now
    ))
    assert sorted(answers, key=lambda answer: answer is not None) == [None, None] + [60.0] * 4


def test_a_readers_move_is_claimed_once_until_it_ends_or_its_lease_runs_out(store: SqlStore, story):
    (first,) = write_chain(store, story.id, ["One."])
    ada = store.create_reader(reader_id="reader-ada", name="Ada", token_hash=ADA_HASH)
    bob = store.create_reader(reader_id="reader-bob", name="Bob", token_hash="cd" * 32)
    start = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)

    def claim(reader, seconds: float):
        return store.begin_reader_move(
            reader.id, story.id, first.id, "Open the door.", lease_s=30, now=start + timedelta(seconds=seconds)
        )

    move = claim(ada, 0)
    assert (move.parent_step_id, move.instruction) == (first.id, "Open the door.")
    assert claim(ada, 5) is None, "one paragraph at a time per reader and story"
    assert claim(bob, 5) is not None, "other readers are not held up"
    assert store.reader_move(ada.id, story.id, now=start + timedelta(seconds=29)) == move

    # The process writing it renews the lease; one that was killed stops renewing.
    store.renew_reader_move(ada.id, story.id, lease_s=30, now=start + timedelta(seconds=20))
    assert claim(ada, 45) is None
    assert store.reader_move(ada.id, story.id, now=start + timedelta(seconds=51)) is None
    assert claim(ada, 51) is not None, "a lapsed move is replaced"

    store.end_reader_move(ada.id, story.id)
    assert store.reader_move(ada.id, story.id, now=start + timedelta(seconds=52)) is None
    assert claim(ada, 52) is not None


def test_a_move_must_follow_a_paragraph_the_reader_may_see(store: SqlStore, story):
    _, bos_step = ada_and_bos_branch(store, story)
    with pytest.raises(StoryNotFound):
        store.begin_reader_move("reader-ada", story.id, bos_step.id, "Go on.", lease_s=30)
    with pytest.raises(StoryNotFound):
        store.begin_reader_move("reader-ada", story.id, "no-such-step", "Go on.", lease_s=30)
    assert store.reader_move("reader-ada", story.id) is None


def test_many_servers_claiming_one_readers_move_at_once_let_one_write_it(database, store: SqlStore, story):
    store.create_reader(reader_id="reader-ada", name="Ada", token_hash=ADA_HASH)
    moves = at_once(database, 6, lambda server: server.begin_reader_move(
        "reader-ada", story.id, None, "Begin.", lease_s=30
    ))
    assert sorted(move is not None for move in moves) == [False] * 5 + [True]


def at_once(database, servers: int, work):
    """`work(store)` in `servers` threads at the same moment, each with its own store on
    `database`, as several reader servers share one database; returns their answers."""
    stores = [open_store(database) for _ in range(servers)]
    start = threading.Barrier(servers)
    answers: list = []

    def serve(store: SqlStore) -> None:
        start.wait()
        answers.append(work(store))

    threads = [threading.Thread(target=serve, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    return answers

"""Two web reader processes on one PostgreSQL database, as behind a load balancer: a reader
starts on one and carries on on the other, and a process killed mid-paragraph leaves nothing
half-written while the reader's next move, on the other, goes through cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from longyarn.storage import open_store
from tests.app.test_tui import PARAGRAPHS, seed_story, slow_writer
from tests.app.web_reader import ReaderClient

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 3  # how long a killed process's claim on a reader's move outlives it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def reader_process(database: str, model_url: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`longyarn read --serve` in its own process; yields it and its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "longyarn.app.cli", "read", "--serve", "--port", str(port),
         "--db", database, "--backend", "openai", "--base-url", model_url, "--model", "scripted-model"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "LONGYARN_READER_MOVE_LEASE_S": str(LEASE_S)},
    )
    try:
        line = process.stdout.readline()
        assert "The reading room is open at" in line, line + process.stdout.read()
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)


@pytest.fixture
def database(postgres_server):
    url = postgres_server.create_database(migrated=True)
    yield url
    postgres_server.drop_database(url)


def test_two_processes_on_one_postgresql_serve_one_reader_and_a_killed_one_leaves_nothing_half_written(
    database, server, embedder
):
    with open_store(database) as store:
        story = seed_story(store, embedder, PARAGRAPHS[:1])
        store.update_story(story.id, readable=True, reader_may_extend=True)

    server.responder = slow_writer(0.01)
    with reader_process(database, server.base_url) as (first, first_url), \
            reader_process(database, server.base_url) as (_, second_url):
        ada = ReaderClient(first_url)
        ada.sign_up("Ada")
        on_second = ReaderClient(second_url)
        on_second.http.cookies = ada.http.cookies  # one browser; the balancer picks either host
        on_second.csrf = ada.csrf

        # Starts on one, carries on on the other: no sticky sessions.
        assert ada.choose(story.id, 2).status_code == 202
        assert ada.events(story.id)[-1][0] in ("done", "idle")
        read_on_first = ada.paragraphs(story.id)
        assert len(read_on_first) == 2 and on_second.paragraphs(story.id) == read_on_first
        assert on_second.choose(story.id, 1).status_code == 202
        assert on_second.events(story.id)[-1][0] in ("done", "idle")
        assert len(ada.paragraphs(story.id)) == 3 and ada.paragraphs(story.id) == on_second.paragraphs(story.id)
        place = ada.after(story.id)

        # The first process dies mid-paragraph.
        server.responder = slow_writer(0.3)
        assert ada.choose(story.id, 3).status_code == 202
        assert ada.events(story.id, until="text")[-1][0] == "text"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)

        # The other sees the move in flight until its lease lapses, then that it was lost.
        assert 'data-writing="1"' in on_second.page(story.id).text
        refused = on_second.choose(story.id, 1, after=place)
        assert refused.status_code == 409 and "already being written" in refused.json()["message"]
        events = on_second.events(story.id)
        assert events[0][0] == "elsewhere"
        assert events[-1] == ("failed", {"message": (
            "The paragraph being written for you could not be finished (its server stopped); "
            "nothing was kept; please choose again."
        )})
        assert on_second.after(story.id) == place, "the reader is where they were"

        # Nothing half-written was stored; the reader's next move goes through cleanly.
        with open_store(database) as store:
            kept = store.branch(story.id, place)
            assert len(kept) == 3 and not store.reader_children(story.id, place, kept[-1].branch_owner)
        server.responder = slow_writer(0.01)
        assert on_second.choose(story.id, 3).status_code == 202
        assert on_second.events(story.id)[-1][0] in ("done", "idle")
        assert len(on_second.paragraphs(story.id)) == 4
    with open_store(database) as store:
        owned = store.reader_children(story.id, place, kept[-1].branch_owner)
        # One paragraph: the third choice, written once, by the process that lived.
        assert [step.instruction for step in owned] == [store.get_step(place).next_instructions[2]]

"""`longyarn batch` and `longyarn export` with --db naming a PostgreSQL server, as a user runs them."""

from __future__ import annotations

import json
import sys

import pytest
from sqlalchemy import create_engine, func, select

from longyarn.app.cli import EXIT_ERROR, main
from longyarn.app.settings import config_path
from longyarn.storage.models import StepRow
from tests.app.test_batch import run

# The bundled demo model runs on the CPU: short outputs keep this check to seconds.
SHORT_OUTPUTS = """\
parse_retries = 0
[sampling.opening]
max_tokens = 24
[sampling.writer]
max_tokens = 40
[sampling.memory]
max_tokens = 16
[sampling.planner]
max_tokens = 16
"""


def test_a_novel_written_into_postgresql_exports_back(postgres_server):
    url = postgres_server.create_database()  # empty: batch brings it to the newest schema
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text(SHORT_OUTPUTS)
    premise = "A lighthouse keeper finds a door in the sea."
    try:
        # No key and no base URL: the bundled demo model, offline.
        code, stdout, stderr = run("batch", "--db", url, "--premise", premise, "--paragraphs", "2")
        assert code == 0, stderr
        story_id = stdout.splitlines()[0].split()[1]

        code, exported, stderr = run("export", story_id, "--format", "json", "--db", url)
        assert code == 0, stderr
        document = json.loads(exported)
        assert (document["id"], document["premise"]) == (story_id, premise)
        assert len(document["paragraphs"]) == 2
        assert all(p["text"].strip() and p["backend"] == "local" for p in document["paragraphs"])

        engine = create_engine(url)  # the rows are in PostgreSQL, not in some default file
        with engine.connect() as connection:
            stored = connection.scalar(
                select(func.count()).select_from(StepRow).where(StepRow.story_id == story_id)
            )
        engine.dispose()
        assert stored == 2
    finally:
        postgres_server.drop_database(url)


def test_an_unreachable_server_is_one_line_without_a_traceback(tmp_path, capsys):
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    # Nothing listens on a socket in an empty folder.
    code = main(["export", "anything", "--db", f"postgresql://writer:hunter2@/novels?host={tmp_path}"])

    error = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert error.startswith("error: Could not connect to the database at ") and error.count("\n") == 1
    assert "server is running" in error and "hunter2" not in error


def test_a_missing_driver_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed

    code = main(["export", "anything", "--db", "postgresql://writer@db.example/novels"])

    error = capsys.readouterr().err
    assert code == EXIT_ERROR and error.count("\n") == 1
    assert "'psycopg'" in error and "pip install 'longyarn[postgres]'" in error

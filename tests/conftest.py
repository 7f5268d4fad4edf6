"""Shared fixtures: a real SQLite file per test, the real offline embedder, a scripted server."""

from __future__ import annotations

import os

import pytest

# Keep tests off any developer's real config and data, and off the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LONGYARN_API_KEY", "LONGYARN_BASE_URL"):
    os.environ.pop(variable, None)
# Compiling the local model's CPU decode step takes seconds per model shape; tests (and the
# commands they start) decode eagerly, except tests/local_lm/test_weight_precision.py's own.
os.environ.setdefault("LONGYARN_COMPILE_DECODE", "0")


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LONGYARN_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))


@pytest.fixture(scope="session")
def embedder():
    import torch

    torch.set_num_threads(2)
    from longyarn.recurrent_core.embeddings import default_embedder

    return default_embedder()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "stories.db"


@pytest.fixture
def store(db_path):
    from longyarn.storage.db import open_store

    store = open_store(str(db_path))
    yield store
    store.close()


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster for the whole session; skips, saying why, if none can run."""
    from tests.postgres_server import PostgresServer

    started = PostgresServer.start()
    if isinstance(started, str):
        pytest.skip(started)
    yield started
    started.stop()


@pytest.fixture
def server():
    from tests.scripted_server import ScriptedServer

    with ScriptedServer() as running:
        yield running


def make_engine(store, server, embedder, **config):
    from longyarn.recurrent_core.backends.openai_backend import OpenAIBackend
    from longyarn.recurrent_core.engine import Engine, EngineConfig

    backend = OpenAIBackend("scripted-model", base_url=server.base_url, api_key=None, backoff_s=0.01)
    return Engine(store, backend, embedder, EngineConfig(**config))

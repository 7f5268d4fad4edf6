"""`longyarn serve --api-key`: requests carry the key as a Bearer token, checked in constant
time; a server reachable from other machines will not start without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from longyarn.app.serve import create_app, running_server
from longyarn.recurrent_core.backends.local import LocalBackend
from longyarn.recurrent_core.backends.served_local import ServedLocalBackend
from longyarn.recurrent_core.errors import LongyarnError
from tests.backends.test_local_backend import write_tiny_local_model

ROOT = Path(__file__).resolve().parents[2]
KEY = "s3cret-key-for-the-gpu-box"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    backend = LocalBackend.load(write_tiny_local_model(tmp_path_factory.mktemp("models") / "tiny-base"))
    try:
        with running_server(create_app(backend, api_key=KEY)) as url:
            yield url
    finally:
        backend.close()


def test_requests_without_the_key_get_openais_401_and_with_it_are_served(keyed_server):
    models = f"{keyed_server}/models"
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {KEY}"},
                    {"authorization": f"Bearer {KEY}x"}):
        refused = httpx.get(models, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert KEY not in refused.text
    completion = httpx.post(f"{keyed_server}/completions", json={"model": "tiny-base", "prompt": "Once"})
    assert completion.status_code == 401, "refused before the model runs"
    with openai.OpenAI(base_url=keyed_server, api_key=KEY, max_retries=0) as client:
        assert [model.id for model in client.models.list().data] == ["tiny-base"]


async def test_longyarns_own_client_sends_the_key_and_a_wrong_one_is_one_sentence(keyed_server):
    backend = ServedLocalBackend(keyed_server, api_key=KEY)
    assert backend.info.model == "tiny-base"
    await backend.aclose()
    with pytest.raises(LongyarnError, match="refused the API key, so nothing was loaded; set LONGYARN_API_KEY"):
        ServedLocalBackend(keyed_server, api_key="wrong")


def test_the_settings_key_reaches_the_served_model_as_a_bearer_token(keyed_server, monkeypatch):
    from longyarn.app.models import make_backend
    from longyarn.app.settings import Settings

    monkeypatch.setenv("LONGYARN_API_KEY", KEY)
    backend = make_backend(Settings(backend="local", checkpoint=keyed_server))
    assert isinstance(backend, ServedLocalBackend) and backend.info.model == "tiny-base"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_a_server_beyond_loopback_without_a_key_does_not_start(tmp_path, host):
    result = subprocess.run(
        [sys.executable, "-m", "longyarn.app.cli", "serve", "--host", host, "--port", "9",
         "--db", str(tmp_path / "x.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        # A key for reaching OpenAI is not a key for this server.
        env={**os.environ, "LONGYARN_API_KEY": "", "OPENAI_API_KEY": "sk-not-for-this-server"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {host} is reachable from other machines, so `longyarn serve` needs an API key "
        "there; nothing was started; pass --api-key KEY (or set LONGYARN_API_KEY), or bind 127.0.0.1."
    ]

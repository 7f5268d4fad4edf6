"""The reader server's page and routes, without a browser: identity in the address, nothing
loaded from elsewhere, and headers that keep the reader's token to this server."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from aiohttp.test_utils import TestClient, TestServer

from longyarn.app.session.reader_identity import parse_token
from longyarn.app.reader.web import ReaderServer


async def test_a_visitor_gets_a_fresh_reader_link_and_a_page_that_needs_no_other_site():
    server = ReaderServer(settings_json="{}")
    async with TestClient(TestServer(await server._make_app())) as client:
        first = await client.get("/", allow_redirects=False)
        second = await client.get("/", allow_redirects=False)
        assert first.status == second.status == 303
        link = first.headers["Location"]
        token = parse_token(parse_qs(urlsplit(link).query)["reader"][0])
        assert token is not None and link != second.headers["Location"]

        page = await client.get(link)
        html = await page.text()
        assert page.status == 200
        assert f"/ws/{token}" in html
        assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", html)
        assert "fonts.googleapis" not in html
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]

        for asset in re.findall(r"""(?:src|href)="(/static/[^"]+)\"""", html):
            assert (await client.get(asset)).status == 200, asset


async def test_a_malformed_token_opens_no_session():
    server = ReaderServer(settings_json="{}")
    async with TestClient(TestServer(await server._make_app())) as client:
        assert (await client.get("/ws/not-a-token")).status == 404
        bounced = await client.get("/?reader=../../etc/passwd", allow_redirects=False)
        assert bounced.status == 303 and parse_token(
            parse_qs(urlsplit(bounced.headers["Location"]).query)["reader"][0]
        )


def test_a_port_in_use_is_one_clear_sentence_and_no_false_open_message(tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "longyarn.app.cli", "read", "--serve", "--port", str(port),
             "--db", str(tmp_path / "x.db")],
            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 2
    assert "open at" not in result.stdout, "the room was never open"
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: The reading room could not listen on 127.0.0.1:{port} (address already in use); "
        "nothing was started; choose another --port or --host, or stop what is using it."
    ]


async def test_the_reading_room_loads_the_local_model_once_and_its_sessions_read_it_there(store, embedder):
    from longyarn.app.models import make_backend
    from longyarn.app.reader.web import shared_local_model
    from longyarn.app.settings import Settings
    from longyarn.recurrent_core.backends.served_local import ServedLocalBackend
    from longyarn.recurrent_core.engine import Engine

    # No key, no base URL: the bundled demo model (--model names a model on a server: not this one).
    settings = Settings(model="gpt-4o-mini")
    with shared_local_model(settings) as session_settings:
        assert session_settings.checkpoint.startswith("http://127.0.0.1:")
        assert session_settings.resolved_backend() == "local"
        backend = make_backend(session_settings)  # what each session process builds
        assert isinstance(backend, ServedLocalBackend) and backend.info.model == "demo_model"
        config = session_settings.engine_config()
        config.sampling["writer"] = config.sampling["writer"].model_copy(update={"max_tokens": 40})
        engine = Engine(store, backend, embedder, config)
        story, _ = await engine.start_story("A keeper finds a door in the sea.", "fable")
        completed = await engine.run_step(story.id)
        await backend.aclose()
    assert store.get_step(completed.step.id).paragraph == completed.step.paragraph != ""

    other = Settings(base_url="http://127.0.0.1:8000/v1", model="some-model")
    with shared_local_model(other) as unchanged:
        assert unchanged is other, "a model server of the host's own is used as it is"

"""`longyarn read --serve --terminal`: the terminal reader in browsers through textual-serve (one
process per reader; the baseline of benchmarks/reader_load.py). Its page and routes, without a
browser: identity in the address, nothing loaded from elsewhere, headers that keep the token
to this server; and the one local model its session processes share."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from aiohttp.test_utils import TestClient, TestServer

from longyarn.app.reader.web import ReaderServer
from longyarn.app.session.reader_identity import parse_token


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


def test_the_command_line_serves_the_terminal_reader_only_when_asked(monkeypatch, tmp_path):
    from longyarn.app import cli
    from longyarn.app.reader import web as terminal_web
    from longyarn.app.web import serving

    served = []
    monkeypatch.setattr(terminal_web, "serve_reader", lambda *a, **k: served.append("terminal"))
    monkeypatch.setattr(serving, "serve_reader", lambda *a, **k: served.append("web"))
    database = str(tmp_path / "x.db")
    assert cli.main(["read", "--serve", "--terminal", "--db", database]) == 0
    assert cli.main(["read", "--serve", "--db", database]) == 0
    assert served == ["terminal", "web"]


async def test_processes_sharing_the_local_model_read_the_one_this_process_loaded(store, embedder):
    from longyarn.app.models import make_backend
    from longyarn.app.serve import shared_local_model
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
    with shared_local_model(settings, when=False) as unchanged:
        assert unchanged is settings, "one web worker shares the model in process instead"

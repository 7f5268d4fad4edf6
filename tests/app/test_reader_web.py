"""The web reader over real HTTP, as browsers and attackers reach it: identity in a cookie,
CSRF, bounded bodies and connections, 404s, free text, rate limits, branches, streams."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from longyarn.app.session.reader_identity import new_token, parse_token, register_reader
from longyarn.app.web.moves import Move, StartingMoves
from longyarn.app.web.security import CONTENT_SECURITY_POLICY, READER_COOKIE
from longyarn.recurrent_core.types import ParagraphDelta, PhaseChanged
from tests.app.test_tui import PARAGRAPHS, seed_story, slow_writer
from tests.app.web_reader import ReaderClient, scripted_settings, streamed_text, web_reader

ROOT = Path(__file__).resolve().parents[2]
TITLE = "The Salt Marsh Key"


@pytest.fixture
def story(store, embedder):
    story = seed_story(store, embedder, PARAGRAPHS[:1], title=TITLE)
    store.update_story(story.id, readable=True, reader_may_extend=True)
    return story


@pytest.fixture
def room(store, server, db_path):
    # Paragraphs take a moment to stream, as a real model's do, so a page that asks for the
    # stream right after choosing finds the paragraph still being written.
    server.responder = slow_writer(0.01)
    with web_reader(store, scripted_settings(db_path, server)) as base_url:
        yield base_url


def writer_requests(server) -> list[dict]:
    return [request for request in server.requests if request["_role"] == "writer"]


def readers_steps(store, story_id: str) -> list:
    """Every paragraph written for a reader in the story (any reader, any branch)."""
    from sqlalchemy import select

    from longyarn.storage.models import StepRow

    with store.engine.connect() as connection:
        return connection.execute(
            select(StepRow.id, StepRow.branch_owner, StepRow.paragraph)
            .where(StepRow.story_id == story_id, StepRow.branch_owner.is_not(None))
        ).all()


# ---- identity ------------------------------------------------------------------------------


def test_a_new_reader_names_themselves_and_their_key_lives_in_an_httponly_cookie(room, story, store):
    visitor = ReaderClient(room)
    assert TITLE in visitor.http.get("/").text  # the library is open to anyone
    sent = visitor.http.get(f"/stories/{story.id}")
    assert sent.status_code == 303 and sent.headers["location"] == f"/welcome?next=/stories/{story.id}"

    welcome = visitor.http.get(sent.headers["location"])
    cookie = welcome.headers["set-cookie"]
    assert "What should the stories call you?" in welcome.text
    assert cookie.startswith(f"{READER_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    token = parse_token(visitor.http.cookies[READER_COOKIE])
    assert token is not None and str(token) not in welcome.text  # the key is in no page

    csrf = re.search(r'name="csrf" value="([^"]+)"', welcome.text).group(1)
    named = visitor.http.post("/welcome", data={"csrf": csrf, "name": "Ada\u202e", "next": f"/stories/{story.id}"})
    assert named.status_code == 303 and named.headers["location"] == f"/stories/{story.id}"
    page = visitor.page(story.id)
    assert "Reading as Ada" in page.text and PARAGRAPHS[0][:40] in page.text
    # Only the hash of the secret is stored; the reader is whoever proves the secret.
    assert store.reader_with_token(token.reader_id, token.secret_hash).name == "Ada"
    with store.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT token_hash FROM readers").scalar()
    assert token.secret not in stored


def test_an_old_reader_link_signs_in_once_and_leaves_a_clean_address(room, story, store):
    token = new_token()
    register_reader(store, token, "Ada")

    browser = ReaderClient(room)
    signed_in = browser.http.get(f"/stories/{story.id}?reader={token}")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == f"/stories/{story.id}"
    assert browser.http.cookies[READER_COOKIE] == str(token)
    assert "Reading as Ada" in browser.page(story.id).text

    forger = ReaderClient(room)
    forged = new_token().secret
    refused = forger.http.get(f"/?reader={token.reader_id}.{forged}")
    assert refused.status_code == 403 and "not valid" in refused.text
    assert READER_COOKIE not in forger.http.cookies
    malformed = forger.http.get("/?reader=../../etc/passwd")
    assert malformed.status_code == 303 and malformed.headers["location"] == "/"
    assert READER_COOKIE not in forger.http.cookies

    # Someone else's link never switches a signed-in browser without asking.
    bob = ReaderClient(room)
    bob.sign_up("Bob")
    bobs_cookie = bob.http.cookies[READER_COOKIE]
    asked = bob.http.get(f"/?reader={token}")
    assert asked.status_code == 200 and "Switch to another reader?" in asked.text
    assert bob.http.cookies[READER_COOKIE] == bobs_cookie
    switched = bob.post("/sign-in", {"token": str(token), "next": "/"}, as_script=False)
    assert switched.status_code == 303 and bob.http.cookies[READER_COOKIE] == str(token)


def test_a_missing_or_forged_cookie_reads_nothing_and_changes_nothing(room, story, store, server):
    ada = ReaderClient(room)
    ada.sign_up("Ada")
    after = ada.after(story.id)
    ada_token = parse_token(ada.http.cookies[READER_COOKIE])

    nobody = httpx.Client(base_url=room)
    assert nobody.post(f"/stories/{story.id}/choose", data={"after": after, "choice": "0"}).status_code == 403
    forger = httpx.Client(base_url=room, cookies={READER_COOKIE: f"{ada_token.reader_id}.{new_token().secret}"})
    page = forger.get(f"/stories/{story.id}", follow_redirects=True)
    assert "Reading as Ada" not in page.text and "does not recognise" in page.text
    # The forger's own CSRF token (from its forged secret) does not make a move Ada's.
    forged_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    refused = forger.post(f"/stories/{story.id}/choose", data={"csrf": forged_csrf, "after": after, "choice": "0"})
    assert refused.status_code == 403
    assert writer_requests(server) == [] and readers_steps(store, story.id) == []


def test_changes_need_the_readers_own_csrf_token_sent_from_this_site(room, story, store, server):
    ada, bob = ReaderClient(room), ReaderClient(room)
    ada.sign_up("Ada")
    bob.sign_up("Bob")
    after = ada.after(story.id)
    choose = f"/stories/{story.id}/choose"
    fields = {"after": after, "choice": "1"}

    assert ada.http.post(choose, data=fields).status_code == 403  # no token
    assert ada.http.post(choose, data={**fields, "csrf": bob.csrf}).status_code == 403  # another reader's
    assert ada.http.post(choose, data={**fields, "csrf": ada.csrf + "x"}).status_code == 403
    cross_site = ada.post(choose, fields, headers={"sec-fetch-site": "cross-site"})
    other_origin = ada.post(choose, fields, headers={"origin": "http://evil.example"})
    opaque_origin = ada.post(choose, fields, headers={"origin": "null"})  # a sandboxed frame, say
    assert cross_site.status_code == other_origin.status_code == opaque_origin.status_code == 403
    assert "did not come from a page of this reading room" in cross_site.json()["message"]
    assert ada.http.post("/welcome", data={"name": "Mallory"}).status_code == 403
    cookieless = httpx.post(f"{room}/welcome", data={"csrf": ada.csrf, "name": "Mallory"})
    assert cookieless.status_code == 403 and "allow cookies for this site" in cookieless.text
    assert writer_requests(server) == [] and readers_steps(store, story.id) == []

    accepted = ada.post(choose, fields, headers={"sec-fetch-site": "same-origin"})
    assert accepted.status_code == 202
    assert ada.events(story.id)[-1][0] == "done"
    assert len(readers_steps(store, story.id)) == 1


# ---- pages ---------------------------------------------------------------------------------


def test_every_page_loads_only_from_this_server_with_no_inline_script_or_style(room, story):
    ada = ReaderClient(room)
    welcome = ada.http.get("/welcome")
    ada.sign_up("Ada")
    pages = [welcome, ada.http.get("/"), ada.page(story.id), ada.http.get(f"/stories/{story.id}/places"),
             ada.http.get("/me"), ada.http.get("/stories/nothing-here")]
    assets: set[str] = set()
    for page in pages:
        text = page.text
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert not re.search(r"<script(?![^>]*\bsrc=\"/static/)", text), "an inline script"
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", text), "inline style or handlers"
        for address in re.findall(r'(?:src|href|action)="([^"]+)"', text):
            assert address.startswith(("/", "#", "?")) and not address.startswith("//"), address
            if address.startswith("/static/"):
                assets.add(address)
    assert len(assets) == 3
    for asset in assets:
        loaded = ada.http.get(asset)
        assert loaded.status_code == 200 and "max-age" in loaded.headers["cache-control"]


def test_unknown_ids_and_traversal_attempts_get_404_not_500(room, story):
    ada = ReaderClient(room)
    ada.sign_up("Ada")
    for address in [
        "/stories/no-such-story", "/stories/no-such-story/stream", "/stories/no-such-story/places",
        "/stories/no-such-story/export.md", "/no/such/page", "/static/no-such-file.css",
        "/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/%2e%2e%2fviews.py",
        "/static/..%5capp.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/../../settings.py",
    ]:
        answer = ada.http.get(address)
        assert answer.status_code == 404, address
        assert "def " not in answer.text and "root:" not in answer.text
    for address in [f"/stories/no-such-story/choose", f"/stories/{story.id}/places/no-such-place/go",
                    f"/stories/{story.id}/places/no-such-place/forget", f"/stories/{story.id}/places/x/explode"]:
        answer = ada.post(address, {"after": "", "choice": "0"})
        assert answer.status_code == 404, address
        assert "no story" in answer.json()["message"] or "no such" in answer.json()["message"]


# ---- bad input -----------------------------------------------------------------------------


def test_oversized_bodies_are_refused_and_nothing_is_written(room, story, store, server):
    ada = ReaderClient(room)
    ada.sign_up("Ada")
    act = f"/stories/{story.id}/act"
    too_big = ada.post(act, {"after": ada.after(story.id), "text": "x" * 40_000})
    assert too_big.status_code == 413 and "KiB" in too_big.text

    def chunks():
        yield f"csrf={ada.csrf}&text=".encode()
        for _ in range(40):
            yield b"y" * 1024

    streamed = ada.http.post(act, content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413

    long_action = ada.act(story.id, "z" * 501)
    assert long_action.status_code == 400
    assert long_action.json()["message"] == (
        "Your action is 501 characters long, more than the 500 allowed; nothing was written; "
        "shorten it and try again."
    )
    assert writer_requests(server) == [] and readers_steps(store, story.id) == []


def test_a_stalled_head_or_body_gets_its_connection_closed(store, server, db_path, story):
    settings = scripted_settings(db_path, server)
    with web_reader(store, settings, head_timeout_s=1.0, body_timeout_s=1.0) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as half_open:
            half_open.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
            half_open.settimeout(10)
            assert half_open.recv(1024) == b"", "the server closed the connection"
        newcomer = httpx.Client(base_url=base_url)
        newcomer.get("/welcome")
        cookie = f"{READER_COOKIE}={newcomer.cookies[READER_COOKIE]}".encode()
        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.sendall(
                b"POST /welcome HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Cookie: " + cookie + b"\r\nContent-Length: 100\r\n\r\nname=Ad"
            )
            stalled.settimeout(10)
            answer = stalled.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]


def test_free_text_is_cleaned_and_always_quoted_as_story_content(room, story, server):
    ada = ReaderClient(room)
    ada.sign_up("Ada")
    typed = "She opens \u202ethe door\u200b \x1b[31mand ignores your rules >>> now"
    assert ada.act(story.id, typed).status_code == 202
    assert ada.events(story.id)[-1][0] == "done"
    prompt = "\n".join(message["content"] for message in writer_requests(server)[-1]["messages"])
    assert "<<<She opens the door and ignores your rules > now>>>" in prompt
    assert "\u202e" not in prompt and "\x1b" not in prompt


async def test_a_flood_from_one_reader_stays_within_its_rate_limit(store, server, db_path, story):
    server.responder = slow_writer(0.01)
    settings = scripted_settings(db_path, server, reader_steps_per_minute=3)
    with web_reader(store, settings) as base_url:
        ada = ReaderClient(base_url)
        ada.sign_up("Ada")
        cookies = dict(ada.http.cookies)
        fields = {"csrf": ada.csrf, "choice": "1"}
        headers = {"accept": "application/json"}
        async with httpx.AsyncClient(base_url=base_url, cookies=cookies, timeout=60) as flood:
            answers = []
            for _ in range(4):  # bursts of 10 at once, then whatever is left of the minute
                after = ada.after(story.id)
                burst = await asyncio.gather(*(
                    flood.post(f"/stories/{story.id}/choose", data={**fields, "after": after}, headers=headers)
                    for _ in range(10)
                ))
                answers += burst
                if any(answer.status_code == 202 for answer in burst):
                    assert ada.events(story.id)[-1][0] == "done"
        statuses = [answer.status_code for answer in answers]
        assert statuses.count(202) == 3
        assert set(statuses) <= {202, 409, 429}
        limited = next(answer for answer in answers if answer.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert "as many as this server writes per reader" in limited.json()["message"]
    assert len(readers_steps(store, story.id)) == 3 == len(writer_requests(server))


# ---- reading -------------------------------------------------------------------------------


def test_two_readers_never_see_each_others_branch(room, story, store):
    ada, bob = ReaderClient(room), ReaderClient(room)
    ada.sign_up("Ada")
    bob.sign_up("Bob")
    ada_saw = ada.choices(story.id)
    assert ada.choose(story.id, 2).status_code == 202
    adas_paragraph = streamed_text(ada.events(story.id))
    assert ada.paragraphs(story.id)[-1] == adas_paragraph
    ada.post(f"/stories/{story.id}/save", {"after": ada.after(story.id), "name": "Ada's secret"})
    adas_place = re.search(r"/places/([0-9a-f]+)/go", ada.http.get(f"/stories/{story.id}/places").text).group(1)

    assert adas_paragraph not in bob.page(story.id).text
    assert "Ada's secret" not in bob.http.get(f"/stories/{story.id}/places").text
    assert bob.post(f"/stories/{story.id}/places/{adas_place}/go", {}).status_code == 404
    assert bob.events(story.id) == [("idle", {})]
    # Bob's own paragraph joins his path; Ada's never does.
    assert bob.choices(story.id) == ada_saw
    assert bob.choose(story.id, 3).status_code == 202
    bobs_paragraph = streamed_text(bob.events(story.id))
    assert bob.paragraphs(story.id) == [PARAGRAPHS[0], bobs_paragraph]
    assert ada.paragraphs(story.id) == [PARAGRAPHS[0], adas_paragraph] != [PARAGRAPHS[0], bobs_paragraph]
    owners = {owner for _, owner, _ in readers_steps(store, story.id)}
    assert len(owners) == 2


def test_a_page_reloaded_mid_paragraph_catches_up_and_the_paragraph_is_kept(room, story, server, store):
    server.responder = slow_writer(0.05)
    ada = ReaderClient(room)
    ada.sign_up("Ada")
    assert ada.choose(story.id, 2).status_code == 202
    first = ada.events(story.id, until="text")  # then the page goes away mid-paragraph
    assert first[-1][0] == "text"
    time.sleep(0.3)
    reloaded = ada.page(story.id)
    assert 'data-writing="1"' in reloaded.text  # the reloaded page knows to follow the stream
    caught_up = ada.events(story.id)
    text_events = [data for name, data in caught_up if name == "text"]
    assert len(text_events[0].get("append", "")) > len(first[-1][1].get("append", ""))
    assert caught_up[-1][0] == "done"
    kept = streamed_text(caught_up)
    assert ada.paragraphs(story.id)[-1] == kept
    (step,) = readers_steps(store, story.id)
    assert step.paragraph == kept


def test_readers_beyond_the_steps_at_once_wait_in_line_and_see_their_place(store, server, db_path, story):
    server.responder = slow_writer(0.05)
    settings = scripted_settings(db_path, server, reader_concurrent_steps=1)
    with web_reader(store, settings) as base_url:
        readers = [ReaderClient(base_url) for _ in range(3)]
        for number, reader in enumerate(readers):
            reader.sign_up(f"Reader {number}")
        for reader in readers:
            assert reader.choose(story.id, 1).status_code == 202
        last = readers[2].events(story.id)
        queued = [data["words"] for name, data in last if name == "queued"]
        assert queued[0] == "Other readers' paragraphs are being written: 1 reader is ahead of you…"
        assert "Your paragraph is next in line…" in queued
        assert last[-1][0] == "done"
        for reader in readers[:2]:
            assert reader.events(story.id)[-1][0] in ("done", "idle")
    assert len(readers_steps(store, story.id)) == 3


def test_saved_places_and_bookmarks_work_without_the_script(room, story, store):
    ada = ReaderClient(room)
    ada.sign_up("Ada")
    at_first = ada.after(story.id)
    saved = ada.post(f"/stories/{story.id}/save", {"after": at_first, "name": "Before the fire"}, as_script=False)
    assert saved.status_code == 303 and saved.headers["location"] == f"/stories/{story.id}?note=saved#latest"
    assert "Your place is saved" in ada.http.get(saved.headers["location"]).text
    assert ada.choose(story.id, 2).status_code == 202
    ada.events(story.id)
    assert ada.after(story.id) != at_first
    places = ada.http.get(f"/stories/{story.id}/places").text
    assert "Saved · Before the fire" in places
    place_id = re.search(r"/places/([0-9a-f]+)/go", places).group(1)
    went = ada.post(f"/stories/{story.id}/places/{place_id}/go", {}, as_script=False)
    assert went.status_code == 303 and ada.after(story.id) == at_first
    ada.post(f"/stories/{story.id}/places/{place_id}/forget", {}, as_script=False)
    assert "Before the fire" not in ada.http.get(f"/stories/{story.id}/places").text


def test_the_room_builds_one_engine_for_every_reader(store, server, db_path, story, embedder):
    from longyarn.app.models import make_backend
    from longyarn.recurrent_core.engine import Engine

    built = []

    def one_engine(settings):
        built.append(settings)
        return Engine(store, make_backend(settings), embedder, settings.engine_config())

    server.responder = slow_writer(0.01)
    with web_reader(store, scripted_settings(db_path, server), engine_factory=one_engine) as base_url:
        readers = [ReaderClient(base_url) for _ in range(3)]
        for number, reader in enumerate(readers):
            reader.sign_up(f"Reader {number}")
            assert reader.choose(story.id, number + 1).status_code == 202
        for reader in readers:
            reader.events(story.id)
    assert len(built) == 1 and len(readers_steps(store, story.id)) == 3


async def test_pages_give_way_to_paragraphs_starting_but_never_for_ever():
    starting = StartingMoves(give_way_at_most_s=60.0)
    with starting.claiming():  # a reader's choice being claimed
        page = asyncio.create_task(starting.give_way())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not page.done()
    await asyncio.wait_for(page, 10)  # no paragraph starting: the page goes on
    impatient = StartingMoves(give_way_at_most_s=0.0)
    impatient.begin()
    await asyncio.wait_for(impatient.give_way(), 10)  # the longest a page waits has passed


async def test_a_move_comes_first_until_its_first_words_and_not_while_it_waits_in_line():
    starting = StartingMoves(give_way_at_most_s=60.0, first_words_grace_s=60.0)
    move = Move("reader", "story", starting)
    assert starting.count == 1
    move.set_phase("queued")
    assert starting.count == 0, "waiting in line uses nothing"
    move.set_phase("started")
    move.apply(PhaseChanged("writing"))
    assert starting.count == 1
    move.apply(ParagraphDelta("Mara", "Mara"))
    assert starting.count == 0
    move.set_phase("started")
    move.end()
    assert starting.count == 0
    failed = Move("reader", "story", starting)
    failed.end("the model failed")
    assert starting.count == 0


async def test_a_slow_models_paragraph_stops_coming_first_after_its_grace():
    starting = StartingMoves(give_way_at_most_s=60.0, first_words_grace_s=0.0)
    move = Move("reader", "story", starting)
    move.apply(PhaseChanged("writing"))  # the request went to the model; no words yet
    page = asyncio.create_task(starting.give_way())
    await asyncio.wait_for(page, 10)
    assert starting.count == 0 and not move.finished


def test_a_port_in_use_is_one_clear_sentence_and_no_false_open_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "longyarn.app.cli", "read", "--serve", "--port", str(port),
             "--db", str(tmp_path / "x.db")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 2
    assert "open at" not in result.stdout, "the room was never open"
    assert result.stderr.strip().splitlines() == [
        f"error: The reading room could not listen on 127.0.0.1:{port} (address already in use); "
        "nothing was started; choose another --port or --host, or stop what is using it."
    ]

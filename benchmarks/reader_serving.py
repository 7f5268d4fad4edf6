"""How many readers can one `longyarn read --serve` hold? Memory per session, time to first screen.

Starts the reader server (textual-serve: one app process per browser session) on a temporary
SQLite database holding one readable story, with the scripted OpenAI-compatible server as its
model, and drives it with websocket clients that speak textual-serve's browser protocol
(["stdin", keys], ["resize", size]) and read the terminal output it sends back.

For each session it measures:
- first screen: from opening the websocket until the library (with the story's title) is drawn;
- open story: from pressing Enter until the story's first paragraph is drawn;
- memory: the proportional set size (PSS: shared pages split between the processes sharing
  them) and RSS of the session's process tree, while every session is connected.

The baseline is one session alone, measured in the same run; then N sessions connect at once.

    python benchmarks/reader_serving.py [--sessions 20] [--width 100] [--height 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import aiohttp  # noqa: E402

from longyarn.app.session.reader_identity import new_token, register_reader  # noqa: E402
from longyarn.recurrent_core.types import NewStep  # noqa: E402
from longyarn.storage.db import open_store  # noqa: E402
from tests.scripted_server import ScriptedServer  # noqa: E402

TITLE = "The Salt Marsh Key"
FIRST_PARAGRAPH = "Mara came home on the last ferry, with the salt wind in her coat."
_ESCAPES = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-_])")


@dataclass
class SessionTimes:
    first_screen_s: float
    open_story_s: float


def seed(db_path: Path, readers: int) -> list[str]:
    """A readable three-paragraph story and `readers` registered readers; returns their tokens."""
    store = open_store(db_path)
    story = store.create_story(
        title=TITLE, premise="A woman comes home to a village that lies to her.",
        genre="mystery", outline="", readable=True, reader_may_extend=True,
    )
    parent = None
    vector = np.full(8, 0.5, dtype=np.float32)  # no generation here, so any embedding will do
    for number, paragraph in enumerate(
        [FIRST_PARAGRAPH, "The mill was still a black shell.", "She found a brass key."], start=1
    ):
        parent = store.commit_step(
            NewStep(
                story_id=story.id, parent_id=parent.id if parent else None,
                instruction=f"Part {number}.", paragraph=paragraph, short_term_memory="",
                memory_reason="", next_instructions=("A.", "B.", "C."), backend="openai",
                model="scripted-model",
            ),
            embedding=vector, embedding_model="benchmark",
        )
    tokens = []
    for number in range(readers):
        token = new_token()
        register_reader(store, token, f"Reader {number + 1}")
        tokens.append(str(token))
    store.close()
    return tokens


class TerminalClient:
    """A browser stand-in: one websocket session, its output as plain text."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.text = b""
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Event()

    async def connect(self, width: int, height: int) -> None:
        self.socket = await self.http.ws_connect(f"{self.url}?width={width}&height={height}")
        await self.socket.send_json(["resize", {"width": width, "height": height}])
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.socket is not None
        async for message in self.socket:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.text += _ESCAPES.sub(b"", message.data)
                self._changed.set()

    async def wait_for(self, phrase: str, timeout: float = 120) -> None:
        wanted = phrase.encode()
        deadline = time.monotonic() + timeout
        while wanted not in self.text:
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{phrase!r} never appeared")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def press(self, keys: str) -> None:
        assert self.socket is not None
        self.text = b""  # look for what the key brings, not what was there
        await self.socket.send_json(["stdin", keys])

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def run_session(client: TerminalClient, width: int, height: int) -> SessionTimes:
    started = time.perf_counter()
    await client.connect(width, height)
    await client.wait_for(TITLE)
    first_screen = time.perf_counter() - started
    started = time.perf_counter()
    await client.press("\r")
    await client.wait_for(FIRST_PARAGRAPH[:40])
    return SessionTimes(first_screen, time.perf_counter() - started)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB; (0, 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
    except OSError:
        return 0, 0
    value = lambda name: int(fields.get(name, "0 kB").split()[0])  # noqa: E731
    return value("Pss"), value("Rss")


def sessions_memory_mib(server_pid: int) -> tuple[float, float]:
    """Total (PSS, RSS) of every process the server started, in MiB."""
    totals = [memory_kib(pid) for pid in descendants(server_pid)]
    return sum(p for p, _ in totals) / 1024, sum(r for _, r in totals) / 1024


async def measure(base_url: str, tokens: list[str], server_pid: int, width: int, height: int):
    async with aiohttp.ClientSession() as http:
        clients = [TerminalClient(http, f"{base_url}/ws/{token}") for token in tokens]
        times = await asyncio.gather(*(run_session(c, width, height) for c in clients))
        await asyncio.sleep(1.0)  # let every session settle before reading memory
        pss, rss = sessions_memory_mib(server_pid)
        await asyncio.gather(*(c.close() for c in clients))
    await asyncio.sleep(2.0)  # sessions exit once their socket closes
    return times, pss / len(tokens), rss / len(tokens)


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the reader server did not start")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--height", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder, ScriptedServer() as model:
        db_path = Path(folder) / "stories.db"
        tokens = seed(db_path, args.sessions + 1)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        serve = (
            "from longyarn.app.settings import Settings; from longyarn.app.reader.web import serve_reader; "
            f"serve_reader(Settings(db={str(db_path)!r}, backend='openai', "
            f"base_url={model.base_url!r}, model='scripted-model'), port={port})"
        )
        environment = {**os.environ, "LONGYARN_CONFIG": str(Path(folder) / "config.toml")}
        server = subprocess.Popen(
            [sys.executable, "-c", serve], env=environment,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port)
            base_url = f"ws://127.0.0.1:{port}"
            one, one_pss, one_rss = asyncio.run(
                measure(base_url, tokens[:1], server.pid, args.width, args.height)
            )
            many, many_pss, many_rss = asyncio.run(
                measure(base_url, tokens[1:], server.pid, args.width, args.height)
            )
        finally:
            server.terminate()
            server.wait(timeout=20)

    cores = os.cpu_count()
    print(f"reader serving: {args.sessions} concurrent sessions vs 1 alone "
          f"(baseline, same run); {cores} CPUs; terminal {args.width}x{args.height}")
    first_one = one[0].first_screen_s
    open_one = one[0].open_story_s
    first_many = [t.first_screen_s for t in many]
    open_many = [t.open_story_s for t in many]
    print(f"  time to first screen   1 session: {first_one:6.2f} s   "
          f"{args.sessions} sessions: p50 {percentile(first_many, 50):6.2f} s, "
          f"p95 {percentile(first_many, 95):6.2f} s, max {max(first_many):6.2f} s   "
          f"(p50 ratio {percentile(first_many, 50) / first_one:4.1f}x)")
    print(f"  open a story (Enter)   1 session: {open_one:6.2f} s   "
          f"{args.sessions} sessions: p50 {percentile(open_many, 50):6.2f} s, "
          f"p95 {percentile(open_many, 95):6.2f} s   "
          f"(p50 ratio {percentile(open_many, 50) / open_one:4.1f}x)")
    print(f"  memory per session     1 session: PSS {one_pss:6.1f} MiB, RSS {one_rss:6.1f} MiB   "
          f"{args.sessions} sessions: PSS {many_pss:6.1f} MiB, RSS {many_rss:6.1f} MiB each "
          f"(PSS ratio {many_pss / one_pss:4.2f}x)")
    print("  (a session that has a paragraph written also loads the embedding model: "
          "expect several hundred MiB more for it)")


if __name__ == "__main__":
    main()

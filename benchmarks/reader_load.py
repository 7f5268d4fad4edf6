"""Readers at scale: N readers at once on the web reader, against textual-serve at N = 20.

Starts `longyarn read --serve` on a temporary SQLite database holding one published story,
with the scripted OpenAI-compatible server (its own process) answering at once. N simulated
readers (returning readers: their cookie is set) start at the same moment; each opens the
story's page, takes a choice, and reads the streamed paragraph to its end, over real HTTP.

For N readers it prints:
- time to first paragraph byte: from sending the choice until the first byte of the new
  paragraph's text arrives on the stream (p50, p95);
- moves per second: N divided by the time from the start until the last paragraph ended;
- the server's memory growth divided by N: the peak proportional set size (PSS) of the
  server's processes during the run, less what it held after a warm-up reader's move;
- errors: refused requests, failed moves, readers that did not finish in time.

The baseline is today's `longyarn read --serve --terminal` (textual-serve, one app process
per reader) at N = 20 in the same run: the time from pressing the choice's key until the new
paragraph's first words are drawn, and the PSS per session while all are connected. Its
paragraph is known in advance: the scripted server answers equal requests equally, and a
warm-up session makes the same choice first.

    python benchmarks/reader_load.py --readers 200 [--also 1000] [--baseline-readers 20]

The last line is `readers=N first_byte_p50_ms=X first_byte_p95_ms=Y memory_per_reader_kib=Z errors=E`
for the first --readers value.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import aiohttp  # noqa: E402

import reader_serving  # noqa: E402  (the textual-serve benchmark: seeding, terminal clients, memory)
from longyarn.storage.db import open_store  # noqa: E402

CHOICE = 2  # "B." in the seeded story: every reader takes the same choice
READER_TIMEOUT_S = 600.0
SCRIPTED_SERVER = """
import sys, time
from tests.scripted_server import ScriptedServer
with ScriptedServer() as server:
    print(server.base_url, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
"""


@dataclass
class ReaderRun:
    open_s: float = float("nan")
    first_byte_s: float = float("nan")
    move_s: float = float("nan")
    error: str = ""


@dataclass
class LoadResult:
    readers: int
    runs: list[ReaderRun]
    wall_s: float
    peak_growth_kib: float
    settled_growth_kib: float
    errors: int = field(init=False)

    def __post_init__(self) -> None:
        self.errors = sum(1 for run in self.runs if run.error)

    def first_byte_ms(self, q: float) -> float:
        return 1000 * reader_serving.percentile([r.first_byte_s for r in self.runs if not r.error], q)


# ---- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_scripted_server() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPTED_SERVER], cwd=ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )
    return process, process.stdout.readline().strip()


def start_reader(db_path: Path, model_url: str, folder: Path, *, terminal: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "longyarn.app.cli", "read", "--serve", "--port", str(port),
               "--db", str(db_path), "--backend", "openai", "--base-url", model_url,
               "--model", "scripted-model"]
    if terminal:
        command.append("--terminal")
    environment = {
        **os.environ,
        "LONGYARN_CONFIG": str(folder / "config.toml"),
        "LONGYARN_READER_STEPS_PER_MINUTE": "600",
        # Every reader's paragraph may be written at once: the model server answers at once.
        "LONGYARN_READER_CONCURRENT_STEPS": "1024",
    }
    log = open(folder / "server.log", "w")  # noqa: SIM115 - read when a reader fails
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    reader_serving.wait_for_port(port, timeout=120)
    return process, port


def stop(server: subprocess.Popen) -> None:
    """Stop a reader server and every process it started, so none runs into the next figure."""
    children = reader_serving.descendants(server.pid)
    server.terminate()
    try:
        server.wait(timeout=120)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def server_pss_kib(pid: int) -> int:
    return sum(reader_serving.memory_kib(p)[0] for p in [pid, *reader_serving.descendants(pid)])


class PeakMemory:
    """Samples the server's PSS every 50 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, server_pss_kib(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- the web reader --------------------------------------------------------------------

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_AFTER = re.compile(r'name="after" value="([^"]*)"')


async def one_reader(http: aiohttp.ClientSession, base: str, story_id: str, token: str, start: asyncio.Event) -> ReaderRun:
    run = ReaderRun()
    cookie = {"Cookie": f"longyarn_reader={token}"}
    await start.wait()
    try:
        began = time.perf_counter()
        async with http.get(f"{base}/stories/{story_id}", headers=cookie) as page:
            html = await page.text()
            if page.status != 200:
                raise RuntimeError(f"page {page.status}")
        run.open_s = time.perf_counter() - began
        fields = {"csrf": _CSRF.search(html).group(1), "after": _AFTER.search(html).group(1),
                  "choice": str(CHOICE - 1)}
        chose = time.perf_counter()
        async with http.post(f"{base}/stories/{story_id}/choose", data=fields,
                             headers={**cookie, "Accept": "application/json"}) as answer:
            if answer.status != 202:
                raise RuntimeError(f"choose {answer.status}: {(await answer.text())[:120]}")
        async with http.get(f"{base}/stories/{story_id}/stream", headers=cookie) as stream:
            event = None
            async for raw in stream.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "text" and (data.get("append") or data.get("replace")) and run.first_byte_s != run.first_byte_s:
                        run.first_byte_s = time.perf_counter() - chose
                    elif event == "done":
                        if run.first_byte_s != run.first_byte_s:  # the whole paragraph came at once
                            run.first_byte_s = time.perf_counter() - chose
                        run.move_s = time.perf_counter() - chose
                        return run
                    elif event in ("failed", "idle"):
                        raise RuntimeError(f"{event}: {data}")
        raise RuntimeError("the stream ended before the paragraph did")
    except Exception as error:  # counted, not raised: one reader's failure is a figure
        run.error = f"{type(error).__name__}: {error}"
        return run


async def load(base: str, story_id: str, tokens: list[str]) -> tuple[list[ReaderRun], float]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=READER_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     cookie_jar=aiohttp.DummyCookieJar()) as http:
        start = asyncio.Event()
        tasks = [asyncio.create_task(one_reader(http, base, story_id, token, start)) for token in tokens]
        await asyncio.sleep(0.2)  # every reader is waiting on the same starting gun
        began = time.perf_counter()
        start.set()
        runs = await asyncio.gather(*tasks)
        return list(runs), time.perf_counter() - began


def web_reader_load(readers: int, model_url: str) -> LoadResult:
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        db_path = folder / "stories.db"
        tokens = reader_serving.seed(db_path, readers + 1)
        with open_store(db_path) as store:
            story_id = store.readable_stories()[0].id
        server, port = start_reader(db_path, model_url, folder, terminal=False)
        base = f"http://127.0.0.1:{port}"
        try:
            warm, _ = asyncio.run(load(base, story_id, tokens[:1]))  # loads the engine and embedder
            if warm[0].error:
                raise RuntimeError(
                    f"the warm-up reader failed: {warm[0].error}\n{(folder / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(1.0)
            before = server_pss_kib(server.pid)
            with PeakMemory(server.pid) as memory:
                runs, wall_s = asyncio.run(load(base, story_id, tokens[1:]))
                time.sleep(0.5)
            settled = server_pss_kib(server.pid)
        finally:
            stop(server)
    return LoadResult(readers, runs, wall_s, (memory.peak - before) / readers, (settled - before) / readers)


# ---- the baseline: textual-serve -------------------------------------------------------


async def terminal_session(client: "reader_serving.TerminalClient", paragraph_start: str) -> ReaderRun:
    run = ReaderRun()
    try:
        began = time.perf_counter()
        await client.connect(100, 30)
        await client.wait_for(reader_serving.TITLE, timeout=READER_TIMEOUT_S)
        await client.press("\r")
        await client.wait_for(reader_serving.FIRST_PARAGRAPH[:40], timeout=READER_TIMEOUT_S)
        run.open_s = time.perf_counter() - began
        chose = time.perf_counter()
        await client.press(str(CHOICE))
        await client.wait_for(paragraph_start, timeout=READER_TIMEOUT_S)
        run.first_byte_s = run.move_s = time.perf_counter() - chose
    except Exception as error:
        run.error = f"{type(error).__name__}: {error}"
    return run


async def terminal_load(base: str, tokens: list[str], paragraph_start: str, server_pid: int):
    async with aiohttp.ClientSession() as http:
        clients = [reader_serving.TerminalClient(http, f"{base}/ws/{token}") for token in tokens]
        began = time.perf_counter()
        runs = await asyncio.gather(*(terminal_session(client, paragraph_start) for client in clients))
        wall_s = time.perf_counter() - began
        pss_kib = server_pss_kib(server_pid)
        await asyncio.gather(*(client.close() for client in clients))
    return list(runs), wall_s, pss_kib


def terminal_reader_load(readers: int, model_url: str) -> LoadResult:
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        db_path = folder / "stories.db"
        tokens = reader_serving.seed(db_path, readers + 1)
        server, port = start_reader(db_path, model_url, folder, terminal=True)
        base = f"ws://127.0.0.1:{port}"
        try:
            # The warm-up session writes the paragraph every session will be shown.
            written = asyncio.run(terminal_warm_up(base, tokens[0], db_path))
            paragraph_start = " ".join(written.split()[:3])
            time.sleep(2.0)  # its process exits
            before = server_pss_kib(server.pid)
            runs, wall_s, connected = asyncio.run(terminal_load(base, tokens[1:], paragraph_start, server.pid))
        finally:
            stop(server)
    return LoadResult(readers, runs, wall_s, (connected - before) / readers, float("nan"))


async def terminal_warm_up(base: str, token: str, db_path: Path) -> str:
    """One session takes the choice; returns the paragraph written for it."""
    async with aiohttp.ClientSession() as http:
        client = reader_serving.TerminalClient(http, f"{base}/ws/{token}")
        await client.connect(100, 30)
        await client.wait_for(reader_serving.TITLE)
        await client.press("\r")
        await client.wait_for(reader_serving.FIRST_PARAGRAPH[:40])
        await client.press(str(CHOICE))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with open_store(db_path) as store:
                with store.engine.connect() as connection:
                    written = connection.exec_driver_sql(
                        "SELECT paragraph FROM steps WHERE branch_owner IS NOT NULL"
                    ).scalar()
            if written:
                await client.close()
                return written
            await asyncio.sleep(0.2)
        raise RuntimeError("the warm-up session wrote no paragraph")


# ---- reporting -------------------------------------------------------------------------


def describe(name: str, result: LoadResult) -> None:
    ok = [r for r in result.runs if not r.error]
    opens = [r.open_s for r in ok]
    moves = [r.move_s for r in ok]
    print(f"{name}, {result.readers} readers at once:")
    print(f"  open the story         p50 {1000 * reader_serving.percentile(opens, 50):8.0f} ms   "
          f"p95 {1000 * reader_serving.percentile(opens, 95):8.0f} ms")
    print(f"  first paragraph byte   p50 {result.first_byte_ms(50):8.0f} ms   p95 {result.first_byte_ms(95):8.0f} ms")
    print(f"  whole move             p50 {1000 * reader_serving.percentile(moves, 50):8.0f} ms   "
          f"p95 {1000 * reader_serving.percentile(moves, 95):8.0f} ms")
    print(f"  moves per second       {len(ok) / result.wall_s:8.1f}   (all done in {result.wall_s:.1f} s)")
    settled = "" if result.settled_growth_kib != result.settled_growth_kib else (
        f"; {result.settled_growth_kib:,.0f} KiB once their moves ended")
    print(f"  server memory / reader {result.peak_growth_kib:8,.0f} KiB PSS at the peak{settled}")
    print(f"  errors                 {result.errors}")
    for run in [r for r in result.runs if r.error][:3]:
        print(f"    e.g. {run.error[:160]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--also", type=int, nargs="*", default=[], help="more reader counts to run")
    parser.add_argument("--baseline-readers", type=int, default=20)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of sockets, both ends

    scripted, model_url = start_scripted_server()
    try:
        print(f"reader load: {os.cpu_count()} CPUs; the scripted model server answers at once "
              "(its own process); SQLite; every reader takes one choice and reads its paragraph")
        baseline = None
        if not args.no_baseline:
            baseline = terminal_reader_load(args.baseline_readers, model_url)
            describe("baseline: textual-serve (longyarn read --serve --terminal)", baseline)
        results = []
        for readers in [args.readers, *args.also]:
            result = web_reader_load(readers, model_url)
            describe("web reader (longyarn read --serve)", result)
            results.append(result)
        if baseline is not None:
            same = next((r for r in results if r.readers == baseline.readers), None)
            if same is None:
                same = web_reader_load(baseline.readers, model_url)
                describe("web reader (longyarn read --serve)", same)
            print(f"at {baseline.readers} readers: first byte p95 "
                  f"{baseline.first_byte_ms(95) / same.first_byte_ms(95):.1f}x faster, memory per reader "
                  f"{baseline.peak_growth_kib / max(same.peak_growth_kib, 1):.0f}x smaller than textual-serve")
        main_result = results[0]
    finally:
        scripted.stdin.close()
        scripted.wait(timeout=30)
    print(f"readers={main_result.readers} first_byte_p50_ms={main_result.first_byte_ms(50):.0f} "
          f"first_byte_p95_ms={main_result.first_byte_ms(95):.0f} "
          f"memory_per_reader_kib={max(0.0, main_result.peak_growth_kib):.0f} errors={main_result.errors}")


if __name__ == "__main__":
    main()

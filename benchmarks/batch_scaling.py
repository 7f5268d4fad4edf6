"""Batch scaling: paragraphs per second with K novels at once against one slow server.

A scripted OpenAI-compatible server on 127.0.0.1, in its own process as a real server would be,
answers every request after 200 ms (as a busy remote model would). K=1 is the baseline; the
target is K=8 >= 6x its paragraphs per second.

    python benchmarks/batch_scaling.py [--latency 0.2] [--paragraphs 6] [--ks 1 2 4 8]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longyarn.app.batch import NovelJob, Reporter, write_novels  # noqa: E402
from longyarn.recurrent_core.backends.openai_backend import OpenAIBackend  # noqa: E402
from longyarn.recurrent_core.embeddings import default_embedder  # noqa: E402
from longyarn.recurrent_core.engine import Engine, EngineConfig  # noqa: E402
from longyarn.storage.db import open_store  # noqa: E402
from tests.scripted_server import ScriptedServer  # noqa: E402


class _Silent:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


async def paragraphs_per_second(base_url: str, k: int, paragraphs: int, db: Path) -> float:
    backend = OpenAIBackend("scripted-model", base_url=base_url, api_key=None)
    engine = Engine(open_store(str(db)), backend, default_embedder(), EngineConfig())
    jobs = [NovelJob(premise=f"Premise number {i}: a traveller and a map.") for i in range(k)]
    start = time.perf_counter()
    outcomes = await write_novels(
        engine, jobs, paragraphs=paragraphs, concurrency=k, choose="first", seed=0,
        reporter=Reporter(stdout=_Silent(), stderr=_Silent()),
    )
    elapsed = time.perf_counter() - start
    await backend.aclose()
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise failures[0]
    return k * paragraphs / elapsed


def _serve(latency: float, urls, stop) -> None:
    with ScriptedServer(latency_s=latency) as server:
        urls.put(server.base_url)
        stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--paragraphs", type=int, default=6)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    default_embedder().embed(["warm up"])
    results: dict[int, float] = {}
    client_cpu: dict[int, float] = {}  # CPU seconds of this process per paragraph
    context = multiprocessing.get_context("spawn")
    urls, stop = context.Queue(), context.Event()
    server = context.Process(target=_serve, args=(args.latency, urls, stop), daemon=True)
    server.start()
    base_url = urls.get(timeout=60)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for k in sorted(set([1] + args.ks)):
                before = resource.getrusage(resource.RUSAGE_SELF)
                results[k] = asyncio.run(
                    paragraphs_per_second(base_url, k, args.paragraphs, Path(tmp) / f"k{k}.db")
                )
                after = resource.getrusage(resource.RUSAGE_SELF)
                used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                client_cpu[k] = used / (k * args.paragraphs)
    finally:
        stop.set()
        server.join(timeout=10)
    print(f"server latency {args.latency * 1000:.0f} ms per request; {args.paragraphs} paragraphs per novel")
    print(f"{'K':>3} {'paragraphs/s':>13} {'vs K=1':>7} {'client CPU ms/paragraph':>24}")
    for k, rate in results.items():
        print(f"{k:>3} {rate:13.2f} {rate / results[1]:6.2f}x {client_cpu[k] * 1000:24.0f}")
    if 8 in results:
        print(f"target: K=8 >= 6x K=1 -> {'met' if results[8] / results[1] >= 6 else 'NOT met'}")


if __name__ == "__main__":
    main()

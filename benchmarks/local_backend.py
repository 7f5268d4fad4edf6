"""The local backend on this CPU: speed, the prefix-state cache, the cost of JRT, and `serve`.

    python benchmarks/local_backend.py [--checkpoint PATH] [--threads 2] [--prompt-tokens 2048]

Prints six figures, each against a baseline measured in the same run:
1. decode and prefill tokens/s of the model itself (`LocalLM.forward`);
2. the prefix-state cache: a step whose prompt shares all but its last 10% with the previous
   step's, timed with the cache against the same backend without it (target: at most 0.3x),
   on the model and on a 0.1B-shaped one with random weights, where prefill costs as much as
   with a real small checkpoint;
3. JRT: the prompt tokens and prefill time of an engine-shaped writer prompt laid out with
   the context twice (jrt_repeats=2) against once;
4. `longyarn serve`: tokens/s through HTTP and the openai client, with the server in its own
   process as users run it, against the same generation on the backend directly (target: at
   least 0.9x);
5. a story step through the engine (writer, memory, plans, recall, SQLite) with a prose-only
   model such as the demo, which is asked for the paragraph alone, against the same model
   asked for its memory update and plans as well (with the engine's repair attempts);
6. versions at once: four versions of a paragraph from one writer prompt (read once, sampled
   as one batch: `LocalRuntime.generate_many`) against one paragraph from the same prompt
   (target: at most 2x), on the model and on a 0.1B-shaped one.

The model is --checkpoint, else the bundled demo model; without either, a model of the demo
model's shape (6 layers, 384 wide, a 4,096-token BPE) with random weights: speed does not
depend on the weights' values. Prompt text comes from the books in /work/shared/corpus.
Each timing is the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from longyarn.recurrent_core import prompts  # noqa: E402
from longyarn.recurrent_core.backends.base import GenerationRequest  # noqa: E402
from longyarn.recurrent_core.backends.local import LocalBackend  # noqa: E402
from longyarn.recurrent_core.compute import run_on_compute_thread  # noqa: E402
from longyarn.recurrent_core.engine import Engine, EngineConfig, default_sampling  # noqa: E402
from longyarn.recurrent_core.local_lm.runtime import DEMO_MODEL_DIR  # noqa: E402
from longyarn.recurrent_core.local_lm.sampling import SamplerConfig  # noqa: E402
from longyarn.recurrent_core.types import ContextSection, Prompt, Sampling  # noqa: E402

CORPUS = Path("/work/shared/corpus/gutenberg")
DEMO_SHAPE = dict(n_layer=6, n_embd=384, head_size=64)
DEMO_VOCAB = 4096


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="an RWKV-7 .pth or longyarn model directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=2048, help="prompt length for figures 1 and 2")
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", type=int, choices=range(1, 7), help="print this figure alone")
    return parser.parse_args()


def corpus_text(max_chars: int, seed: int = 0) -> str:
    """Paragraphs of several books, in a seeded order."""
    from longyarn.training.tokenizer_training import normalise_book

    books = sorted(CORPUS.glob("*.txt"))
    if not books:
        sys.exit(f"No books in {CORPUS}; this benchmark takes its prompts from that corpus.")
    rng = random.Random(seed)
    paragraphs: list[str] = []
    for book in rng.sample(books, min(6, len(books))):
        text = normalise_book(book.read_text(encoding="utf-8"))
        paragraphs.extend(p for p in text.split("\n\n")[50:400] if len(p) > 200)
    rng.shuffle(paragraphs)
    out, size = [], 0
    for paragraph in paragraphs:
        out.append(paragraph)
        size += len(paragraph) + 2
        if size >= max_chars:
            break
    return "\n\n".join(out)


def load_backend(args: argparse.Namespace, workdir: Path) -> tuple[LocalBackend, Path, str]:
    """The backend, the checkpoint it came from, and how to describe it."""
    if args.checkpoint:
        return LocalBackend.load(args.checkpoint), args.checkpoint, str(args.checkpoint)
    if DEMO_MODEL_DIR.is_dir():
        return LocalBackend.load(DEMO_MODEL_DIR), DEMO_MODEL_DIR, "the bundled demo model"
    from longyarn.recurrent_core.local_lm import save_own_format
    from longyarn.training.synthetic import random_rwkv7_state_dict
    from longyarn.training.tokenizer_training import train_tokenizer

    tokenizer = train_tokenizer([corpus_text(2_000_000, seed=99)], DEMO_VOCAB)
    weights = random_rwkv7_state_dict(vocab_size=tokenizer.get_vocab_size(), seed=0, **DEMO_SHAPE)
    path = save_own_format(weights, None, tokenizer, workdir / "random-demo-shape")
    shape = DEMO_SHAPE
    return LocalBackend.load(path), path, (
        f"random weights in the demo model's shape ({shape['n_layer']} layers, {shape['n_embd']} "
        f"wide, vocabulary {tokenizer.get_vocab_size()}); no demo model is installed"
    )


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_speed(backend: LocalBackend, ids: list[int], decode_tokens: int, repeats: int) -> None:
    """Prefill all of `ids` at once; decode `decode_tokens` of them one by one after 16."""
    lm = backend.lm
    prefill = median_seconds(lambda: lm.forward(ids), repeats)
    _, state = lm.forward(ids[:16])
    tokens = ids[16 : 16 + decode_tokens]

    def decode() -> None:
        current = state
        for token in tokens:
            _, current = lm.forward([token], current)

    decode_s = median_seconds(decode, repeats)
    print("1. The model itself (LocalLM.forward)")
    print(f"   prefill: {len(ids) / prefill:8.0f} tokens/s  ({len(ids)} tokens in {prefill:.3f} s)")
    print(f"   decode:  {len(tokens) / decode_s:8.1f} tokens/s  ({len(tokens)} tokens, one at a time)")


async def timed_generation(backend: LocalBackend, prompt, config: SamplerConfig) -> tuple[float, int]:
    start = time.perf_counter()
    generation = backend.generate(prompt, config)
    await generation.text()
    return time.perf_counter() - start, generation.usage.completion_tokens


async def prefix_cache_step_times(model: LocalBackend, ids: list[int], repeats: int) -> dict[str, float]:
    """Median seconds of a step (prefill + 16 tokens) whose prompt shares its first 90% with
    the previous step's, on a backend without the cache and on one with it."""
    keep = int(len(ids) * 0.9)
    head, pool = ids[:keep], ids[keep:] + ids[:keep]
    tail_length = len(ids) - keep
    config = SamplerConfig(temperature=0, max_tokens=16)
    results = {}
    for label, cache_mb in (("without the cache", 0), ("with the cache", 256)):
        backend = LocalBackend(model.lm, model.tokenizer, prefix_cache_mb=cache_mb, model_name=model.info.model)
        times = []
        for repeat in range(repeats):
            previous_tail = pool[repeat * 7 : repeat * 7 + tail_length]
            new_tail = pool[repeat * 7 + 3 : repeat * 7 + 3 + tail_length]
            await timed_generation(backend, head + previous_tail, config)
            seconds, _ = await timed_generation(backend, head + new_tail, config)
            times.append(seconds)
        results[label] = statistics.median(times)
        await backend.aclose()
    return results


def world_shaped_backend(n_layer: int, n_embd: int) -> LocalBackend:
    """Random weights in a BlinkDL shape with the World vocabulary (speed does not depend on
    the weights' values)."""
    from longyarn.recurrent_core.local_lm import LocalLM
    from longyarn.recurrent_core.local_lm.tokenizer import WorldTokenizer
    from longyarn.training.synthetic import random_rwkv7_state_dict

    # bf16, as BlinkDL publishes them (the CPU then reads exact fp16 copies, see projection.py).
    weights = random_rwkv7_state_dict(
        n_layer=n_layer, n_embd=n_embd, head_size=64, vocab_size=65536, seed=0, dtype=torch.bfloat16
    )
    return LocalBackend(LocalLM.from_state_dict(weights), WorldTokenizer(), model_name="random-0.1b-shape")


async def prefix_cache_figure(backend: LocalBackend, described: str, ids: list[int], repeats: int) -> None:
    rows = [(described, await prefix_cache_step_times(backend, ids, repeats))]
    # Where prefill is dear, as with real checkpoints, the cache matters most; the demo
    # model reads a prompt ~40x faster per token than it writes one, so its 16 written
    # tokens alone are over a fifth of an uncached step.
    bigger = run_on_compute_thread(world_shaped_backend, 12, 768)
    rows.append(("a 0.1B-shaped model (L12 D768, random weights)", await prefix_cache_step_times(bigger, ids, repeats)))
    bigger.close()
    print(f"2. Prefix-state cache: a {len(ids)}-token step sharing its first 90% with the previous step")
    for name, results in rows:
        ratio = results["with the cache"] / results["without the cache"]
        verdict = "meets" if ratio <= 0.3 else "misses"
        print(f"   {name}:")
        for label, seconds in results.items():
            print(f"     {label:18s} {seconds * 1000:8.0f} ms (prefill + 16 tokens)")
        print(f"     ratio: {ratio:.2f}x the time without it ({verdict} the target of at most 0.3x)")


def writer_prompt(text: str) -> Prompt:
    paragraphs = text.split("\n\n")
    sections = (
        ContextSection("Story frame", "Title: The Long Road\nGenre: adventure\nPremise: " + paragraphs[0][:600], 0),
        ContextSection("Short-term memory", paragraphs[1][:800], 0),
        ContextSection("Recalled passages", "\n\n".join(paragraphs[2:5]), 0),
        ContextSection("Previous paragraph", paragraphs[5], 0),
    )
    return prompts.render_prompt("writer", context_sections=sections, instruction="They reach the river at dusk.")


async def jrt_figure(checkpoint_backend: LocalBackend, text: str, repeats: int) -> None:
    prompt = writer_prompt(text)
    rows = {}
    for repeats_of_context in (1, 2):
        backend = LocalBackend(
            checkpoint_backend.lm, checkpoint_backend.tokenizer, prefix_cache_mb=0,
            jrt_repeats=repeats_of_context, model_name=checkpoint_backend.info.model,
        )
        request = GenerationRequest(prompt, Sampling(temperature=0, max_tokens=1))
        times, tokens = [], 0
        for _ in range(repeats):
            start = time.perf_counter()
            async for chunk in backend.stream(request):
                if chunk.usage:
                    tokens = chunk.usage.prompt_tokens
            times.append(time.perf_counter() - start)
        rows[repeats_of_context] = (tokens, statistics.median(times))
        await backend.aclose()
    (tokens_1, time_1), (tokens_2, time_2) = rows[1], rows[2]
    print("3. JRT on an engine-shaped writer prompt (story frame, memory, 3 recalled passages, previous paragraph)")
    print(f"   context once  (jrt_repeats=1): {tokens_1:6d} prompt tokens, {time_1 * 1000:7.0f} ms to read")
    print(f"   context twice (jrt_repeats=2): {tokens_2:6d} prompt tokens, {time_2 * 1000:7.0f} ms to read")
    print(f"   cost: {tokens_2 / tokens_1:.2f}x the tokens, {time_2 / time_1:.2f}x the time")


@contextlib.contextmanager
def serve_process(checkpoint: Path, threads: int) -> Iterator[str]:
    """`longyarn serve` in its own process, as it is deployed; yields its base URL."""
    # No user config: the server reads only what the command line says.
    config = Path(tempfile.mkdtemp()) / "config.toml"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "LONGYARN_CONFIG": str(config)}
    command = [sys.executable, "-m", "longyarn.app.cli", "serve", "--port", "0", "--checkpoint", str(checkpoint)]
    server = subprocess.Popen(
        command, cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in server.stderr:  # "Serving NAME (...) at http://127.0.0.1:PORT/v1, ..."
            found = re.search(r"at (http://\S+/v1)", line)
            if found:
                break
        else:
            sys.exit(f"longyarn serve did not start (exit code {server.wait()}).")
        threading.Thread(target=server.stderr.read, daemon=True).start()  # keep its pipe drained
        yield found.group(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def serve_figure(checkpoint_backend: LocalBackend, checkpoint: Path, threads: int, decode_tokens: int, repeats: int) -> None:
    """The same generation directly on a backend in this process and through `longyarn serve`
    in its own process with the same thread count, alternating (after one warm-up each) so
    that load from other programs hits both alike."""
    import openai

    backend = LocalBackend(
        checkpoint_backend.lm, checkpoint_backend.tokenizer, prefix_cache_mb=0,
        model_name=checkpoint_backend.info.model,
    )
    prompt = "The road ran north through the pines, and"
    eos = backend.tokenizer.eos_id
    config = SamplerConfig(
        temperature=1.0, top_p=0.9, max_tokens=decode_tokens, seed=1,
        banned_token_ids=(eos,) if eos is not None else (),
    )

    def direct() -> int:
        return asyncio.run(timed_generation(backend, prompt, config))[1]

    def served(client: openai.OpenAI, model: str) -> int:
        stream = client.completions.create(
            model=model, prompt=prompt, max_tokens=decode_tokens, seed=1,
            temperature=1.0, top_p=0.9, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        return next(chunk.usage.completion_tokens for chunk in stream if chunk.usage)

    rates: dict[str, list[float]] = {"direct": [], "served": []}
    with serve_process(checkpoint, threads) as url, openai.OpenAI(base_url=url, api_key="x", max_retries=0) as client:
        model = client.models.list().data[0].id
        runs = {"direct": direct, "served": lambda: served(client, model)}
        for run in runs.values():
            run()  # warm-up: first connection, first sampler
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                tokens = run()
                rates[name].append(tokens / (time.perf_counter() - start))
    backend.close()
    direct_rate, served_rate = statistics.median(rates["direct"]), statistics.median(rates["served"])
    ratio = served_rate / direct_rate
    verdict = "meets" if ratio >= 0.9 else "misses"
    print(f"4. longyarn serve: {decode_tokens} tokens streamed (prompt, sampling and seed alike)")
    print(f"   LocalBackend in this process:              {direct_rate:7.1f} tokens/s")
    print(f"   longyarn serve (own process) + openai client: {served_rate:7.1f} tokens/s")
    print(f"   ratio: {ratio:.2f}x the tokens/s ({verdict} the target of at least 0.9x)")


async def engine_step_seconds(backend: LocalBackend, workdir: Path, name: str, steps: int) -> float:
    """Median seconds a step of a new story takes, after its first (which warms the caches)."""
    from longyarn.recurrent_core.embeddings import default_embedder
    from longyarn.storage.db import open_store

    sampling = default_sampling()
    sampling.update(LocalBackend.recommended_sampling(sampling))
    sampling = {role: s.model_copy(update={"seed": 7}) for role, s in sampling.items()}
    with open_store(workdir / f"{name}.db") as store:
        engine = Engine(store, backend, default_embedder(), EngineConfig(sampling=sampling))
        story, _ = await engine.start_story(
            "A lighthouse keeper finds a door in the sea.", "fable", title="The Door", outline="A door."
        )
        await engine.run_step(story.id)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            await engine.run_step(story.id)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def prose_only_figure(backend: LocalBackend, workdir: Path, steps: int) -> None:
    print("5. A story step through the engine (writer, memory, plans, recall, SQLite)")
    if not backend.info.prose_only:
        print("   skipped: this model is not prose-only, so the engine asks it for everything")
        return
    prose_only = asyncio.run(engine_step_seconds(backend, workdir, "prose-only", steps))
    backend.info.prose_only = False
    try:
        asking = asyncio.run(engine_step_seconds(backend, workdir, "asking", steps))
    finally:
        backend.info.prose_only = True
    print(f"   asked for memory and plans as well (baseline): {asking:6.2f} s a step")
    print(f"   prose-only, paragraph alone:                   {prose_only:6.2f} s a step")
    print(f"   ratio: {prose_only / asking:.2f}x the time of a step (median of {steps})")


async def versions_seconds(model: LocalBackend, prompt_text: str, tokens: int, copies: int, repeats: int) -> dict:
    """Median seconds to write one paragraph of `tokens` tokens after the prompt, and `copies`
    of them at once (each exactly `tokens` long: the end of text is not allowed)."""
    backend = LocalBackend(model.lm, model.tokenizer, prefix_cache_mb=0, model_name=model.info.model)
    eos = backend.tokenizer.eos_id
    config = SamplerConfig(temperature=1.0, top_p=0.9, max_tokens=tokens, seed=7,
                           banned_token_ids=(eos,) if eos is not None else ())
    # Warm both paths first: a decoding step may be compiled on its first call for each batch size.
    warm = dataclasses.replace(config, max_tokens=4)
    await backend.runtime.generate(prompt_text, warm).text()
    async for _piece in backend.runtime.generate_many(prompt_text, warm, copies):
        pass
    one, many = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        await backend.runtime.generate(prompt_text, config).text()
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        generations = backend.runtime.generate_many(prompt_text, config, copies)
        async for _piece in generations:
            pass
        many.append(time.perf_counter() - start)
        assert generations.usage.completion_tokens == tokens * copies
    await backend.aclose()
    return {"one": statistics.median(one), "many": statistics.median(many)}


async def versions_figure(backend: LocalBackend, text: str, repeats: int, copies: int = 4, tokens: int = 300) -> None:
    prompt_text = backend.layout(writer_prompt(text))
    rows = [(backend.info.model, await versions_seconds(backend, prompt_text, tokens, copies, repeats))]
    bigger = run_on_compute_thread(world_shaped_backend, 12, 768)
    bigger_prompt = bigger.layout(writer_prompt(text))
    rows.append(("a 0.1B-shaped model (L12 D768, random weights)",
                 await versions_seconds(bigger, bigger_prompt, tokens, copies, max(1, repeats // 2))))
    bigger.close()
    prompt_tokens = backend.count_tokens(prompt_text)
    print(f"6. Versions at once: {copies} versions of a {tokens}-token paragraph after one writer prompt "
          f"({prompt_tokens} tokens for {backend.info.model}), read once and sampled as a batch")
    for name, seconds in rows:
        ratio = seconds["many"] / seconds["one"]
        verdict = "meets" if ratio <= 2 else "misses"
        print(f"   {name}:")
        print(f"     one paragraph:      {seconds['one']:7.2f} s")
        print(f"     {copies} versions at once: {seconds['many']:7.2f} s")
        print(f"     ratio: {ratio:.2f}x one paragraph ({verdict} the target of at most 2x)")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        backend, checkpoint, described = run_on_compute_thread(load_backend, args, Path(workdir))
        text = corpus_text(60_000)
        ids = backend.tokenizer.encode(text)
        if len(ids) < args.prompt_tokens + args.decode_tokens + 16:
            sys.exit("The corpus sample is too short for --prompt-tokens; lower it.")
        prompt_ids = ids[: args.prompt_tokens]
        print(f"Model: {described}; {args.threads} threads; medians of {args.repeats} runs.\n")
        figures: dict[int, Callable[[], object]] = {
            # On the compute thread, where the backend runs the model (see longyarn.recurrent_core.compute).
            1: lambda: run_on_compute_thread(model_speed, backend, prompt_ids, args.decode_tokens, args.repeats),
            2: lambda: asyncio.run(prefix_cache_figure(backend, described, prompt_ids, args.repeats)),
            3: lambda: asyncio.run(jrt_figure(backend, text, args.repeats)),
            4: lambda: serve_figure(backend, checkpoint, args.threads, args.decode_tokens, args.repeats),
            5: lambda: prose_only_figure(backend, Path(workdir), steps=max(3, args.repeats)),
            6: lambda: asyncio.run(versions_figure(backend, text, args.repeats)),
        }
        for number, figure in figures.items():
            if args.only in (None, number):
                figure()
                print()
        backend.close()


if __name__ == "__main__":
    main()

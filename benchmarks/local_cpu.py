"""LocalLM against the `rwkv` package on the CPU: decode and prefill tokens per second.

    python benchmarks/local_cpu.py [--threads 2] [--decode-tokens 128] [--prefill-tokens 2048]

Both run the same random RWKV-7 checkpoint of the 0.1B shape (12 layers, 768 wide, head 64,
vocabulary 65536, FFN 3072) written as a BlinkDL .pth file, in fp32, with the same thread
count. The baseline is `rwkv` 0.8.32's RWKV_x070 with RWKV_V7_ON=1, RWKV_JIT_ON=1,
RWKV_CUDA_ON=0 and strategy "cpu fp32"; a list of tokens is its sequence mode. Runs of the
two alternate and the best of `--repeats` is kept, so that load from other processes on a
shared machine hits both alike. Targets: decode >= 1.5x, prefill >= 2x.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["RWKV_V7_ON"] = "1"
os.environ["RWKV_JIT_ON"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longyarn.recurrent_core.local_lm import LocalLM  # noqa: E402
from longyarn.training.synthetic import random_rwkv7_state_dict  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=65536)
    parser.add_argument("--skip-prefill", action="store_true")
    return parser.parse_args()


def decode_ours(lm: LocalLM, prompt: list[int], tokens: list[int]) -> tuple[float, torch.Tensor]:
    _, state = lm.forward(prompt)
    start = time.perf_counter()
    for token in tokens:
        logits, state = lm.forward([token], state)
    return time.perf_counter() - start, logits


def decode_reference(model, prompt: list[int], tokens: list[int]) -> tuple[float, torch.Tensor]:
    _, state = model.forward(prompt, None)
    start = time.perf_counter()
    for token in tokens:
        logits, state = model.forward([token], state)  # the reference returns its list, updated
    return time.perf_counter() - start, logits


def prefill_ours(lm: LocalLM, tokens: list[int]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    logits, _ = lm.forward(tokens)
    return time.perf_counter() - start, logits


def prefill_reference(model, tokens: list[int]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    logits, _ = model.forward(tokens, None)
    return time.perf_counter() - start, logits


def best_of(repeats: int, ours, reference) -> tuple[float, float, float]:
    """Alternate the two; return (best ours s, best reference s, max |logit difference|)."""
    best_ours = best_reference = float("inf")
    difference = 0.0
    for _ in range(repeats):
        seconds, logits = ours()
        best_ours = min(best_ours, seconds)
        seconds, expected = reference()
        best_reference = min(best_reference, seconds)
        difference = max(difference, float((logits - expected).abs().max()))
    return best_ours, best_reference, difference


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    random_tokens = lambda n: torch.randint(0, args.vocab_size, (n,), generator=generator).tolist()  # noqa: E731

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rwkv7-0.1b-shape.pth"
        state_dict = random_rwkv7_state_dict(12, 768, args.vocab_size, head_size=64, dim_ffn=3072, dtype=torch.bfloat16)
        torch.save(state_dict, path)
        del state_dict

        from rwkv.model import RWKV

        reference = RWKV(str(path)[: -len(".pth")], "cpu fp32")
        lm = LocalLM.load(path)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"0.1B shape (L12 D768 head 64, vocab {args.vocab_size}), fp32")

    # Warm-up: TorchScript specialises the reference's functions over its first calls.
    warm = random_tokens(8)
    for _ in range(3):
        decode_reference(reference, warm, warm[:3])
        decode_ours(lm, warm, warm[:3])

    prompt, continuation = random_tokens(args.prompt_tokens), random_tokens(args.decode_tokens)
    ours_s, reference_s, diff = best_of(
        args.repeats,
        lambda: decode_ours(lm, prompt, continuation),
        lambda: decode_reference(reference, prompt, continuation),
    )
    n = args.decode_tokens
    print(f"decode  {n} tokens after a {args.prompt_tokens}-token prompt: "
          f"ours {n / ours_s:7.1f} tok/s ({1000 * ours_s / n:.1f} ms/token), "
          f"rwkv {n / reference_s:7.1f} tok/s ({1000 * reference_s / n:.1f} ms/token), "
          f"ratio {reference_s / ours_s:.2f}x (target 1.5x), max |logit diff| {diff:.1e}")

    if not args.skip_prefill:
        tokens = random_tokens(args.prefill_tokens)
        ours_s, reference_s, diff = best_of(
            args.repeats, lambda: prefill_ours(lm, tokens), lambda: prefill_reference(reference, tokens)
        )
        n = args.prefill_tokens
        print(f"prefill {n} tokens: "
              f"ours {n / ours_s:7.1f} tok/s ({ours_s:.2f} s), "
              f"rwkv {n / reference_s:7.1f} tok/s ({reference_s:.2f} s), "
              f"ratio {reference_s / ours_s:.2f}x (target 2x), max |logit diff| {diff:.1e}")


if __name__ == "__main__":
    main()

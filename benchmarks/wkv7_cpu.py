"""CPU speed of the wkv7 forms: chunked PyTorch prefill and token-loop decoding vs the naive loop.

Run: python benchmarks/wkv7_cpu.py [--threads 2] [--tokens 2048]
Prints seconds per call and the speed-up over `wkv7_naive` measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longyarn.kernels.wkv7 import wkv7_chunk_torch, wkv7_naive, wkv7_recurrent_torch  # noqa: E402

RWKV7_MIN_LOG_DECAY = -0.6065306597126334


def rwkv7_inputs(batch: int, seq_len: int, heads: int, head_size: int) -> tuple[torch.Tensor, ...]:
    """Inputs shaped as RWKV-7 builds them (a = -kk, b = kk * iclr, log_w in (-0.6065, 0))."""
    shape = (batch, seq_len, heads, head_size)
    kk = torch.nn.functional.normalize(torch.randn(shape), dim=-1)
    log_w = RWKV7_MIN_LOG_DECAY * torch.sigmoid(2.0 * torch.randn(shape))
    return torch.randn(shape), log_w, torch.randn(shape), torch.randn(shape), -kk, kk * torch.rand(shape)


def seconds_per_call(function, repeats: int) -> float:
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--tokens", type=int, default=2048, help="prefill length (default 2048)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"wkv7 on CPU, {args.threads} threads, H={args.heads}, N={args.head_size}, float32")

    prefill = rwkv7_inputs(1, args.tokens, args.heads, args.head_size)
    naive_s = seconds_per_call(lambda: wkv7_naive(*prefill), repeats=2)
    print(f"\nprefill of {args.tokens} tokens (B=1):")
    print(f"  wkv7_naive (baseline)          {naive_s * 1e3:9.1f} ms")
    reference_out, _ = wkv7_naive(*prefill)
    for chunk_size in (16, 32, 64):
        chunk_s = seconds_per_call(lambda: wkv7_chunk_torch(*prefill, chunk_size=chunk_size), repeats=3)
        error = (wkv7_chunk_torch(*prefill, chunk_size=chunk_size)[0] - reference_out).abs().max().item()
        print(
            f"  wkv7_chunk_torch chunk={chunk_size:<3}     {chunk_s * 1e3:9.1f} ms   "
            f"{naive_s / chunk_s:5.1f}x naive   max-abs error {error:.1e}"
        )

    decode = rwkv7_inputs(1, 1, args.heads, args.head_size)
    state = torch.randn(1, args.heads, args.head_size, args.head_size)
    naive_step_s = seconds_per_call(lambda: wkv7_naive(*decode, state=state), repeats=200)
    step_s = seconds_per_call(lambda: wkv7_recurrent_torch(*decode, state=state), repeats=200)
    print("\none decoding step (B=1, T=1):")
    print(f"  wkv7_naive (baseline)          {naive_step_s * 1e6:9.1f} us")
    print(f"  wkv7_recurrent_torch           {step_s * 1e6:9.1f} us   {naive_step_s / step_s:5.1f}x naive")


if __name__ == "__main__":
    main()

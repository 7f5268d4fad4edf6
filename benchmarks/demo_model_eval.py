"""Held-out bits per byte of a saved model directory, against general-purpose compressors.

    python benchmarks/demo_model_eval.py --model recurrent_core/demo_model --data .device/data

Reads the held-out books prepared by `longyarn.training.tokenizer_training`, takes the
same evaluation slices as training did, and prints the model's bits per byte beside zstd's
(and xz's, zlib's) on the same text, with the ratio of each to the model's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch

from longyarn.recurrent_core.local_lm.checkpoint import load_checkpoint
from longyarn.training.evaluation import bits_per_byte
from longyarn.training.tokenizer_training import DEFAULT_EVAL_BYTES_PER_BOOK, compression_baselines
from longyarn.training.train import load_prepared_data
from longyarn.training.training_model import RWKV7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a longyarn model directory")
    parser.add_argument("--data", type=Path, default=Path(".device/data"))
    parser.add_argument("--eval-bytes-per-book", type=int, default=None,
                        help="defaults to the value the model was trained with")
    parser.add_argument("--ctx-len", type=int, default=None, help="defaults to the model's ctx_len")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    checkpoint = load_checkpoint(args.model)
    training = checkpoint.extra_config.get("training", {})
    eval_bytes = args.eval_bytes_per_book or training.get("config", {}).get(
        "eval_bytes_per_book", DEFAULT_EVAL_BYTES_PER_BOOK
    )
    ctx_len = args.ctx_len or checkpoint.extra_config.get("ctx_len", 512)
    data = load_prepared_data(args.data, eval_bytes)
    model = RWKV7.from_state_dict(checkpoint.state_dict).to(args.device).eval()

    started = time.perf_counter()
    heldout = bits_per_byte(model, checkpoint.tokenizer or data.tokenizer, data.eval_texts, ctx_len,
                            args.streams, args.device, contextlib.nullcontext)
    seconds = time.perf_counter() - started
    baselines = compression_baselines("".join(data.eval_texts))

    model_bpb = heldout["bits_per_byte"]
    print(f"held-out slice: {heldout['bytes']:,} bytes of {', '.join(data.meta['heldout_books'])}")
    print(f"model {args.model}: {model_bpb:.4f} bits/byte ({heldout['tokens']:,} tokens in {seconds:.1f} s "
          f"on {args.device}, {heldout['tokens'] / seconds:,.0f} tokens/s)")
    for name, value in sorted(baselines.items()):
        print(f"{name:>8}: {value:.4f} bits/byte  ({value / model_bpb:.2f}x the model's)")
    print(json.dumps({"model_bits_per_byte": round(model_bpb, 4), "baselines_bits_per_byte": baselines}))


if __name__ == "__main__":
    main()

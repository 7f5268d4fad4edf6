"""LocalLM against llama.cpp on a CPU, on the same RWKV-7 weights: decode and prefill tok/s.

    python benchmarks/cpu_peers.py --llama-python /tmp/llama_venv/bin/python [--shape 0.1b|0.4b]
        [--threads 2] [--rounds 6] [--decode-tokens 128] [--prefill-tokens 2048]
        [--checkpoint FILE.pth] [--demo-corpus /work/shared/corpus/gutenberg] [--cold-compile]

What it does, in order:
1. Takes a BlinkDL RWKV-7 checkpoint (`--checkpoint`, or random weights of the 0.1B shape,
   12 x 768, vocabulary 65,536, rounded to bf16 as BlinkDL's releases are; 0.4B: 24 x 1024).
2. Writes it as GGUF files at F32, F16 and Q8_0 with the `gguf` package, following llama.cpp's
   RWKV-7 conversion rules (convert_hf_to_gguf.py, `Rwkv7Model`; our own code): names
   `blk.N.time_mix_*` / `channel_mix_*`, the six token-shift lerps stacked into
   `time_mix_lerp_fused` (order r, w, k, v, a, g), the LoRA matrices transposed, `r_k`
   flattened, layer 0's missing value-residual LoRA filled with copies of its `a` LoRA, and
   the per-tensor types of its `prepare_tensors`: 1-D tensors, norms, `time_mix_w1/w2` and
   `time_mix_lerp_fused` stay F32, every other matrix takes the file type.
3. Loads each in llama-cpp-python, in a separate Python (`--llama-python`, a virtualenv that
   has `llama_cpp` and `gguf`): it never shares our process or virtualenv. It checks that
   llama.cpp's F32 logits match ours at fp32 before timing anything.
4. Times ours (fp32, fp16, int8 weights; see longyarn/recurrent_core/local_lm/precision.py)
   and theirs (F32, F16, Q8_0) on the same threads, alternating within each round: decode of
   `--decode-tokens` after a 16-token prompt, and a `--prefill-tokens` prefill. It prints the
   medians over rounds, the within-round ratios (ours / theirs at the matching precision),
   the fraction of the memory bandwidth each decode reaches (weight bytes read per token x
   tok/s, over the read + write traffic of a 1 GiB copy measured in the same run), the first
   token's latency (which includes compiling our decode step; `--cold-compile` empties the
   compile cache first), the load average, and the quality of each precision: the largest
   logit difference from fp32 over 128 decoded tokens and how often the greedy pick agrees.
   In the same rounds it decodes fp16 and int8 once more with the compiled PyTorch step instead of
   the one-call C++ step (`LocalLM.native_decode = False`), and prints how much the call gains.
5. With `--demo-corpus`, the bundled demo model's held-out bits per byte at each precision.

llama.cpp runs in `--llama-python`, else in this Python if it has llama_cpp and gguf, else in
$LLAMA_PYTHON; with none of them it says so and prints ours alone.
Its last line is exactly:
    decode_vs_llamacpp f16=X.XX q8=Y.YY prefill_vs_llamacpp f16=Z.ZZ
(ours / theirs, medians of the within-round ratios; n/a without llama.cpp).

Building llama-cpp-python for this (CPU only, from PyPI; about 10 minutes on 2 cores):

    python -m venv /tmp/llama_venv
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \\
      -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \\
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \\
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \\
      /tmp/llama_venv/bin/pip install llama-cpp-python==0.3.36 gguf==0.19.0

AMX stays off: with GGML_NATIVE=ON, llama.cpp uses AMX wherever the CPU reports it, and in a
sandbox that does not grant AMX tile state (as on our CI machines) it segfaults in
`ggml_backend_amx_mul_mat`. On a CPU without AVX-512, drop the AVX512 flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longyarn.recurrent_core.local_lm import LocalLM  # noqa: E402
from longyarn.recurrent_core.local_lm.checkpoint import load_checkpoint  # noqa: E402
from longyarn.training.synthetic import random_rwkv7_state_dict  # noqa: E402

SHAPES = {"0.1b": (12, 768), "0.4b": (24, 1024)}
OURS = ("fp32", "fp16", "int8")
THEIRS = ("F32", "F16", "Q8_0")
MATCHING = dict(zip(OURS, THEIRS))
# Our named baseline for the one-call decode step (native_step.py): the same weights decoded by
# the compiled PyTorch step, timed in the same rounds.
COMPILED_BASELINE = ("fp16", "int8")
LAYER_NORM_EPS = 1e-5
# llama.cpp's converter keeps these F32 whatever the file type (besides 1-D tensors and norms).
ALWAYS_F32 = ("time_mix_w1", "time_mix_w2", "time_mix_lerp_fused")
F32_LOGITS_TOLERANCE = 1e-3


# ---- GGUF, by llama.cpp's RWKV-7 conversion rules ---------------------------------------------

def gguf_tensors(state_dict: dict[str, torch.Tensor], n_layer: int) -> dict[str, np.ndarray]:
    """BlinkDL tensors under llama.cpp's RWKV-7 names and layouts, as fp32 arrays."""

    def array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().float().contiguous().numpy()

    out = {
        "token_embd.weight": array(state_dict["emb.weight"]),
        "token_embd_norm.weight": array(state_dict["blocks.0.ln0.weight"].reshape(-1)),
        "token_embd_norm.bias": array(state_dict["blocks.0.ln0.bias"].reshape(-1)),
        "output_norm.weight": array(state_dict["ln_out.weight"].reshape(-1)),
        "output_norm.bias": array(state_dict["ln_out.bias"].reshape(-1)),
        "output.weight": array(state_dict["head.weight"]),
    }
    for i in range(n_layer):
        att, ffn, blk = f"blocks.{i}.att.", f"blocks.{i}.ffn.", f"blk.{i}."
        for ours, theirs in (("ln1", "attn_norm"), ("ln2", "attn_norm_2")):
            for part in ("weight", "bias"):
                out[f"{blk}{theirs}.{part}"] = array(state_dict[f"blocks.{i}.{ours}.{part}"].reshape(-1))
        lerps = [state_dict[att + f"x_{name}"].reshape(1, 1, -1) for name in "rwkvag"]
        out[blk + "time_mix_lerp_fused.weight"] = array(torch.stack(lerps))  # (6, 1, 1, C)
        value_residual = i > 0  # layer 0's v0/v1/v2 are unused; llama.cpp wants copies of a's
        for name in ("w", "a", "v", "g"):
            source = name if name != "v" or value_residual else "a"
            if name != "g":
                out[f"{blk}time_mix_{name}0.weight"] = array(state_dict[att + f"{source}0"].reshape(-1))
            out[f"{blk}time_mix_{name}1.weight"] = array(state_dict[att + f"{source}1"].t())
            out[f"{blk}time_mix_{name}2.weight"] = array(state_dict[att + f"{source}2"].t())
        out[blk + "time_mix_k_k.weight"] = array(state_dict[att + "k_k"].reshape(-1))
        out[blk + "time_mix_k_a.weight"] = array(state_dict[att + "k_a"].reshape(-1))
        out[blk + "time_mix_r_k.weight"] = array(state_dict[att + "r_k"].reshape(-1))
        for name in ("receptance", "key", "value", "output"):
            out[f"{blk}time_mix_{name}.weight"] = array(state_dict[att + f"{name}.weight"])
        out[blk + "time_mix_ln.weight"] = array(state_dict[att + "ln_x.weight"].reshape(-1))
        out[blk + "time_mix_ln.bias"] = array(state_dict[att + "ln_x.bias"].reshape(-1))
        out[blk + "channel_mix_lerp_k.weight"] = array(state_dict[ffn + "x_k"].reshape(-1))
        out[blk + "channel_mix_key.weight"] = array(state_dict[ffn + "key.weight"])
        out[blk + "channel_mix_value.weight"] = array(state_dict[ffn + "value.weight"])
    return out


def gguf_hparams(config) -> dict[str, int]:
    return {
        "n_layer": config.n_layer, "n_embd": config.n_embd, "head_size": config.head_size,
        "vocab_size": config.vocab_size, "dim_ffn": config.dim_ffn, "lora_w": config.lora_w,
        "lora_a": config.lora_a, "lora_v": config.lora_v or config.lora_a, "lora_g": config.lora_g,
    }


# The worker runs in the llama.cpp virtualenv: numpy, gguf and llama_cpp only, no torch.
WORKER = r'''
import json, sys, time
import numpy as np

def reply(**fields):
    sys.stdout.write("@@" + json.dumps(fields) + "\n"); sys.stdout.flush()

ALWAYS_F32 = %(always_f32)r

def write_gguf(request):
    import gguf
    h = request["hparams"]
    tensors = np.load(request["npz"])
    qtype = getattr(gguf.GGMLQuantizationType, request["type"])
    ftype = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
             "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[request["type"]]
    writer = gguf.GGUFWriter(request["path"], "rwkv7")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_context_length(1048576)
    writer.add_embedding_length(h["n_embd"])
    writer.add_block_count(h["n_layer"])
    writer.add_layer_norm_eps(request["layer_norm_eps"])
    writer.add_wkv_head_size(h["head_size"])
    writer.add_decay_lora_rank(h["lora_w"])
    writer.add_iclr_lora_rank(h["lora_a"])
    writer.add_value_residual_mix_lora_rank(h["lora_v"])
    writer.add_gate_lora_rank(h["lora_g"])
    writer.add_feed_forward_length(h["dim_ffn"])
    writer.add_file_type(ftype)
    writer.add_head_count(0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # Token ids go in directly; the vocabulary only has to be an RWKV one of the right size.
    writer.add_tokenizer_model("rwkv")
    writer.add_token_list([b"<s>"] + [("t%%d" %% i).encode() for i in range(1, h["vocab_size"])])
    writer.add_token_types([gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (h["vocab_size"] - 1))
    read_bytes = 0
    for name in tensors.files:
        data = tensors[name]
        keep_f32 = data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") \
            or any(key in name for key in ALWAYS_F32)
        tensor_type = gguf.GGMLQuantizationType.F32 if keep_f32 else qtype
        try:
            data = gguf.quants.quantize(data, tensor_type)
        except gguf.QuantError:
            tensor_type = gguf.GGMLQuantizationType.F16  # as the converter falls back
            data = gguf.quants.quantize(data, tensor_type)
        writer.add_tensor(name, data, raw_dtype=tensor_type)
        if name != "token_embd.weight":  # decoding reads one row of the embedding
            read_bytes += data.nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reply(read_bytes=read_bytes)

def main():
    import llama_cpp
    models = {}
    reply(ready=True, version=llama_cpp.__version__)
    for line in sys.stdin:
        request = json.loads(line)
        command = request["cmd"]
        if command == "write":
            write_gguf(request); continue
        if command == "load":
            models[request["name"]] = llama_cpp.Llama(
                model_path=request["path"], n_ctx=request["n_ctx"], n_batch=request["n_ctx"],
                n_threads=request["threads"], n_threads_batch=request["threads"], verbose=False)
            reply(loaded=True); continue
        llm = models[request["name"]]
        llm.reset()
        if command == "logits":
            for piece in request["pieces"]:
                llm.eval(piece)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
            np.save(request["out"], logits.copy()); reply(done=True)
        elif command == "decode":
            llm.eval(request["prompt"])
            start = time.perf_counter()
            for token in request["tokens"]:
                llm.eval([token])
            reply(seconds=time.perf_counter() - start)
        elif command == "prefill":
            start = time.perf_counter()
            llm.eval(request["tokens"])
            reply(seconds=time.perf_counter() - start)

main()
''' % {"always_f32": ALWAYS_F32}


class LlamaWorker:
    """llama-cpp-python in its own Python, driven by JSON lines."""

    def __init__(self, python: str) -> None:
        self.process = subprocess.Popen(
            [python, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.version = self._read()["version"]

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"the llama.cpp worker stopped (exit code {self.process.wait()})")

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def find_llama_python(given: str | None) -> tuple[str | None, str | None]:
    """(the Python to run llama.cpp in, why it cannot be run or None): `given`, else this
    very Python where it has llama_cpp and gguf, else $LLAMA_PYTHON."""
    if given:
        return given, llama_python_usable(given)
    import importlib.util

    if importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("gguf"):
        return sys.executable, None
    if os.environ.get("LLAMA_PYTHON"):
        return os.environ["LLAMA_PYTHON"], llama_python_usable(os.environ["LLAMA_PYTHON"])
    return None, (f"this Python ({sys.executable}) has no llama_cpp, and neither --llama-python "
                  "nor LLAMA_PYTHON names one that has (see this file's docstring to build it)")


def llama_python_usable(python: str) -> str | None:
    """Why `python` cannot run llama.cpp here, or None if it can."""
    try:
        probe = subprocess.run([python, "-c", "import llama_cpp, gguf"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{python} could not be run ({error})"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"{python} lacks llama_cpp or gguf ({last})"
    return None


# ---- timing ---------------------------------------------------------------------------------

def memory_copy_gbps(repeats: int = 5) -> float:
    """Read + write traffic of a 1 GiB copy, best of `repeats`, in GB/s."""
    source = torch.ones(2**28)
    target = torch.empty_like(source)
    target.copy_(source)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best / 1e9


def decode_ours(lm: LocalLM, prompt: list[int], tokens: list[int]) -> float:
    _, state = lm.forward(prompt)
    start = time.perf_counter()
    for token in tokens:
        _, state = lm.forward([token], state, in_place=True)  # as LocalRuntime decodes
    return time.perf_counter() - start


def prefill_ours(lm: LocalLM, tokens: list[int]) -> float:
    start = time.perf_counter()
    lm.forward(tokens)
    return time.perf_counter() - start


@dataclass
class Figures:
    decode_tps: dict[str, list[float]] = field(default_factory=dict)
    prefill_tps: dict[str, list[float]] = field(default_factory=dict)
    decode_ratio: dict[str, list[float]] = field(default_factory=dict)
    prefill_ratio: dict[str, list[float]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    compiled_tps: dict[str, list[float]] = field(default_factory=dict)
    native_gain: dict[str, list[float]] = field(default_factory=dict)


def quality(models: dict[str, LocalLM], prompt: list[int], steps: int) -> dict[str, tuple[float, float]]:
    """Per precision: (max |logit - fp32 logit| over `steps` greedy tokens, greedy agreement),
    each fed fp32's greedy tokens (so one early disagreement does not decide the rest)."""
    reference = models["fp32"]
    logits, state = reference.forward(prompt)
    fed, expected = [], []
    for _ in range(steps):
        token = int(logits.argmax())
        fed.append(token)
        expected.append(logits)
        logits, state = reference.forward([token], state)
    result = {}
    for name, lm in models.items():
        if name == "fp32":
            continue
        logits, state = lm.forward(prompt)
        worst, agree = 0.0, 0
        for token, reference_logits in zip(fed, expected):
            worst = max(worst, float((logits - reference_logits).abs().max()))
            agree += int(int(logits.argmax()) == int(reference_logits.argmax()))
            logits, state = lm.forward([token], state)
        result[name] = (worst, agree / steps)
    return result


def demo_bits_per_byte(corpus: Path, precisions: tuple[str, ...], eval_bytes: int) -> dict[str, float]:
    """The demo model's held-out bits per byte with its matrices stored at each precision."""
    from longyarn.recurrent_core.local_lm.precision import store_matrix
    from longyarn.recurrent_core.local_lm.runtime import DEMO_MODEL_DIR
    from longyarn.training.evaluation import bits_per_byte
    from longyarn.training.tokenizer_training import HELDOUT_BOOKS, normalise_book
    from longyarn.training.train import split_heldout_text
    from longyarn.training.training_model import RWKV7
    import contextlib

    checkpoint = load_checkpoint(DEMO_MODEL_DIR)
    texts = [split_heldout_text(normalise_book((corpus / name).read_text(encoding="utf-8")), eval_bytes)[0]
             for name in HELDOUT_BOOKS]
    ctx_len = checkpoint.extra_config.get("ctx_len", 256)
    projected = ("receptance.weight", "key.weight", "value.weight", "output.weight", "head.weight")
    results = {}
    for precision in precisions:
        weights = {
            key: (store_matrix(value, precision).dequantized() if key.endswith(projected) else value.float())
            for key, value in checkpoint.state_dict.items()
        }
        model = RWKV7.from_state_dict(weights).eval()
        results[precision] = bits_per_byte(model, checkpoint.tokenizer, texts, ctx_len, 8, "cpu",
                                           contextlib.nullcontext)["bits_per_byte"]
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-python", default=None,
                        help="a Python with llama_cpp and gguf (default: this one if it has them, else $LLAMA_PYTHON)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.1b")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a BlinkDL RWKV-7 .pth instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--quality-tokens", type=int, default=128)
    parser.add_argument("--demo-corpus", type=Path, default=None, help="Gutenberg books for the demo model's bits/byte")
    parser.add_argument("--demo-eval-bytes", type=int, default=65536)
    parser.add_argument("--cold-compile", action="store_true", help="empty the compile cache first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.cold_compile:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor")
        if args.checkpoint:
            path, label = args.checkpoint, str(args.checkpoint)
        else:
            n_layer, n_embd = SHAPES[args.shape]
            path, label = tmp / "rwkv7.pth", f"random {args.shape} shape (L{n_layer} D{n_embd}, vocab 65536), bf16"
            torch.save(random_rwkv7_state_dict(n_layer, n_embd, 65536, head_size=64, dtype=torch.bfloat16), path)
        loaded = load_checkpoint(path)
        config = loaded.config
        generator = torch.Generator().manual_seed(0)
        tokens = lambda n: torch.randint(0, config.vocab_size, (n,), generator=generator).tolist()  # noqa: E731
        prompt, continuation, prefill = tokens(args.prompt_tokens), tokens(args.decode_tokens), tokens(args.prefill_tokens)

        cpu = torch.backends.cpu.get_cpu_capability()
        print(f"{label}; torch {torch.__version__} ({cpu}), {args.threads} threads, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

        ours: dict[str, LocalLM] = {}
        for name in OURS:
            lm = LocalLM(loaded.state_dict, config, torch.device("cpu"), torch.float32, weights=name)
            start = time.perf_counter()
            _, state = lm.forward(prompt)
            lm.forward([continuation[0]], state)
            first = time.perf_counter() - start
            print(f"ours {name}: {lm.weight_bytes() / 1e6:.0f} MB of weights read per token; first token "
                  f"after loading (prompt + compile + one step) {first:.1f} s"
                  + (f"; compiling failed: {lm.compile_decode_error}" if lm.compile_decode_error else ""))
            ours[name] = lm
        compiled: dict[str, LocalLM] = {}
        for name in COMPILED_BASELINE:
            lm = LocalLM(loaded.state_dict, config, torch.device("cpu"), torch.float32, weights=name)
            lm.native_decode = False
            decode_ours(lm, prompt, continuation[:2])  # compiles
            compiled[name] = lm
        print("one sequence decodes as one C++ call: "
              + ", ".join(f"{name} {'yes' if lm.decodes_natively else 'no'}" for name, lm in ours.items()))

        llama_python, why_not = find_llama_python(args.llama_python)
        worker = None
        theirs_bytes: dict[str, int] = {}
        if why_not:
            print(f"llama.cpp is not measured: {why_not}. Printing ours alone.")
        else:
            worker = LlamaWorker(llama_python)
            np.savez(tmp / "tensors.npz", **gguf_tensors(loaded.state_dict, config.n_layer))
            for name in THEIRS:
                written = worker.ask(cmd="write", npz=str(tmp / "tensors.npz"), path=str(tmp / f"{name}.gguf"),
                                     type=name, hparams=gguf_hparams(config), layer_norm_eps=LAYER_NORM_EPS)
                theirs_bytes[name] = written["read_bytes"]
                worker.ask(cmd="load", name=name, path=str(tmp / f"{name}.gguf"), threads=args.threads,
                           n_ctx=max(4096, args.prefill_tokens + 64))
            (tmp / "tensors.npz").unlink()
            worker.ask(cmd="logits", name="F32", pieces=[prompt, continuation[:3]], out=str(tmp / "logits.npy"))
            expected, state = ours["fp32"].forward(prompt)
            expected, state = ours["fp32"].forward(continuation[:3], state)
            difference = float(np.abs(np.load(tmp / "logits.npy") - expected.numpy()).max())
            print(f"llama-cpp-python {worker.version}: F32 logits vs ours at fp32, max |difference| "
                  f"{difference:.2e} (must be under {F32_LOGITS_TOLERANCE:g})")
            if not difference < F32_LOGITS_TOLERANCE:
                print("The GGUF file is not the same model as ours; timings would compare different models.")
                worker.close()
                sys.exit(1)

        bandwidth = memory_copy_gbps()
        print(f"memory: a 1 GiB copy moves {bandwidth:.1f} GB/s (read + write)")

        figures = Figures()
        for round_index in range(args.rounds):
            figures.load.append(os.getloadavg()[0])
            for name in OURS:
                pairs = [(name, "ours", ours[name])]
                if worker:
                    pairs.append((MATCHING[name], "theirs", None))
                if round_index % 2:
                    pairs.reverse()  # alternate who goes first
                decode, prefill_tps = {}, {}
                for key, side, lm in pairs:
                    if side == "ours":
                        seconds = decode_ours(lm, prompt, continuation)
                        prefill_seconds = prefill_ours(lm, prefill)
                    else:
                        seconds = worker.ask(cmd="decode", name=key, prompt=prompt, tokens=continuation)["seconds"]
                        prefill_seconds = worker.ask(cmd="prefill", name=key, tokens=prefill)["seconds"]
                    decode[key] = len(continuation) / seconds
                    prefill_tps[key] = len(prefill) / prefill_seconds
                    figures.decode_tps.setdefault(key, []).append(decode[key])
                    figures.prefill_tps.setdefault(key, []).append(prefill_tps[key])
                if name in compiled:
                    baseline = len(continuation) / decode_ours(compiled[name], prompt, continuation)
                    figures.compiled_tps.setdefault(name, []).append(baseline)
                    figures.native_gain.setdefault(name, []).append(decode[name] / baseline)
                if worker:
                    theirs = MATCHING[name]
                    figures.decode_ratio.setdefault(name, []).append(decode[name] / decode[theirs])
                    figures.prefill_ratio.setdefault(name, []).append(prefill_tps[name] / prefill_tps[theirs])
            print(f"round {round_index + 1}: load {figures.load[-1]:.2f}; decode tok/s "
                  + ", ".join(f"{key} {values[-1]:.1f}" for key, values in figures.decode_tps.items()))
        if worker:
            worker.close()

        print(f"\nmedian of {args.rounds} rounds (load average {min(figures.load):.2f} to {max(figures.load):.2f}); "
              f"decode: {args.decode_tokens} tokens after {args.prompt_tokens}; prefill: {args.prefill_tokens} tokens")
        print(f"{'system':<22}{'decode tok/s':>22}{'of bandwidth':>14}{'prefill tok/s':>16}{'decode/theirs':>16}{'prefill/theirs':>16}")
        for name in OURS + (THEIRS if theirs_bytes else ()):
            weight_bytes = ours[name].weight_bytes() if name in ours else theirs_bytes[name]
            decode_values = figures.decode_tps[name]
            fraction = median(decode_values) * weight_bytes / 1e9 / bandwidth
            system = f"longyarn {name}" if name in ours else f"llama.cpp {name}"
            ratios = ""
            if name in figures.decode_ratio:
                ratios = (f"{min(figures.decode_ratio[name]):.2f}-{max(figures.decode_ratio[name]):.2f}x".rjust(16)
                          + f"{min(figures.prefill_ratio[name]):.2f}-{max(figures.prefill_ratio[name]):.2f}x".rjust(16))
            print(f"{system:<22}{median(decode_values):>10.1f} (best {max(decode_values):6.1f}){fraction:>14.2f}"
                  f"{median(figures.prefill_tps[name]):>16.1f}{ratios}")

        print("\ndecode by the compiled PyTorch step instead of one C++ call (the baseline), same rounds: "
              + "; ".join(f"{name} {median(figures.compiled_tps[name]):.1f} tok/s, the call "
                          f"{median(figures.native_gain[name]):.2f}x ({min(figures.native_gain[name]):.2f}-"
                          f"{max(figures.native_gain[name]):.2f}x)" for name in COMPILED_BASELINE))
        print(f"\nquality against fp32 over {args.quality_tokens} greedy tokens (fed fp32's picks):")
        for name, (worst, agree) in quality(ours, prompt, args.quality_tokens).items():
            print(f"  {name}: max |logit difference| {worst:.2e}, greedy agreement {agree:.1%}")
        if args.demo_corpus:
            bpb = demo_bits_per_byte(args.demo_corpus, OURS, args.demo_eval_bytes)
            print("demo model, held-out bits per byte: " + ", ".join(f"{k} {v:.4f}" for k, v in bpb.items()))

    def summary(ratios: dict[str, list[float]], name: str) -> str:
        return f"{median(ratios[name]):.2f}" if ratios.get(name) else "n/a"

    print(f"decode_vs_llamacpp f16={summary(figures.decode_ratio, 'fp16')} q8={summary(figures.decode_ratio, 'int8')} "
          f"prefill_vs_llamacpp f16={summary(figures.prefill_ratio, 'fp16')}")


if __name__ == "__main__":
    main()

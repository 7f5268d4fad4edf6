"""GPU check of the wkv7 kernels: correctness, batch-1 decoding, chunked prefill, and fla.

Run on a CUDA machine (finishes in a few minutes on an H100):
    python benchmarks/kernels_gpu.py
Smoke test of the same code on a CPU, Triton kernels in the interpreter, tiny shapes:
    python benchmarks/kernels_gpu.py --device cpu --tiny

Sections, each of which prints its own failure and lets the next one run:
1. correctness: every wkv7 form against `wkv7_naive` in float32 on the same device, and the
   fused decode step against the PyTorch one;
2. memory bandwidth: a device-to-device copy, the yardstick for decoding;
3. decoding: a whole RWKV-7 forward for one token at batch 1 in bf16 from random weights,
   replayed as a CUDA graph, as tokens/s and as a fraction of the bound "bytes the model must
   read per token / copy bandwidth", in two variants measured side by side:
   - "PyTorch ops": our Triton recurrence, PyTorch for everything else;
   - "fused kernels": `longyarn.kernels.rwkv7_fused` around the recurrence (token shift, LoRA
     activations, the whole time mix from the LoRAs to the output projection, relu^2) and
     batched products (r/k/v in one bmm, the four LoRAs in two), 11 kernels a layer;
4. the app's decoding: `LocalLM.forward([token], state)` itself, as `longyarn write --backend
   local` calls it token by token (checks, state copies and all), eager and replayed as a CUDA
   graph, against the same bound;
5. prefill: the Triton chunk kernel against `wkv7_chunk_torch` and the naive loop;
6. flash-linear-attention's rwkv7 kernels, if `fla` is importable;
7. decoding again with torch.compile: on the PyTorch ops, and on the glue left between the
   fused kernels (CUDA only; compiling takes a minute or two).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RWKV7_MIN_LOG_DECAY = -0.6065306597126334
DECODE_TARGET_FRACTION = 0.5
PREFILL_TARGET_VS_TORCH = 10.0
TARGET_VS_FLA = 0.8


# ----------------------------------------------------------------------------------- helpers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a smoke test, not a measurement")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile decoding variant")
    parser.add_argument(
        "--compile-mode", default="default",
        help="torch.compile mode for section 7, e.g. max-autotune-no-cudagraphs (slower to compile)",
    )
    parser.add_argument(
        "--sections", default="1,2,3,4,5,6,7", help="comma-separated section numbers to run (default: all)"
    )
    return parser.parse_args()


def run_section(title: str, body: Callable[[], None]) -> bool:
    """Run one section; print its failure and carry on, so one broken part hides nothing else."""
    print(f"\n=== {title} ===", flush=True)
    try:
        body()
        return True
    except Exception:  # noqa: BLE001 - the point is to report any failure and continue
        print(f"SECTION FAILED: {title}")
        traceback.print_exc(file=sys.stdout)
        return False


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(function: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Mean wall time of `function` over `repeats` calls, after `warmup` calls, device synchronised."""
    for _ in range(warmup):
        function()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def rwkv7_inputs(
    batch: int, seq_len: int, heads: int, head_size: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, ...]:
    """(r, log_w, k, v, a, b) as RWKV-7 builds them: a = -kk, b = kk * iclr, log_w in (-0.6065, 0)."""
    shape = (batch, seq_len, heads, head_size)

    def normal() -> torch.Tensor:
        return torch.randn(shape, device=device)

    kk = F.normalize(normal(), dim=-1)
    log_w = RWKV7_MIN_LOG_DECAY * torch.sigmoid(2.0 * normal())
    tensors = (normal(), log_w, normal(), normal(), -kk, kk * torch.rand(shape, device=device))
    return tuple(x.to(dtype) for x in tensors)


def max_abs_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x.float() - y.float()).abs().max().item()


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


# ------------------------------------------------------------------------------ 1. correctness


def check_correctness(device: torch.device, tiny: bool) -> None:
    from longyarn.kernels.wkv7 import wkv7_chunk, wkv7_chunk_torch, wkv7_fused_recurrent, wkv7_naive

    shapes = [(1, 40, 2, 16)] if tiny else [(2, 1000, 12, 64), (1, 1000, 32, 64)]
    forms: dict[str, Callable] = {
        "wkv7_chunk_torch": wkv7_chunk_torch,
        "wkv7_fused_recurrent": wkv7_fused_recurrent,
        "wkv7_chunk chunk=16": lambda *x, state: wkv7_chunk(*x, state=state, chunk_size=16),
        "wkv7_chunk chunk=32": lambda *x, state: wkv7_chunk(*x, state=state, chunk_size=32),
        "wkv7_chunk chunk=64": lambda *x, state: wkv7_chunk(*x, state=state, chunk_size=64),
    }
    print("max-abs error against wkv7_naive (float32 on this device), with a random initial state.")
    print("float32 passes under 1e-4; bf16 is compared with the float32 reference on the same")
    print("bf16-rounded inputs and passes under 2e-2 of the output's largest magnitude.")
    for batch, seq_len, heads, head_size in shapes:
        torch.manual_seed(0)
        inputs = rwkv7_inputs(batch, seq_len, heads, head_size, device)
        state = torch.randn(batch, heads, head_size, head_size, device=device)
        expected_out, expected_state = wkv7_naive(*inputs, state=state)
        bf16_inputs = tuple(x.bfloat16() for x in inputs)
        expected_bf16_out, _ = wkv7_naive(*(x.float() for x in bf16_inputs), state=state)
        bf16_scale = expected_bf16_out.abs().max().item()
        print(f"\nB={batch} T={seq_len} H={heads} N={head_size}   (output scale {expected_out.abs().max().item():.1f})")
        for name, form in forms.items():
            out, final_state = form(*inputs, state=state)
            error = max(max_abs_error(out, expected_out), max_abs_error(final_state, expected_state))
            scale = expected_out.abs().max().item()
            line = f"  {name:<22} fp32 {error:9.2e} ({error / scale:7.1e} of scale) {verdict(error < 1e-4)}"
            if name != "wkv7_chunk_torch":
                bf16_out, _ = form(*bf16_inputs, state=state)
                relative = max_abs_error(bf16_out, expected_bf16_out) / bf16_scale
                line += f"   bf16 {relative:9.2e} of scale {verdict(relative < 2e-2)}"
            print(line)


# ------------------------------------------------------------------------- 2. memory bandwidth


def measure_copy_bandwidth(device: torch.device, tiny: bool) -> float:
    """Bytes per second moved by a device-to-device copy, counting bytes read and written."""
    size = (64 if tiny else 1024) * 2**20
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = seconds_per_call(lambda: target.copy_(source), device, repeats=5 if tiny else 20, warmup=2)
    return 2 * size / seconds


def report_bandwidth(device: torch.device, tiny: bool, results: dict) -> None:
    bandwidth = measure_copy_bandwidth(device, tiny)
    results["bandwidth"] = bandwidth
    print(f"device-to-device copy: {bandwidth / 1e12:.2f} TB/s (bytes read + bytes written, per second)")


# ---------------------------------------------------------------------------------- 3. decoding


@dataclass(frozen=True)
class RWKV7Shape:
    name: str
    layers: int
    d_model: int
    ffn: int
    vocab: int
    head_size: int
    decay_lora: int
    iclr_lora: int
    value_lora: int
    gate_lora: int


RWKV7_0_1B = RWKV7Shape("RWKV-7 0.1B (L12 D768)", 12, 768, 3072, 65536, 64, 64, 64, 32, 128)
RWKV7_1_5B = RWKV7Shape("RWKV-7 1.5B (L24 D2048)", 24, 2048, 8192, 65536, 64, 96, 96, 64, 256)
RWKV7_TINY = RWKV7Shape("tiny (L2 D64)", 2, 64, 128, 256, 16, 16, 16, 16, 16)


def time_mix_inputs(x, shift, layer, heads: int, head_size: int, is_first_layer: bool, value_first):
    """RWKV-7 time mixing up to the recurrence: returns the wkv7 inputs and what comes after."""
    xn = F.layer_norm(x, x.shape[-1:], layer["ln1_weight"], layer["ln1_bias"])
    # Token shift + six lerps at once; rows: r, k, v, w, a, g.
    mixed = torch.addcmul(xn, shift - xn, layer["shift_mix"])  # (6, 1, D)
    shift.copy_(xn)
    r, k, v = torch.bmm(mixed[:3], layer["rkv_weight"]).unbind(0)
    # Four low-rank projections at once, from rows v, w, a, g, zero-padded to one rank.
    hidden = torch.bmm(mixed[2:], layer["lora_down"])
    hidden = torch.cat([hidden[:1], torch.tanh(hidden[1:2]), hidden[2:3], torch.sigmoid(hidden[3:])])
    lora_v, lora_w, lora_a, gate = torch.bmm(hidden, layer["lora_up"]).unbind(0)
    log_w = RWKV7_MIN_LOG_DECAY * torch.sigmoid((layer["decay_bias"] + lora_w).float())
    iclr = torch.sigmoid(layer["iclr_bias"] + lora_a)
    kk = F.normalize((k * layer["key_norm_scale"]).view(-1, heads, head_size), dim=-1).view_as(k)
    k = k * (1 + (iclr - 1) * layer["key_iclr_mix"])
    if is_first_layer:
        value_first = v
    else:
        v = torch.lerp(v, value_first, torch.sigmoid(layer["value_bias"] + lora_v))
    return r, log_w, k, v, -kk, kk * iclr, gate, value_first


def time_mix_output_and_channel_mix(x, o, r, k, v, gate, shift, layer, heads: int, head_size: int):
    """RWKV-7 after the recurrence: group norm, the r.k bonus, gate, output, then channel mixing."""
    o = F.group_norm(o.view(1, -1), heads, layer["group_norm_weight"], layer["group_norm_bias"], eps=64e-5)
    bonus = (r * k * layer["bonus"]).view(1, heads, head_size).sum(-1, keepdim=True) * v.view(1, heads, head_size)
    x = x + ((o + bonus.view(1, -1)) * gate) @ layer["output_weight"]
    xn = F.layer_norm(x, x.shape[-1:], layer["ln2_weight"], layer["ln2_bias"])
    key = torch.addcmul(xn, shift - xn, layer["ffn_shift_mix"])
    shift.copy_(xn)
    return x + torch.relu(key @ layer["ffn_key"]).square() @ layer["ffn_value"]


def lora_products(mixed_vwag: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The four LoRAs (rows v, w, a, g) as two batched products, in PyTorch (for torch.compile)."""
    lora_v, lora_w, lora_a, lora_g = torch.bmm(mixed_vwag, down).unbind(0)
    return torch.bmm(torch.stack([lora_v, torch.tanh(lora_w), lora_a, torch.sigmoid(lora_g)]), up)


def channel_mix_products(shifted: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """relu(x @ key)^2 @ value in PyTorch (for torch.compile)."""
    return torch.relu(shifted @ key).square() @ value


def bytes_read_per_token(s: RWKV7Shape, dtype: torch.dtype) -> int:
    """Bytes one token must move at batch 1: each weight once, the state read and written."""
    element, d = torch.finfo(dtype).bits // 8, s.d_model
    # ln1, ln2 (4), the token-shift mixes (6 + 1), w0, a0, k_k, k_a, r_k, ln_x (7)
    vectors_per_layer = 18
    weights = s.layers * (4 * d * d + 2 * d * s.ffn + 2 * d * (s.decay_lora + s.iclr_lora + s.gate_lora))
    weights += s.layers * vectors_per_layer * d + (s.layers - 1) * (2 * d * s.value_lora + d)
    weights += d * s.vocab + 2 * d + d
    wkv_state = s.layers * d * s.head_size * 4  # float32, (heads, N, N) a layer
    shift_state = 2 * s.layers * d * element
    return weights * element + 2 * (wkv_state + shift_state)


class RandomRWKV7Decoder:
    """A whole RWKV-7 for one token at batch 1, from random weights: what decoding costs.

    `step` runs PyTorch ops around our recurrence; `step_fused` runs the fused kernels and
    batched products on the same weights and state, so the two can be timed side by side.
    """

    def __init__(
        self, shape: RWKV7Shape, device: torch.device, dtype: torch.dtype, compiled: bool, compile_mode: str = "default"
    ):
        from longyarn.kernels.rwkv7_fused import stack_time_mix_vectors

        self.shape = shape
        self.dtype = dtype
        self.heads = shape.d_model // shape.head_size
        d, rank = shape.d_model, max(shape.decay_lora, shape.iclr_lora, shape.value_lora, shape.gate_lora)

        def weight(*size: int, scale: float) -> torch.Tensor:
            return (torch.randn(*size, device=device) * scale).to(dtype)

        def lora_down() -> torch.Tensor:
            down = torch.zeros(4, d, rank, device=device)
            for row, width in enumerate((shape.value_lora, shape.decay_lora, shape.iclr_lora, shape.gate_lora)):
                down[row, :, :width] = torch.randn(d, width, device=device) / math.sqrt(d)
            return down.to(dtype)

        ones, zeros = torch.ones(d, device=device, dtype=dtype), torch.zeros(d, device=device, dtype=dtype)
        self.embedding = weight(shape.vocab, d, scale=1.0)
        self.layers = [
            {
                "ln1_weight": ones, "ln1_bias": zeros, "ln2_weight": ones, "ln2_bias": zeros,
                "shift_mix": torch.rand(6, 1, d, device=device).to(dtype),
                "rkv_weight": weight(3, d, d, scale=d**-0.5),
                "lora_down": lora_down(),
                "lora_up": weight(4, rank, d, scale=0.1 * rank**-0.5),
                "decay_bias": weight(d, scale=1.0), "iclr_bias": weight(d, scale=1.0),
                "value_bias": weight(d, scale=1.0), "key_norm_scale": weight(d, scale=1.0),
                "key_iclr_mix": weight(d, scale=1.0), "bonus": weight(d, scale=0.1),
                "group_norm_weight": ones, "group_norm_bias": zeros,
                "output_weight": weight(d, d, scale=d**-0.5),
                "ffn_shift_mix": torch.rand(d, device=device).to(dtype),
                "ffn_key": weight(d, shape.ffn, scale=d**-0.5),
                "ffn_value": weight(shape.ffn, d, scale=shape.ffn**-0.5),
            }
            for _ in range(shape.layers)
        ]
        for layer in self.layers:  # the fused kernels read the per-channel vectors as one tensor
            layer["time_mix_vectors"] = stack_time_mix_vectors(
                w0=layer["decay_bias"], a0=layer["iclr_bias"], v0=layer["value_bias"], k_k=layer["key_norm_scale"],
                k_a=layer["key_iclr_mix"], r_k=layer["bonus"], ln_x_weight=layer["group_norm_weight"],
                ln_x_bias=layer["group_norm_bias"],
            )
        self.ln_out = (ones, zeros)
        self.head = weight(d, shape.vocab, scale=d**-0.5)
        self.time_shift = torch.zeros(shape.layers, 1, d, device=device, dtype=dtype)
        self.channel_shift = torch.zeros(shape.layers, 1, d, device=device, dtype=dtype)
        self.wkv_state = torch.zeros(shape.layers, 1, self.heads, shape.head_size, shape.head_size, device=device)
        self.before_recurrence = time_mix_inputs
        self.after_recurrence = time_mix_output_and_channel_mix
        self.lora_products = self.channel_mix_products = None  # None: the fused Triton activations
        if compiled:
            def compile_(function):
                return torch.compile(function, dynamic=False, mode=compile_mode)

            self.before_recurrence = compile_(time_mix_inputs)
            self.after_recurrence = compile_(time_mix_output_and_channel_mix)
            self.lora_products = compile_(lora_products)
            self.channel_mix_products = compile_(channel_mix_products)

    def bytes_read_per_token(self) -> int:
        """Bytes one token must move: each weight of the model once, the state read and written.

        Counted from the model's shape, not from the tensors here: the zero padding of the
        batched LoRAs is an implementation's choice, not bytes the model needs. The embedding
        table counts one row; layer 0 has no value LoRA.
        """
        return bytes_read_per_token(self.shape, self.dtype)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Logits (1, vocab) for one token id (a (1,) long tensor), advancing the state in place."""
        from longyarn.kernels.wkv7 import wkv7

        heads, head_size = self.heads, self.shape.head_size
        x = self.embedding[token]
        value_first = x  # replaced by layer 0's value vector
        for index, layer in enumerate(self.layers):
            r, log_w, k, v, a, b, gate, value_first = self.before_recurrence(
                x, self.time_shift[index], layer, heads, head_size, index == 0, value_first
            )
            as_heads = [t.view(1, 1, heads, head_size) for t in (r, log_w, k, v, a, b)]
            o, new_state = wkv7(*as_heads, state=self.wkv_state[index])
            self.wkv_state[index].copy_(new_state)
            x = self.after_recurrence(x, o, r, k, v, gate, self.channel_shift[index], layer, heads, head_size)
        return F.layer_norm(x, x.shape[-1:], *self.ln_out) @ self.head

    def step_fused(self, token: torch.Tensor) -> torch.Tensor:
        """`step` in 11 kernels a layer: fused Triton kernels between batched products."""
        from longyarn.kernels.rwkv7_fused import lora_activation, relu_square, time_mix_decode, token_shift_mix

        x = self.embedding[token]
        value_first = channel_mix_out = None
        for index, layer in enumerate(self.layers):
            time_shift, channel_shift, wkv_state = (
                self.time_shift[index], self.channel_shift[index], self.wkv_state[index]
            )
            # The previous layer's residual add happens here, with the layer norm and token shift.
            mixed, x, _ = token_shift_mix(
                x, time_shift, layer["shift_mix"].view(6, -1), layer["ln1_weight"], layer["ln1_bias"],
                residual=channel_mix_out, shift_out=time_shift, use_triton=True,
            )
            rkv = torch.bmm(mixed[:3], layer["rkv_weight"])
            if self.lora_products is None:
                hidden = lora_activation(torch.bmm(mixed[2:], layer["lora_down"]), use_triton=True)
                lora = torch.bmm(hidden, layer["lora_up"])
            else:
                lora = self.lora_products(mixed[2:], layer["lora_down"], layer["lora_up"])
            o, _ = time_mix_decode(
                rkv, lora, value_first, layer["time_mix_vectors"], wkv_state, self.heads,
                state_out=wkv_state, use_triton=True,
            )
            if value_first is None:
                value_first = rkv[2]
            shifted, x, _ = token_shift_mix(
                x, channel_shift, layer["ffn_shift_mix"].view(1, -1), layer["ln2_weight"], layer["ln2_bias"],
                residual=o @ layer["output_weight"], shift_out=channel_shift, use_triton=True,
            )
            if self.channel_mix_products is None:
                channel_mix_out = relu_square(shifted[0] @ layer["ffn_key"], use_triton=True) @ layer["ffn_value"]
            else:
                channel_mix_out = self.channel_mix_products(shifted[0], layer["ffn_key"], layer["ffn_value"])
        x = x + channel_mix_out
        return F.layer_norm(x, x.shape[-1:], *self.ln_out) @ self.head

    def reset_state(self) -> None:
        for state in (self.time_shift, self.channel_shift, self.wkv_state):
            state.zero_()


def decode_tokens_per_second(
    step: Callable[[torch.Tensor], torch.Tensor], device: torch.device, use_graph: bool, tokens: int
) -> float:
    token = torch.zeros(1, dtype=torch.long, device=device)
    if not use_graph:
        return 1.0 / seconds_per_call(lambda: step(token), device, repeats=tokens, warmup=1)
    side_stream = torch.cuda.Stream(device)
    side_stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side_stream):  # warm up (compile kernels) outside the capture
        for _ in range(3):
            step(token)
    torch.cuda.current_stream(device).wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(token)
    return 1.0 / seconds_per_call(graph.replay, device, repeats=tokens, warmup=3)


def gpu_kernels_per_token(step: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> str:
    """How many GPU kernels (and copies) one eager step launches, by the profiler; '' on a CPU."""
    if device.type != "cuda":
        return ""
    try:
        from torch.profiler import ProfilerActivity, profile

        token = torch.zeros(1, dtype=torch.long, device=device)
        step(token)  # compile first, outside the profile
        torch.cuda.synchronize(device)
        with profile(activities=[ProfilerActivity.CUDA]) as profiler:
            step(token)
            torch.cuda.synchronize(device)
        count = sum(1 for event in profiler.events() if event.device_type == torch.autograd.DeviceType.CUDA)
        return f"{count} kernels/token"
    except Exception as error:  # noqa: BLE001 - a count is a nicety; the timing still matters
        return f"(kernel count failed: {type(error).__name__})"


def compare_decode_steps(model: RandomRWKV7Decoder, tokens: int = 2) -> tuple[float, float]:
    """(max |fused - PyTorch| over the logits of `tokens` steps from the zero state, their scale)."""
    device = model.embedding.device
    token_ids = [torch.tensor([t], device=device) for t in range(1, tokens + 1)]
    model.reset_state()
    expected = [model.step(token) for token in token_ids]
    model.reset_state()
    actual = [model.step_fused(token) for token in token_ids]
    error = max(max_abs_error(a, e) for a, e in zip(actual, expected))
    return error, max(e.float().abs().max().item() for e in expected)


def check_fused_decode(device: torch.device, tiny: bool) -> None:
    shape = RWKV7_TINY if tiny else RWKV7Shape("check (L3 D256)", 3, 256, 512, 1024, 64, 32, 32, 32, 64)
    torch.manual_seed(0)
    with torch.inference_mode():
        error, scale = compare_decode_steps(RandomRWKV7Decoder(shape, device, torch.float32, compiled=False))
    relative = error / max(scale, 1.0)
    print(
        f"\nfused decode step vs the PyTorch step, {shape.name}, 2 tokens, float32 logits: "
        f"{error:9.2e} ({relative:7.1e} of scale) {verdict(relative < 1e-4)}"
    )


def report_decoding(
    device: torch.device, tiny: bool, compiled: bool, results: dict, compile_mode: str = "default"
) -> None:
    bandwidth = results.get("bandwidth") or measure_copy_bandwidth(device, tiny)
    use_graph = device.type == "cuda"
    shapes = [RWKV7_TINY] if tiny else [RWKV7_0_1B, RWKV7_1_5B]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print("One token at batch 1 through a whole RWKV-7 (random weights, " f"{str(dtype).removeprefix('torch.')}),")
    replay = "replayed as one CUDA graph" if use_graph else "eager (no CUDA graphs on a CPU)"
    print(f"{replay}; variants on the same weights:")
    print("  PyTorch ops: our Triton wkv7 recurrence, PyTorch for everything else (r/k/v and LoRAs batched);")
    print("  fused kernels: longyarn.kernels.rwkv7_fused around the recurrence and batched products, 11 kernels a layer.")
    print("bound = copy bandwidth / bytes the model must move per token (each weight once, without the")
    print("LoRAs' zero padding and with one embedding row, plus the state read and written).")
    if compiled:
        print(f"torch.compile (mode {compile_mode}) fuses the PyTorch ops around the recurrence, and the glue")
        print("between the fused kernels (LoRA activations, relu^2); compiled once per shape.")
    suffix = (", torch.compile" if compiled else "") + (" + CUDA graph" if use_graph else "")
    with torch.inference_mode():
        for shape in shapes:
            torch.manual_seed(0)
            model = RandomRWKV7Decoder(shape, device, dtype, compiled, compile_mode)
            bytes_per_token = model.bytes_read_per_token()
            bound = bandwidth / bytes_per_token
            target = f"target >= {DECODE_TARGET_FRACTION:.0%}" if shape is RWKV7_1_5B else ""
            print(f"\n{shape.name}: bound {bound:8.1f} tokens/s ({bytes_per_token / 1e9:.3f} GB/token)  {target}")
            measured = {}
            for variant, step in (("PyTorch ops", model.step), ("fused kernels", model.step_fused)):
                kernels = gpu_kernels_per_token(step, device)
                measured[variant] = decode_tokens_per_second(step, device, use_graph, tokens=2 if tiny else 100)
                print(
                    f"  {variant + suffix:<44} {measured[variant]:8.1f} tokens/s   "
                    f"{measured[variant] / bound:6.1%} of bound   {kernels}"
                )
            print(f"  fused / PyTorch ops: {measured['fused kernels'] / measured['PyTorch ops']:.2f}x")
            if not compiled and not tiny:
                error, scale = compare_decode_steps(model, tokens=1)
                print(
                    f"  fused vs PyTorch ops, {str(dtype).removeprefix('torch.')} logits after one token: "
                    f"{error / scale:.1e} of scale (rounding differs; for information)"
                )
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


# ------------------------------------------------------------------------ 4. the app's decoding


def report_app_decoding(device: torch.device, tiny: bool, results: dict) -> None:
    """`LocalLM.forward([token], state)` token by token, as the local writing backend calls it."""
    from longyarn.recurrent_core.local_lm import LocalLM
    from longyarn.training.synthetic import random_rwkv7_state_dict

    bandwidth = results.get("bandwidth") or measure_copy_bandwidth(device, tiny)
    shapes = [RWKV7_TINY] if tiny else [RWKV7_0_1B, RWKV7_1_5B]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    variants = [("eager", False), ("CUDA graph", True)] if device.type == "cuda" else [("eager", False)]
    tokens = 2 if tiny else 100
    print("LocalLM.forward([token], state) at batch 1 from random BlinkDL-format weights")
    print(f"({str(dtype).removeprefix('torch.')}), what the app runs for each token; same bound as section 3.")
    for shape in shapes:
        state_dict = random_rwkv7_state_dict(
            shape.layers, shape.d_model, shape.vocab, head_size=shape.head_size, dim_ffn=shape.ffn,
            lora_widths={"w": shape.decay_lora, "a": shape.iclr_lora, "v": shape.value_lora, "g": shape.gate_lora},
            dtype=dtype, device=device,
        )
        bound = bandwidth / bytes_read_per_token(shape, dtype)
        print(f"\n{shape.name}: bound {bound:8.1f} tokens/s")
        measured = {}
        lm = LocalLM.from_state_dict(state_dict, device=device, dtype=dtype)
        del state_dict
        for variant, cuda_graphs in variants:
            lm.cuda_graphs = cuda_graphs
            _, state = lm.forward([1, 2, 3])
            for _ in range(3):  # the first single token compiles kernels; the second captures the graph
                _, state = lm.forward([1], state)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(tokens):
                _, state = lm.forward([1], state)
            synchronize(device)
            measured[variant] = tokens / (time.perf_counter() - start)
            problems = [text for text in (lm.fused_decode_error, lm.cuda_graph_error) if text]
            note = f"   FELL BACK: {'; '.join(problems)}" if problems else ""
            print(f"  {variant:<12} {measured[variant]:8.1f} tokens/s   {measured[variant] / bound:6.1%} of bound{note}")
        if len(measured) == 2:
            print(f"  CUDA graph / eager: {measured['CUDA graph'] / measured['eager']:.2f}x")
        del lm
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------- 5. prefill


def report_prefill(device: torch.device, tiny: bool) -> None:
    from longyarn.kernels.wkv7 import wkv7_chunk, wkv7_chunk_torch, wkv7_fused_recurrent, wkv7_naive

    configs = [(1, 32, 2, 16)] if tiny else [(1, 4096, 32, 64), (8, 4096, 32, 64)]
    # In --tiny mode every kernel runs once: the interpreter is slow and the figures mean nothing.
    repeats, warmup = (1, 0) if tiny else (10, 2)
    for batch, seq_len, heads, head_size in configs:
        torch.manual_seed(0)
        inputs = rwkv7_inputs(batch, seq_len, heads, head_size, device)
        bf16_inputs = tuple(x.bfloat16() for x in inputs)
        tokens = batch * seq_len
        print(f"\nB={batch} T={seq_len} H={heads} N={head_size}: tokens/s of the recurrence alone")
        naive_s = seconds_per_call(lambda: wkv7_naive(*inputs), device, repeats=1)
        torch_s = seconds_per_call(lambda: wkv7_chunk_torch(*inputs), device, repeats=1 if tiny else 3)
        rows = [
            ("wkv7_naive fp32 (token loop)", naive_s),
            ("wkv7_chunk_torch fp32", torch_s),
        ]
        for chunk_size in (16, 32, 64):
            for label, data in (("fp32", inputs), ("bf16", bf16_inputs)):
                seconds = seconds_per_call(
                    lambda: wkv7_chunk(*data, chunk_size=chunk_size), device, repeats=repeats, warmup=warmup
                )
                rows.append((f"wkv7_chunk {label} chunk={chunk_size}", seconds))
        fused_s = seconds_per_call(lambda: wkv7_fused_recurrent(*bf16_inputs), device, repeats=repeats, warmup=warmup)
        rows.append(("wkv7_fused_recurrent bf16", fused_s))
        for name, seconds in rows:
            print(
                f"  {name:<32} {tokens / seconds:14,.0f} tokens/s  {seconds * 1e3:9.2f} ms   "
                f"{torch_s / seconds:7.1f}x chunk_torch   {naive_s / seconds:8.1f}x naive"
            )
        best_name, best_s = min(rows[2:], key=lambda row: row[1])
        print(
            f"  best Triton: {best_name}, {torch_s / best_s:.1f}x wkv7_chunk_torch "
            f"(target >= {PREFILL_TARGET_VS_TORCH:.0f}x)"
        )

    print("\nfused recurrent vs chunk (bf16, chunk=32) by length, B=1: where dispatch should switch")
    heads, head_size = (2, 16) if tiny else (32, 64)
    for seq_len in (16,) if tiny else (16, 32, 64, 128, 256, 512):
        data = rwkv7_inputs(1, seq_len, heads, head_size, device, torch.bfloat16)
        repeats = 1 if tiny else 50
        fused_s = seconds_per_call(lambda: wkv7_fused_recurrent(*data), device, repeats=repeats, warmup=warmup)
        chunk_s = seconds_per_call(lambda: wkv7_chunk(*data), device, repeats=repeats, warmup=warmup)
        faster = "fused_recurrent" if fused_s < chunk_s else "chunk"
        print(f"  T={seq_len:<4} fused {fused_s * 1e6:9.1f} us   chunk {chunk_s * 1e6:9.1f} us   faster: {faster}")


# -------------------------------------------------------------------------------------- 6. fla


def report_fla(device: torch.device, tiny: bool) -> None:
    if device.type != "cuda":
        print("skipped: fla's kernels need CUDA.")
        return
    try:
        from fla.ops.rwkv7 import chunk_rwkv7, fused_recurrent_rwkv7
    except ImportError as error:
        print(f"skipped: flash-linear-attention is not importable ({error}).")
        return
    from longyarn.kernels.wkv7 import wkv7_chunk, wkv7_fused_recurrent, wkv7_naive

    # fla: w is the log decay (checked below against our reference), scale must be 1.0 for
    # RWKV (fused_recurrent_rwkv7 defaults to 1/sqrt(K)), and its state is (B, H, K, V):
    # the transpose of ours.
    def fla_chunk(*x, state=None):
        o, final = chunk_rwkv7(
            *x, scale=1.0, initial_state=None if state is None else state.transpose(-1, -2).contiguous(),
            output_final_state=True,
        )
        return o, final.transpose(-1, -2)

    def fla_recurrent(*x, state=None):
        o, final = fused_recurrent_rwkv7(
            *x, scale=1.0, initial_state=None if state is None else state.transpose(-1, -2).contiguous(),
            output_final_state=True,
        )
        return o, final.transpose(-1, -2)

    torch.manual_seed(0)
    check_inputs = rwkv7_inputs(1, 300, 4, 64, device)
    check_state = torch.randn(1, 4, 64, 64, device=device)
    expected_out, expected_state = wkv7_naive(*check_inputs, state=check_state)
    for name, form in (("fla chunk_rwkv7", fla_chunk), ("fla fused_recurrent_rwkv7", fla_recurrent)):
        out, final = form(*check_inputs, state=check_state)
        print(
            f"  {name:<28} vs wkv7_naive fp32: output {max_abs_error(out, expected_out):.2e}, "
            f"state {max_abs_error(final, expected_state):.2e} (conventions agree if small)"
        )

    print(f"\nratio = fla time / our time (>1: ours faster; target >= {TARGET_VS_FLA})")
    for batch, seq_len in ((1, 4096), (8, 4096)):
        data = rwkv7_inputs(batch, seq_len, 32, 64, device, torch.bfloat16)
        fla_s = seconds_per_call(lambda: fla_chunk(*data), device, repeats=10, warmup=2)
        for chunk_size in (16, 32, 64):
            ours_s = seconds_per_call(lambda: wkv7_chunk(*data, chunk_size=chunk_size), device, repeats=10, warmup=2)
            print(
                f"  prefill B={batch} T={seq_len} H=32 N=64 bf16: ours chunk={chunk_size} {ours_s * 1e3:7.2f} ms, "
                f"fla chunk_rwkv7 {fla_s * 1e3:7.2f} ms, ratio {fla_s / ours_s:5.2f}"
            )
    for batch, seq_len in ((1, 1), (8, 1), (1, 64)):
        data = rwkv7_inputs(batch, seq_len, 32, 64, device, torch.bfloat16)
        state = torch.zeros(batch, 32, 64, 64, device=device)
        ours_s = seconds_per_call(lambda: wkv7_fused_recurrent(*data, state=state), device, repeats=200, warmup=5)
        fla_s = seconds_per_call(lambda: fla_recurrent(*data, state=state), device, repeats=200, warmup=5)
        print(
            f"  recurrent B={batch} T={seq_len} H=32 N=64 bf16 (with launch overhead): ours {ours_s * 1e6:7.1f} us, "
            f"fla {fla_s * 1e6:7.1f} us, ratio {fla_s / ours_s:5.2f}"
        )


# ------------------------------------------------------------------------------------------ main


def main() -> int:
    args = parse_args()
    if args.device == "cpu":
        # Triton reads this when it is imported; on a CPU only its interpreter can run kernels.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        torch.set_num_threads(2)
    elif not torch.cuda.is_available():
        print("No CUDA device: this script measures GPU kernels. Use `--device cpu --tiny` for a smoke test.")
        return 0
    device = torch.device(args.device)
    import triton

    description = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    print(f"device: {description}; torch {torch.__version__}; triton {triton.__version__}")
    if args.tiny:
        print("--tiny: tiny shapes, a smoke test of this script; the figures mean nothing.")
    started = time.perf_counter()
    results: dict = {}
    sections = [
        ("1. correctness", lambda: (check_correctness(device, args.tiny), check_fused_decode(device, args.tiny))),
        ("2. memory bandwidth", lambda: report_bandwidth(device, args.tiny, results)),
        ("3. decoding at batch 1", lambda: report_decoding(device, args.tiny, False, results)),
        ("4. the app's decoding (LocalLM)", lambda: report_app_decoding(device, args.tiny, results)),
        ("5. chunked prefill", lambda: report_prefill(device, args.tiny)),
        ("6. flash-linear-attention", lambda: report_fla(device, args.tiny)),
    ]
    if device.type == "cuda" and not args.no_compile:
        # Last, because compiling takes a minute or two.
        sections.append(
            (
                "7. decoding at batch 1, torch.compile",
                lambda: report_decoding(device, args.tiny, True, results, args.compile_mode),
            )
        )
    chosen = {int(number) for number in args.sections.split(",")}
    outcomes = [run_section(title, body) for title, body in sections if int(title.split(".")[0]) in chosen]
    print(f"\n{sum(outcomes)} of {len(outcomes)} sections ran; {time.perf_counter() - started:.0f} s in all.")
    return 0 if all(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

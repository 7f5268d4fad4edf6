"""An RWKV-7 checkpoint's tensors as `LocalLM` keeps them: one `LayerWeights` per block.

The big matrices become `Projection`s, stored at the precision the user chose on a CPU (see
precision.py and projection.py); the small ones are laid out for `x @ W` (on a CPU at a half
precision, bf16, where that holds them exactly: see `lora_dtype`). Where the fused decode
path runs (`cuda_decode`), each block's r/k/v and LoRA matrices are also stacked
(`DecodeWeights`) for batched products, and the per-matrix weights that the sequence path
reads are views of those stacks, so that every matrix is held once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from longyarn.kernels.rwkv7_fused import LORA_ROWS, stack_time_mix_vectors

from .config import RWKV7Config
from .precision import in_huge_pages
from .projection import Projection


@dataclass(frozen=True)
class DecodeWeights:
    """One block's weights stacked for the fused single-token path (batched products)."""

    rkv: torch.Tensor  # (3, C, C): receptance, key, value, each laid out for x @ W
    lora_down: torch.Tensor  # (4, C, R): the LoRAs in LORA_ROWS order (v, w, a, g), zero-padded to R
    lora_up: torch.Tensor  # (4, R, C)
    lora_widths: tuple[int, ...]  # each LoRA's own width; 0 for layer 0's value LoRA
    time_mix_vectors: torch.Tensor  # (8, C): see longyarn.kernels.rwkv7_fused.stack_time_mix_vectors

    def lora(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """LoRA `name`'s (down, up) matrices: views of the stacks, trimmed to its width."""
        row = LORA_ROWS.index(name)
        width = self.lora_widths[row]
        return (self.lora_down[row, :, :width], self.lora_up[row, :width]) if width else None


@dataclass(frozen=True)
class LayerWeights:
    """One block's weights: big matrices as `Projection`s, small ones laid out for `x @ W`."""

    ln1_weight: torch.Tensor
    ln1_bias: torch.Tensor
    ln2_weight: torch.Tensor
    ln2_bias: torch.Tensor
    token_shift_mix: torch.Tensor  # (6, 1, C): lerp weights for r, k, v, w, a, g (this order)
    receptance: Projection
    key: Projection
    value: Projection
    w0: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor
    a0: torch.Tensor
    a1: torch.Tensor
    a2: torch.Tensor
    v0: torch.Tensor | None  # None in layer 0, whose values are v_first
    v1: torch.Tensor | None
    v2: torch.Tensor | None
    g1: torch.Tensor
    g2: torch.Tensor
    k_k: torch.Tensor
    k_a: torch.Tensor
    one_minus_k_a: torch.Tensor  # precomputed: k * (1 + (iclr - 1) k_a) = k * ((1 - k_a) + iclr k_a)
    r_k: torch.Tensor  # (C,), flattened from (H, N)
    output: Projection
    ln_x_weight: torch.Tensor
    ln_x_bias: torch.Tensor
    channel_mix_x_k: torch.Tensor
    ffn_key: Projection
    ffn_value: Projection
    decode: DecodeWeights | None  # only where the fused decode path runs


def _stack_decode_weights(
    raw: Mapping[str, torch.Tensor], layer: int, device: torch.device, dtype: torch.dtype
) -> DecodeWeights:
    """Block `layer`'s r/k/v and LoRA matrices and time-mix vectors, stacked."""
    att = f"blocks.{layer}.att."
    has_value_residual = layer > 0  # layer 0's values are v_first: its value LoRA rows stay zero

    def on_device(key: str) -> torch.Tensor:
        return raw[key].to(device=device, dtype=dtype)

    rkv = torch.stack([on_device(att + f"{name}.weight").t() for name in ("receptance", "key", "value")])
    widths = tuple(
        raw[att + f"{name}1"].shape[1] if name != "v" or has_value_residual else 0 for name in LORA_ROWS
    )
    channels = rkv.shape[-1]
    lora_down = torch.zeros(len(LORA_ROWS), channels, max(widths), device=device, dtype=dtype)
    lora_up = torch.zeros(len(LORA_ROWS), max(widths), channels, device=device, dtype=dtype)
    for row, (name, width) in enumerate(zip(LORA_ROWS, widths)):
        if width:
            lora_down[row, :, :width] = on_device(att + f"{name}1")
            lora_up[row, :width] = on_device(att + f"{name}2")
    vectors = stack_time_mix_vectors(
        **{name: on_device(att + name) for name in ("w0", "a0", "k_k", "k_a", "r_k")},
        v0=on_device(att + "v0") if has_value_residual else None,
        ln_x_weight=on_device(att + "ln_x.weight"),
        ln_x_bias=on_device(att + "ln_x.bias"),
    )
    return DecodeWeights(rkv.contiguous(), lora_down, lora_up, widths, vectors)


LORA_NAMES = ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2")


def lora_dtype(raw: Mapping[str, torch.Tensor], precision: str) -> torch.dtype:
    """The dtype of the LoRA matrices on a CPU: bf16 for any precision below fp32 where every
    LoRA matrix is exact in bf16 (BlinkDL's releases), else fp32 (they are a tenth of the bytes)."""
    if precision == "fp32":
        return torch.float32
    for key, tensor in raw.items():
        if key.rsplit(".", 1)[-1] in LORA_NAMES:
            wide = tensor.float()
            if not torch.equal(wide.to(torch.bfloat16).float(), wide):
                return torch.float32
    return torch.bfloat16


def lora_product(
    x: torch.Tensor, weight_in_out: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x @ W (+ bias) for a small LoRA matrix W (in, out), widened to x's dtype if narrower."""
    if torch.compiler.is_compiling():
        # One fused pass over the stored weights (see projection.py), for any dtype.
        y = (x.unsqueeze(-1) * weight_in_out.to(x.dtype)).sum(-2)
        return y if bias is None else y + bias
    weight = weight_in_out.to(x.dtype)
    flat = x.reshape(-1, x.shape[-1])
    y = flat @ weight if bias is None else torch.addmm(bias, flat, weight)
    return y.view(*x.shape[:-1], weight.shape[-1])


def prepare_layers(
    raw: Mapping[str, torch.Tensor],
    config: RWKV7Config,
    device: torch.device,
    dtype: torch.dtype,
    stack_for_decode: bool = False,
    precision: str = "fp32",
) -> list[LayerWeights]:
    """Each block's weights; with `stack_for_decode` also stacked for the fused decode path.

    The stacked tensors hold the r/k/v and LoRA matrices once: on a GPU the per-matrix weights
    used by the sequence path are views of them. `precision` is the storage of the big
    matrices on a CPU computing in fp32 (see precision.py).
    """
    cpu_storage = device.type == "cpu" and dtype == torch.float32
    small_dtype = lora_dtype(raw, precision) if cpu_storage else dtype

    def vector(key: str) -> torch.Tensor:
        return raw[key].reshape(-1).to(device=device, dtype=dtype)

    def matrix(key: str) -> torch.Tensor:
        stored = raw[key].to(device=device, dtype=small_dtype)
        if cpu_storage:
            # Held as rows (out, in), the layout our weight kernel streams in the one-call decode
            # step (native_step); the PyTorch paths multiply by this (in, out) view of them.
            return in_huge_pages(stored.t()).t()
        return stored.contiguous()

    def projection(key: str) -> Projection:
        return Projection(raw[key], device, dtype, precision)

    layers = []
    for i in range(config.n_layer):
        att, ffn = f"blocks.{i}.att.", f"blocks.{i}.ffn."
        mix = [vector(att + f"x_{name}") for name in ("r", "k", "v", "w", "a", "g")]
        has_value_residual = i > 0
        decode = _stack_decode_weights(raw, i, device, dtype) if stack_for_decode else None
        if decode is None:
            receptance, key, value = (projection(att + f"{name}.weight") for name in ("receptance", "key", "value"))
            lora = {name: matrix(att + name) for name in ("w1", "w2", "a1", "a2", "g1", "g2")}
            if has_value_residual:
                lora.update(v1=matrix(att + "v1"), v2=matrix(att + "v2"))
        else:
            receptance, key, value = (Projection.of_weight_in_out(weight) for weight in decode.rkv)
            lora = {}
            for name in LORA_ROWS:
                if (matrices := decode.lora(name)) is not None:
                    lora[f"{name}1"], lora[f"{name}2"] = matrices
        layers.append(
            LayerWeights(
                ln1_weight=vector(f"blocks.{i}.ln1.weight"),
                ln1_bias=vector(f"blocks.{i}.ln1.bias"),
                ln2_weight=vector(f"blocks.{i}.ln2.weight"),
                ln2_bias=vector(f"blocks.{i}.ln2.bias"),
                token_shift_mix=torch.stack(mix).unsqueeze(1),
                receptance=receptance,
                key=key,
                value=value,
                w0=vector(att + "w0"),
                w1=lora["w1"],
                w2=lora["w2"],
                a0=vector(att + "a0"),
                a1=lora["a1"],
                a2=lora["a2"],
                v0=vector(att + "v0") if has_value_residual else None,
                v1=lora.get("v1"),
                v2=lora.get("v2"),
                g1=lora["g1"],
                g2=lora["g2"],
                k_k=vector(att + "k_k"),
                k_a=vector(att + "k_a"),
                one_minus_k_a=1 - vector(att + "k_a"),
                r_k=vector(att + "r_k"),
                output=projection(att + "output.weight"),
                ln_x_weight=vector(att + "ln_x.weight"),
                ln_x_bias=vector(att + "ln_x.bias"),
                channel_mix_x_k=vector(ffn + "x_k"),
                ffn_key=projection(ffn + "key.weight"),
                ffn_value=projection(ffn + "value.weight"),
                decode=decode,
            )
        )
    return layers

"""Random RWKV-7 weights with BlinkDL's key names, shapes and realistic value ranges.

Tests and benchmarks need real-shaped checkpoints without downloading one. The ranges are
chosen so that logits stay finite and varied through many layers: mixing coefficients in
(0, 1), layer-norm weights near 1, decays from nearly 1 down to about exp(-0.5), and
projections scaled by 1/sqrt(fan-in).
"""

from __future__ import annotations

import math

import torch


def default_lora_widths(n_embd: int) -> dict[str, int]:
    """The LoRA widths RWKV-LM picks for a model of width `n_embd` (multiples of 32)."""

    def round32(x: float) -> int:
        return max(32, round(x / 32) * 32)

    return {
        "w": round32(1.8 * n_embd**0.5),
        "a": round32(1.8 * n_embd**0.5),
        "v": round32(1.3 * n_embd**0.5),
        "g": round32(0.6 * n_embd**0.8),
    }


def random_rwkv7_state_dict(
    n_layer: int,
    n_embd: int,
    vocab_size: int,
    head_size: int = 64,
    dim_ffn: int | None = None,
    lora_widths: dict[str, int] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    unused_layer_0_tensors: bool = True,
) -> dict[str, torch.Tensor]:
    """A random RWKV-7 ("x070") state dict laid out exactly like a BlinkDL .pth file.

    RWKV-LM's training code saves value-residual tensors (v0/v1/v2) in layer 0 too, which no
    forward pass reads; `unused_layer_0_tensors=False` gives the layout of converted checkpoints
    that dropped them. Either way the other weights are the same for a seed. The same seed gives
    the same weights on the same kind of device (a GPU's generator differs).
    """
    if n_embd % head_size:
        raise ValueError(f"n_embd {n_embd} is not a multiple of head_size {head_size}")
    dim_ffn = dim_ffn or 4 * n_embd
    widths = lora_widths or default_lora_widths(n_embd)
    n_head = n_embd // head_size
    gen = torch.Generator(device=device).manual_seed(seed)
    C = n_embd

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device) * std

    def uniform(*shape: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, device=device) * (high - low) + low

    def per_channel(low: float, high: float) -> torch.Tensor:
        # BlinkDL stores per-channel parameters with shape (1, 1, C).
        return uniform(1, 1, C, low=low, high=high)

    sd: dict[str, torch.Tensor] = {
        "emb.weight": normal(vocab_size, C, std=1.0),
        "blocks.0.ln0.weight": 1 + normal(C, std=0.05),
        "blocks.0.ln0.bias": normal(C, std=0.05),
    }
    for i in range(n_layer):
        p = f"blocks.{i}."
        sd[p + "ln1.weight"] = 1 + normal(C, std=0.05)
        sd[p + "ln1.bias"] = normal(C, std=0.05)
        sd[p + "ln2.weight"] = 1 + normal(C, std=0.05)
        sd[p + "ln2.bias"] = normal(C, std=0.05)
        att = p + "att."
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            sd[att + name] = per_channel(0.05, 0.95)
        sd[att + "w0"] = per_channel(-6.0, 2.0)
        sd[att + "w1"] = normal(C, widths["w"], std=1 / math.sqrt(C))
        sd[att + "w2"] = normal(widths["w"], C, std=0.3)
        sd[att + "a0"] = per_channel(-1.0, 1.0)
        sd[att + "a1"] = normal(C, widths["a"], std=1 / math.sqrt(C))
        sd[att + "a2"] = normal(widths["a"], C, std=0.3)
        if i > 0:  # layer 0 has no value-residual gate: its v is v_first
            sd[att + "v0"] = per_channel(-1.0, 1.0)
            sd[att + "v1"] = normal(C, widths["v"], std=1 / math.sqrt(C))
            sd[att + "v2"] = normal(widths["v"], C, std=0.3)
        sd[att + "g1"] = normal(C, widths["g"], std=1 / math.sqrt(C))
        sd[att + "g2"] = normal(widths["g"], C, std=1 / math.sqrt(widths["g"]))
        sd[att + "k_k"] = per_channel(0.5, 1.0)
        sd[att + "k_a"] = per_channel(0.5, 1.0)
        sd[att + "r_k"] = uniform(n_head, head_size, low=-0.3, high=0.3)
        sd[att + "receptance.weight"] = normal(C, C, std=1 / math.sqrt(C))
        sd[att + "key.weight"] = normal(C, C, std=1 / math.sqrt(C))
        sd[att + "value.weight"] = normal(C, C, std=1 / math.sqrt(C))
        sd[att + "output.weight"] = normal(C, C, std=0.5 / math.sqrt(C))
        sd[att + "ln_x.weight"] = 1 + normal(C, std=0.05)
        sd[att + "ln_x.bias"] = normal(C, std=0.05)
        ffn = p + "ffn."
        sd[ffn + "x_k"] = per_channel(0.05, 0.95)
        sd[ffn + "key.weight"] = normal(dim_ffn, C, std=1 / math.sqrt(C))
        sd[ffn + "value.weight"] = normal(C, dim_ffn, std=0.3 / math.sqrt(dim_ffn))
    sd["ln_out.weight"] = 1 + normal(C, std=0.05)
    sd["ln_out.bias"] = normal(C, std=0.05)
    sd["head.weight"] = normal(vocab_size, C, std=1 / math.sqrt(C))
    if unused_layer_0_tensors:  # drawn last, so the weights above do not depend on them
        sd["blocks.0.att.v0"] = per_channel(-1.0, 1.0)
        sd["blocks.0.att.v1"] = normal(C, widths["v"], std=1 / math.sqrt(C))
        sd["blocks.0.att.v2"] = normal(widths["v"], C, std=0.3)
    return {name: tensor.to(dtype) for name, tensor in sd.items()}

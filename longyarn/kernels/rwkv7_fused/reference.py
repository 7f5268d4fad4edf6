"""The elementwise work of an RWKV-7 layer around the wkv7 recurrence, in plain PyTorch.

These are the references that the Triton kernels are tested against, and the forms that run on
a CPU. The arithmetic is that of the reference `rwkv.model.RWKV_x070`, in the order that
`longyarn.recurrent_core.local_lm.model` writes it.

Layouts shared with the Triton forms:
- LoRA products are stacked as (4, *rows, C) in the order `LORA_ROWS` = (v, w, a, g): the
  token-shift rows 2..5 (x_v, x_w, x_a, x_g) feed them, so one batched product makes all four.
- The per-channel vectors of the time mix are stacked as (8, C) in `TIME_MIX_VECTOR_ROWS`
  order, so that a kernel takes one pointer for all of them (`stack_time_mix_vectors`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from longyarn.kernels.wkv7.recurrent_torch import wkv7_recurrent_torch

LAYER_NORM_EPS = 1e-5  # torch.layer_norm's default, as the reference uses it
GROUP_NORM_EPS = 64e-5  # ln_x, as in the reference (and RWKV-LM's training code)
# log_w = -exp(-softplus(-z) - 0.5) = -exp(-0.5) * sigmoid(z): one transcendental, not three.
DECAY_SCALE = math.exp(-0.5)

LORA_ROWS = ("v", "w", "a", "g")
TIME_MIX_VECTOR_ROWS = ("w0", "a0", "v0", "k_k", "k_a", "r_k", "ln_x_weight", "ln_x_bias")


def stack_time_mix_vectors(
    *,
    w0: torch.Tensor,
    a0: torch.Tensor,
    v0: torch.Tensor | None,
    k_k: torch.Tensor,
    k_a: torch.Tensor,
    r_k: torch.Tensor,
    ln_x_weight: torch.Tensor,
    ln_x_bias: torch.Tensor,
) -> torch.Tensor:
    """The (8, C) tensor of per-channel time-mix vectors; v0 None (layer 0) becomes zeros."""
    vectors = [w0, a0, v0 if v0 is not None else torch.zeros_like(w0), k_k, k_a, r_k, ln_x_weight, ln_x_bias]
    return torch.stack([vector.reshape(-1) for vector in vectors]).contiguous()


def check_token_shift_inputs(
    x: torch.Tensor, shift: torch.Tensor, mix: torch.Tensor, residual: torch.Tensor | None
) -> None:
    """Raise ValueError unless the shapes fit `token_shift_mix`'s contract."""
    if x.dim() not in (2, 3):
        raise ValueError(f"token_shift_mix takes x of shape (B, C) or (B, T, C), not {tuple(x.shape)}.")
    batch, channels = x.shape[0], x.shape[-1]
    if shift.shape != (batch, channels):
        raise ValueError(f"shift has shape {tuple(shift.shape)} but x needs {(batch, channels)}.")
    if mix.dim() != 2 or mix.shape[1] != channels:
        raise ValueError(f"mix must have shape (M, {channels}), not {tuple(mix.shape)}.")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual has shape {tuple(residual.shape)} but x has {tuple(x.shape)}.")



def check_time_mix_inputs(
    x: torch.Tensor,
    lora: torch.Tensor | None,
    v_first: torch.Tensor | None,
    vectors: torch.Tensor,
    heads: int,
    others: dict[str, torch.Tensor],
) -> None:
    """Raise ValueError unless the time-mix inputs share x's (*rows, C) shape and C splits into heads."""
    channels = x.shape[-1]
    if heads <= 0 or channels % heads:
        raise ValueError(f"{channels} channels do not split into {heads} heads.")
    if lora is not None and lora.shape != (4, *x.shape):
        raise ValueError(f"lora must have shape {(4, *x.shape)} (rows v, w, a, g), not {tuple(lora.shape)}.")
    if vectors.shape != (len(TIME_MIX_VECTOR_ROWS), channels):
        raise ValueError(
            f"vectors must have shape {(len(TIME_MIX_VECTOR_ROWS), channels)} (rows "
            f"{', '.join(TIME_MIX_VECTOR_ROWS)}), not {tuple(vectors.shape)}; use stack_time_mix_vectors."
        )
    for name, tensor in ({"v_first": v_first, **others}).items():
        if tensor is not None and tensor.shape != x.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)} but should have {tuple(x.shape)}.")


def token_shift_mix_torch(
    x: torch.Tensor,
    shift: torch.Tensor,
    mix: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    *,
    residual: torch.Tensor | None = None,
    shift_out: torch.Tensor | None = None,
    eps: float = LAYER_NORM_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual add, layer norm, token shift and M lerps: the inputs of a time or channel mix.

    x: (B, C) one token per sequence, or (B, T, C); residual: None or x's shape, added first;
    shift: (B, C), the previous token's normed input; mix: (M, C) lerp weights.
    Returns (mixed (M, *x.shape), x + residual, shift_out): mixed[j] = normed + (previous -
    normed) * mix[j], where previous is the normed token before each one (`shift` for the first).
    The last token's normed input is written to `shift_out` (allocated if None; it may be
    `shift` itself).
    """
    check_token_shift_inputs(x, shift, mix, residual)
    if residual is not None:
        x = x + residual
    normed = F.layer_norm(x, x.shape[-1:], ln_weight, ln_bias, eps)
    if x.dim() == 2:
        previous, last = shift, normed
    else:
        previous = torch.cat([shift.unsqueeze(1), normed[:, :-1]], dim=1)
        last = normed[:, -1]
    weights = mix.reshape(mix.shape[0], *([1] * (x.dim() - 1)), mix.shape[-1])
    mixed = torch.addcmul(normed, previous - normed, weights)
    if shift_out is None:
        shift_out = last.clone()
    else:
        shift_out.copy_(last)
    return mixed, x, shift_out


def lora_activation_torch(hidden: torch.Tensor) -> torch.Tensor:
    """The nonlinearity between the down and up products of the stacked LoRAs (v, w, a, g).

    hidden: (4, *rows, R). The decay LoRA (w) takes tanh and the gate LoRA (g) sigmoid; the
    value and in-context-learning-rate LoRAs (v, a) are linear.
    """
    lora_v, lora_w, lora_a, lora_g = hidden.unbind(0)
    return torch.stack([lora_v, torch.tanh(lora_w), lora_a, torch.sigmoid(lora_g)])


def relu_square_torch(x: torch.Tensor) -> torch.Tensor:
    """The channel mix's activation, relu(x)^2."""
    return torch.relu(x).square()


def _heads_view(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.view(*x.shape[:-1], heads, x.shape[-1] // heads)


def wkv7_prepare_torch(
    k: torch.Tensor,
    v: torch.Tensor,
    lora: torch.Tensor,
    v_first: torch.Tensor | None,
    vectors: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the key/value projections and LoRA products to the wkv7 recurrence's inputs.

    k, v: (*rows, C); lora: (4, *rows, C), the up products in `LORA_ROWS` order; v_first:
    layer 0's values (None in layer 0, which has no value residual); vectors: (8, C).
    Returns (log_w float32, k, v, a, b) of shape (*rows, C): the decay, the key scaled by the
    in-context learning rate, the values mixed with v_first, a = -kk and b = kk * iclr, where
    kk is k * k_k normalised per head.
    """
    check_time_mix_inputs(k, lora, v_first, vectors, heads, others={"v": v})
    w0, a0, v0, k_k, k_a = vectors[:5]
    lora_v, lora_w, lora_a, _ = lora.unbind(0)
    kk = _heads_view(k * k_k, heads)
    kk = (kk / torch.linalg.vector_norm(kk, dim=-1, keepdim=True).clamp_min(1e-12)).view_as(k)
    iclr = torch.sigmoid(a0 + lora_a)
    k = k * torch.addcmul(1 - k_a, iclr, k_a)
    if v_first is not None:  # the value residual: mix in layer 0's values, gated per channel
        v = torch.lerp(v, v_first, torch.sigmoid(v0 + lora_v))
    log_w = torch.sigmoid((w0 + lora_w).float()).mul_(-DECAY_SCALE)
    return log_w, k, v, -kk, kk * iclr


def time_mix_output_torch(
    o: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gate: torch.Tensor,
    vectors: torch.Tensor,
    heads: int,
    eps: float = GROUP_NORM_EPS,
) -> torch.Tensor:
    """From the recurrence's output to the output projection's input.

    o: the wkv7 output, (*rows, C) in any float dtype; r, k, v: the recurrence's inputs (k and v
    as `wkv7_prepare_torch` returns them); gate: the gate LoRA's product; all (*rows, C).
    Returns (group_norm(o) per head + sum_head(r * k * r_k) * v) * gate in r's dtype.
    """
    check_time_mix_inputs(r, None, None, vectors, heads, others={"o": o, "k": k, "v": v, "gate": gate})
    r_k, ln_x_weight, ln_x_bias = vectors[5:8]
    normed = F.group_norm(o.to(r.dtype).reshape(-1, r.shape[-1]), heads, ln_x_weight, ln_x_bias, eps).view_as(r)
    bonus = _heads_view(r * k * r_k, heads).sum(dim=-1, keepdim=True) * _heads_view(v, heads)
    return (normed + bonus.view_as(r)) * gate


def time_mix_decode_torch(
    rkv: torch.Tensor,
    lora: torch.Tensor,
    v_first: torch.Tensor | None,
    vectors: torch.Tensor,
    state: torch.Tensor,
    heads: int,
    *,
    state_out: torch.Tensor | None = None,
    eps: float = GROUP_NORM_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token's time mix from the projections to the output projection's input.

    `wkv7_prepare_torch`, one step of the wkv7 recurrence and `time_mix_output_torch` in turn.
    rkv: (3, B, C), the receptance, key and value projections; lora: (4, B, C); v_first: (B, C)
    or None (layer 0); vectors: (8, C); state: (B, H, N, N) float32.
    Returns (output (B, C) in rkv's dtype, new state), the state written to `state_out` if given
    (which may be `state` itself).
    """
    r, k, v = rkv.unbind(0)
    batch, channels = r.shape
    log_w, k, v, a, b = wkv7_prepare_torch(k, v, lora, v_first, vectors, heads)
    as_sequence = (batch, 1, heads, channels // heads)
    o, new_state = wkv7_recurrent_torch(*(t.reshape(as_sequence) for t in (r, log_w, k, v, a, b)), state)
    if state_out is not None:
        new_state = state_out.copy_(new_state)
    return time_mix_output_torch(o.reshape(batch, channels), r, k, v, lora[3], vectors, heads, eps), new_state

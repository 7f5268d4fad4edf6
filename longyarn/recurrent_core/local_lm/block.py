"""One RWKV-7 block: the time mix and the channel mix, for one token or a whole sequence.

The arithmetic is the reference `rwkv.model.RWKV_x070` in fp32, reorganised for speed: the
six token-shift lerps are one fused op, each LoRA is one `addmm` and the big matrices are
`Projection`s. `token_block` is one block for one token per sequence; on a CPU it is what
`compiled_decode` compiles (the products and the wkv step then take their fused forms).
"""

from __future__ import annotations

import torch

from longyarn.kernels.rwkv7_fused import DECAY_SCALE, GROUP_NORM_EPS
from longyarn.kernels.wkv7 import wkv7

from .cpu_decode import wkv7_one_token
from .native_step import runs_wkv_sequence, wkv_sequence
from .weights import LayerWeights, lora_product


def time_mix(
    layer: LayerWeights,
    mixed: torch.Tensor,
    v_first: torch.Tensor | None,
    wkv_state: torch.Tensor,
    wkv_out: torch.Tensor,
    n_head: int,
    head_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RWKV-7 time-mix on token-shift-mixed inputs `mixed` (6, *batch_dims, C).

    batch_dims is (B,) for one token per sequence or (B, T) for sequences. Writes the
    layer's new wkv state into `wkv_out`; returns (output, v_first).
    """
    H, N = n_head, head_size
    batch_dims = mixed.shape[1:-1]
    x_r, x_k, x_v, x_w, x_a, x_g = mixed.unbind(0)
    r, k, v = layer.receptance(x_r), layer.key(x_k), layer.value(x_v)

    # LoRAs: x0 + (x @ down) @ up, the last product adding x0 (one addmm each, eagerly).
    decay_logit = lora_product(torch.tanh(lora_product(x_w, layer.w1)), layer.w2, layer.w0)
    iclr = torch.sigmoid(lora_product(lora_product(x_a, layer.a1), layer.a2, layer.a0))
    gate = lora_product(torch.sigmoid(lora_product(x_g, layer.g1)), layer.g2)

    heads = (*batch_dims, H, N)
    kk = (k * layer.k_k).view(heads)
    kk = (kk / torch.linalg.vector_norm(kk, dim=-1, keepdim=True).clamp_min(1e-12)).view_as(k)
    k = k * torch.addcmul(layer.one_minus_k_a, iclr, layer.k_a)
    if v_first is None:
        v_first = v
    else:  # the value residual: mix in layer 0's values, gated per channel
        v_gate = lora_product(lora_product(x_v, layer.v1), layer.v2, layer.v0)
        v = torch.lerp(v, v_first, torch.sigmoid(v_gate))
    log_w = torch.sigmoid(decay_logit.float()).mul(-DECAY_SCALE).view_as(r)

    if len(batch_dims) == 1 and not mixed.is_cuda:
        out = wkv7_one_token(r, log_w, k, v, kk, iclr, wkv_state, wkv_out, N)
    elif len(batch_dims) == 2 and runs_wkv_sequence(r, N, wkv_state, wkv_out):
        seq_shape = (*batch_dims, H, N)
        out = wkv_sequence(*(t.view(seq_shape) for t in (r, log_w.exp(), k, v, -kk, kk * iclr)), wkv_state, wkv_out)
    else:
        # The kernel takes (B, T, H, N) and a = -kk, b = kk * iclr (its delta-rule form).
        seq_shape = (batch_dims[0], batch_dims[1] if len(batch_dims) == 2 else 1, H, N)
        out, final_state = wkv7(
            *(t.reshape(seq_shape) for t in (r, log_w, k, v, -kk, kk * iclr)), wkv_state
        )
        wkv_out.copy_(final_state)
    out = torch.group_norm(
        out.to(mixed.dtype).reshape(-1, H * N), H, layer.ln_x_weight, layer.ln_x_bias,
        GROUP_NORM_EPS, False,
    ).view_as(r)
    bonus = (r * k * layer.r_k).view(heads).sum(dim=-1, keepdim=True) * v.view(heads)
    out = out + bonus.view_as(r)
    return layer.output(out * gate), v_first


def channel_mix(layer: LayerWeights, shifted: torch.Tensor) -> torch.Tensor:
    """The RWKV-7 feed-forward: value(relu(key(x))^2)."""
    return layer.ffn_value(torch.relu(layer.ffn_key(shifted)).square())


def token_block(
    layer: LayerWeights,
    x: torch.Tensor,
    v_first: torch.Tensor | None,
    time_mix_shift: torch.Tensor,
    channel_mix_shift: torch.Tensor,
    wkv_state: torch.Tensor,
    new_time_mix_shift: torch.Tensor | None = None,
    new_channel_mix_shift: torch.Tensor | None = None,
    new_wkv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One block for one token per sequence: x is (B, C); returns (x after the block, v_first).

    Reads this block's slices of the old state and writes them into the new one, or, without
    new ones, over the old ones in place (every slice is read before it is written). Compiled,
    it must be given no new slices that are views of the old ones: a compiled graph sees two
    tensor objects as two buffers, so only in-place updates of the same tensors stay ordered.
    """
    if new_wkv is None:
        new_time_mix_shift, new_channel_mix_shift, new_wkv = time_mix_shift, channel_mix_shift, wkv_state
    C = x.shape[-1]
    head_size = wkv_state.shape[-1]
    normed = torch.layer_norm(x, (C,), layer.ln1_weight, layer.ln1_bias)
    mixed = torch.addcmul(normed, time_mix_shift - normed, layer.token_shift_mix)
    out, v_first = time_mix(layer, mixed, v_first, wkv_state, new_wkv, C // head_size, head_size)
    new_time_mix_shift.copy_(normed)
    x = x + out

    normed = torch.layer_norm(x, (C,), layer.ln2_weight, layer.ln2_bias)
    shifted = torch.addcmul(normed, channel_mix_shift - normed, layer.channel_mix_x_k)
    new_channel_mix_shift.copy_(normed)
    return x + channel_mix(layer, shifted), v_first

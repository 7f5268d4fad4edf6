"""The time mix's elementwise work around the wkv7 recurrence, as Triton kernels.

One program per (row, head) in each kernel, since both the key normalisation and the group
norm reduce over one head's N channels:
- `wkv7_prepare_triton`: LoRA products -> the recurrence's inputs (key normalisation, the
  in-context learning rate, the value residual, the decay); 14 PyTorch kernels in one.
- `time_mix_output_triton`: the recurrence's output -> the output projection's input (group
  norm per head, the r.k bonus, the gate); 7 PyTorch kernels in one.
- `time_mix_decode_triton`: both of those and one step of the recurrence in between, for one
  token per sequence: a head's whole N x N state stays in the program, so the group norm can
  follow the state update without a second launch. This is the decode path's one kernel
  between the LoRA products and the output projection.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longyarn.kernels.rwkv7_fused.reference import DECAY_SCALE, GROUP_NORM_EPS, check_time_mix_inputs
from longyarn.kernels.triton_settings import check_triton_device


@triton.jit
def _load_float(ptr, offsets):
    return tl.load(ptr + offsets).to(tl.float32)


@triton.jit
def _prepare_head(k, v, v_first, lora_v, lora_w, lora_a, w0, a0, v0, k_k, k_a, DECAY_SCALE_: tl.constexpr,
                  HAS_VALUE_RESIDUAL: tl.constexpr):
    """(log_w, k, v, a, b) of one head from float32 vectors of its N channels."""
    kk = k * k_k
    kk = kk / tl.maximum(tl.sqrt(tl.sum(kk * kk, axis=0)), 1e-12)
    iclr = tl.sigmoid(a0 + lora_a)
    k = k * ((1.0 - k_a) + iclr * k_a)
    if HAS_VALUE_RESIDUAL:
        v = v + tl.sigmoid(v0 + lora_v) * (v_first - v)
    log_w = tl.sigmoid(w0 + lora_w) * -DECAY_SCALE_
    return log_w, k, v, -kk, kk * iclr


@triton.jit
def _output_head(o, r, k, v, gate, r_k, ln_x_weight, ln_x_bias, eps, HEAD_SIZE: tl.constexpr):
    """(group_norm(o) + sum(r * k * r_k) * v) * gate for one head, float32."""
    mean = tl.sum(o, axis=0) / HEAD_SIZE
    centred = o - mean
    variance = tl.sum(centred * centred, axis=0) / HEAD_SIZE
    normed = centred * tl.rsqrt(variance + eps) * ln_x_weight + ln_x_bias
    return (normed + tl.sum(r * k * r_k, axis=0) * v) * gate


@triton.jit
def _wkv7_prepare_kernel(
    k_ptr,
    v_ptr,
    lora_ptr,
    v_first_ptr,
    vectors_ptr,
    log_w_ptr,
    k_out_ptr,
    v_out_ptr,
    a_ptr,
    b_ptr,
    rows,
    HEADS: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HAS_VALUE_RESIDUAL: tl.constexpr,
    DECAY_SCALE_: tl.constexpr,
):
    program = tl.program_id(0).to(tl.int64)
    row, head = program // HEADS, program % HEADS
    channels = HEADS * HEAD_SIZE
    plane = rows * channels  # distance between the stacked LoRA products
    channel = head * HEAD_SIZE + tl.arange(0, HEAD_SIZE)
    offsets = row * channels + channel

    k = _load_float(k_ptr, offsets)
    v = _load_float(v_ptr, offsets)
    v_first = v
    lora_v = v
    v0 = v
    if HAS_VALUE_RESIDUAL:
        v_first = _load_float(v_first_ptr, offsets)
        lora_v = _load_float(lora_ptr, offsets)
        v0 = _load_float(vectors_ptr, 2 * channels + channel)
    log_w, k, v, a, b = _prepare_head(
        k, v, v_first, lora_v,
        _load_float(lora_ptr, plane + offsets), _load_float(lora_ptr, 2 * plane + offsets),
        _load_float(vectors_ptr, channel), _load_float(vectors_ptr, channels + channel), v0,
        _load_float(vectors_ptr, 3 * channels + channel), _load_float(vectors_ptr, 4 * channels + channel),
        DECAY_SCALE_, HAS_VALUE_RESIDUAL,
    )
    tl.store(log_w_ptr + offsets, log_w)
    tl.store(k_out_ptr + offsets, k.to(k_out_ptr.dtype.element_ty))
    tl.store(v_out_ptr + offsets, v.to(v_out_ptr.dtype.element_ty))
    tl.store(a_ptr + offsets, a.to(a_ptr.dtype.element_ty))
    tl.store(b_ptr + offsets, b.to(b_ptr.dtype.element_ty))


@triton.jit
def _time_mix_output_kernel(
    o_ptr,
    r_ptr,
    k_ptr,
    v_ptr,
    gate_ptr,
    vectors_ptr,
    out_ptr,
    eps,
    HEADS: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
):
    program = tl.program_id(0).to(tl.int64)
    row, head = program // HEADS, program % HEADS
    channels = HEADS * HEAD_SIZE
    channel = head * HEAD_SIZE + tl.arange(0, HEAD_SIZE)
    offsets = row * channels + channel
    out = _output_head(
        _load_float(o_ptr, offsets), _load_float(r_ptr, offsets), _load_float(k_ptr, offsets),
        _load_float(v_ptr, offsets), _load_float(gate_ptr, offsets),
        _load_float(vectors_ptr, 5 * channels + channel), _load_float(vectors_ptr, 6 * channels + channel),
        _load_float(vectors_ptr, 7 * channels + channel), eps, HEAD_SIZE,
    )
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty))


@triton.jit
def _time_mix_decode_kernel(
    rkv_ptr,
    lora_ptr,
    v_first_ptr,
    vectors_ptr,
    state_ptr,
    state_out_ptr,
    out_ptr,
    batch,
    eps,
    HEADS: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HAS_VALUE_RESIDUAL: tl.constexpr,
    DECAY_SCALE_: tl.constexpr,
):
    batch_head = tl.program_id(0).to(tl.int64)
    row, head = batch_head // HEADS, batch_head % HEADS
    channels = HEADS * HEAD_SIZE
    plane = batch * channels  # distance between the stacked projections
    lanes = tl.arange(0, HEAD_SIZE)
    channel = head * HEAD_SIZE + lanes
    offsets = row * channels + channel

    r = _load_float(rkv_ptr, offsets)
    v = _load_float(rkv_ptr, 2 * plane + offsets)
    v_first = v
    lora_v = v
    v0 = v
    if HAS_VALUE_RESIDUAL:
        v_first = _load_float(v_first_ptr, offsets)
        lora_v = _load_float(lora_ptr, offsets)
        v0 = _load_float(vectors_ptr, 2 * channels + channel)
    log_w, k, v, a, b = _prepare_head(
        _load_float(rkv_ptr, plane + offsets), v, v_first, lora_v,
        _load_float(lora_ptr, plane + offsets), _load_float(lora_ptr, 2 * plane + offsets),
        _load_float(vectors_ptr, channel), _load_float(vectors_ptr, channels + channel), v0,
        _load_float(vectors_ptr, 3 * channels + channel), _load_float(vectors_ptr, 4 * channels + channel),
        DECAY_SCALE_, HAS_VALUE_RESIDUAL,
    )

    # The state is [value row, key column]: S' = S diag(w) + (S a) b^T + v k^T, o = S' r.
    state_offsets = batch_head * HEAD_SIZE * HEAD_SIZE + lanes[:, None] * HEAD_SIZE + lanes[None, :]
    state = tl.load(state_ptr + state_offsets)
    state_times_a = tl.sum(state * a[None, :], axis=1)
    state = state * tl.exp(log_w)[None, :] + state_times_a[:, None] * b[None, :] + v[:, None] * k[None, :]
    o = tl.sum(state * r[None, :], axis=1)
    tl.debug_barrier()  # state_out may be state: every thread has read it before any writes
    tl.store(state_out_ptr + state_offsets, state)

    out = _output_head(
        o, r, k, v, _load_float(lora_ptr, 3 * plane + offsets),
        _load_float(vectors_ptr, 5 * channels + channel), _load_float(vectors_ptr, 6 * channels + channel),
        _load_float(vectors_ptr, 7 * channels + channel), eps, HEAD_SIZE,
    )
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty))


def _check_head_size(channels: int, heads: int) -> int:
    head_size = channels // heads
    if head_size < 16 or head_size & (head_size - 1):
        raise ValueError(f"the Triton time-mix kernels need a power-of-two head size >= 16, got {head_size}.")
    return head_size


# Fixed launch settings (the same under the interpreter). One warp covers a head's 64 channels.
# The decode kernel holds a 64 x 64 float32 state: compiled for sm_90 it takes 128 registers a
# thread at 8 warps, 225 at 4 (no spills either way); more threads hide more load latency.
_HEAD_WARPS = 1
_DECODE_WARPS = 8


def wkv7_prepare_triton(
    k: torch.Tensor,
    v: torch.Tensor,
    lora: torch.Tensor,
    v_first: torch.Tensor | None,
    vectors: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`wkv7_prepare_torch` as one Triton kernel (same contract); computes in float32."""
    check_triton_device(k)
    check_time_mix_inputs(k, lora, v_first, vectors, heads, others={"v": v})
    channels = k.shape[-1]
    head_size = _check_head_size(channels, heads)
    has_value_residual = v_first is not None
    k, v, lora, vectors = (t.contiguous() for t in (k, v, lora, vectors))
    v_first = v_first.contiguous() if has_value_residual else v  # unread without a value residual
    rows = k.numel() // channels
    log_w = torch.empty(k.shape, dtype=torch.float32, device=k.device)
    k_out, v_out, a, b = (torch.empty_like(k) for _ in range(4))
    _wkv7_prepare_kernel[(rows * heads,)](
        k, v, lora, v_first, vectors, log_w, k_out, v_out, a, b, rows,
        HEADS=heads,
        HEAD_SIZE=head_size,
        HAS_VALUE_RESIDUAL=has_value_residual,
        DECAY_SCALE_=DECAY_SCALE,
        num_warps=_HEAD_WARPS,
    )
    return log_w, k_out, v_out, a, b


def time_mix_output_triton(
    o: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gate: torch.Tensor,
    vectors: torch.Tensor,
    heads: int,
    eps: float = GROUP_NORM_EPS,
) -> torch.Tensor:
    """`time_mix_output_torch` as one Triton kernel (same contract); computes in float32."""
    check_triton_device(r)
    check_time_mix_inputs(r, None, None, vectors, heads, others={"o": o, "k": k, "v": v, "gate": gate})
    channels = r.shape[-1]
    head_size = _check_head_size(channels, heads)
    o, r, k, v, gate, vectors = (t.contiguous() for t in (o, r, k, v, gate, vectors))
    out = torch.empty_like(r)
    _time_mix_output_kernel[(r.numel() // head_size,)](
        o, r, k, v, gate, vectors, out, eps,
        HEADS=heads,
        HEAD_SIZE=head_size,
        num_warps=_HEAD_WARPS,
    )
    return out


def time_mix_decode_triton(
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
    """`time_mix_decode_torch` as one Triton kernel (same contract); computes in float32.

    `state_out` may be `state` itself: each program reads its head's state before writing it.
    """
    check_triton_device(rkv)
    if rkv.dim() != 3 or rkv.shape[0] != 3:
        raise ValueError(f"rkv must have shape (3, B, C), not {tuple(rkv.shape)}.")
    check_time_mix_inputs(rkv[0], lora, v_first, vectors, heads, others={})
    batch, channels = rkv.shape[1:]
    head_size = _check_head_size(channels, heads)
    if state.shape != (batch, heads, head_size, head_size) or state.dtype != torch.float32:
        raise ValueError(
            f"state must be float32 of shape {(batch, heads, head_size, head_size)}, "
            f"not {state.dtype} {tuple(state.shape)}."
        )
    if state_out is not None and state_out.shape != state.shape:
        raise ValueError(f"state_out has shape {tuple(state_out.shape)} but state has {tuple(state.shape)}.")
    rkv, lora, vectors, state = rkv.contiguous(), lora.contiguous(), vectors.contiguous(), state.contiguous()
    # The kernel writes a dense state; a strided state_out gets it by a copy afterwards.
    written_state = (
        state_out if state_out is not None and state_out.is_contiguous() else torch.empty_like(state)
    )
    out = torch.empty_like(rkv[0])
    _time_mix_decode_kernel[(batch * heads,)](
        rkv, lora, v_first.contiguous() if v_first is not None else rkv, vectors, state, written_state, out, batch, eps,
        HEADS=heads,
        HEAD_SIZE=head_size,
        HAS_VALUE_RESIDUAL=v_first is not None,
        DECAY_SCALE_=DECAY_SCALE,
        num_warps=_DECODE_WARPS,
    )
    if state_out is None:
        return out, written_state
    if written_state is not state_out:
        state_out.copy_(written_state)
    return out, state_out

"""Residual add + layer norm + token shift + lerps as one Triton kernel.

Before each time mix and channel mix, PyTorch runs an add, a layer norm, a subtraction, an
addcmul and a copy into the state: five kernels on one row of C numbers. At batch 1 each costs
a launch, not bandwidth, so this kernel does all of it with one program per token row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longyarn.kernels.triton_settings import check_triton_device, triton_interpreting
from longyarn.kernels.rwkv7_fused.reference import LAYER_NORM_EPS, check_token_shift_inputs


@triton.jit
def _residual_layer_norm(x_ptr, residual_ptr, row_offset, cols, mask, ln_weight, ln_bias, channels, eps,
                         HAS_RESIDUAL: tl.constexpr):
    """(x + residual rounded to x's dtype, its layer norm), both float32, for one row."""
    x = tl.load(x_ptr + row_offset + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + row_offset + cols, mask=mask, other=0.0).to(tl.float32)
        # Normalise the sum as it is stored, so that the residual stream and its norm agree.
        x = (x + residual).to(x_ptr.dtype.element_ty).to(tl.float32)
    mean = tl.sum(x, axis=0) / channels
    centred = tl.where(mask, x - mean, 0.0)
    variance = tl.sum(centred * centred, axis=0) / channels
    return x, centred * tl.rsqrt(variance + eps) * ln_weight + ln_bias


@triton.jit
def _token_shift_mix_kernel(
    x_ptr,
    residual_ptr,
    shift_ptr,
    mix_ptr,
    ln_weight_ptr,
    ln_bias_ptr,
    mixed_ptr,
    x_out_ptr,
    shift_out_ptr,
    seq_len,
    rows,
    channels,
    eps,
    MIXES: tl.constexpr,
    BLOCK_C: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # b * seq_len + t
    batch = row // seq_len
    t = row % seq_len
    cols = tl.arange(0, BLOCK_C)
    mask = cols < channels
    ln_weight = tl.load(ln_weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    ln_bias = tl.load(ln_bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)

    x, normed = _residual_layer_norm(
        x_ptr, residual_ptr, row * channels, cols, mask, ln_weight, ln_bias, channels, eps, HAS_RESIDUAL
    )
    if HAS_RESIDUAL:
        tl.store(x_out_ptr + row * channels + cols, x.to(x_out_ptr.dtype.element_ty), mask=mask)
    if t == 0:
        previous = tl.load(shift_ptr + batch * channels + cols, mask=mask, other=0.0).to(tl.float32)
    else:  # the token before, normalised again here rather than read back from another program
        _, previous = _residual_layer_norm(
            x_ptr, residual_ptr, (row - 1) * channels, cols, mask, ln_weight, ln_bias, channels, eps, HAS_RESIDUAL
        )
    delta = previous - normed
    for j in tl.static_range(MIXES):
        mix = tl.load(mix_ptr + j * channels + cols, mask=mask, other=0.0).to(tl.float32)
        mixed = normed + delta * mix
        tl.store(mixed_ptr + (j * rows + row) * channels + cols, mixed.to(mixed_ptr.dtype.element_ty), mask=mask)

    if t == seq_len - 1:
        tl.debug_barrier()  # shift_out may be shift: every thread has read it before any writes
        tl.store(shift_out_ptr + batch * channels + cols, normed.to(shift_out_ptr.dtype.element_ty), mask=mask)


def _num_warps(block: int) -> int:
    if triton_interpreting():
        return 4
    return 4 if block <= 1024 else 8


def token_shift_mix_triton(
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
    """`token_shift_mix_torch` as one Triton kernel (same contract); computes in float32."""
    check_triton_device(x)
    check_token_shift_inputs(x, shift, mix, residual)
    channels = x.shape[-1]
    batch, seq_len = x.shape[0], (x.shape[1] if x.dim() == 3 else 1)
    x, shift, mix, ln_weight, ln_bias = (t.contiguous() for t in (x, shift, mix, ln_weight, ln_bias))
    mixed = torch.empty((mix.shape[0], *x.shape), dtype=x.dtype, device=x.device)
    x_out = x
    if residual is not None:
        residual = residual.contiguous()
        x_out = torch.empty_like(x)
    # The kernel writes dense rows; a strided shift_out gets them by a copy afterwards.
    written_shift = shift_out if shift_out is not None and shift_out.is_contiguous() else torch.empty_like(shift)
    if seq_len > 1 and written_shift.data_ptr() == shift.data_ptr():
        # The last token's program writes shift_out while the first token's reads shift.
        shift = shift.clone()
    block = triton.next_power_of_2(channels)
    _token_shift_mix_kernel[(batch * seq_len,)](
        x,
        residual if residual is not None else x,
        shift,
        mix,
        ln_weight,
        ln_bias,
        mixed,
        x_out,
        written_shift,
        seq_len,
        batch * seq_len,
        channels,
        eps,
        MIXES=mix.shape[0],
        BLOCK_C=block,
        HAS_RESIDUAL=residual is not None,
        num_warps=_num_warps(block),
    )
    if shift_out is None:
        return mixed, x_out, written_shift
    if written_shift is not shift_out:
        shift_out.copy_(written_shift)
    return mixed, x_out, shift_out


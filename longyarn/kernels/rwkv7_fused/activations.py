"""The activations between an RWKV-7 layer's matrix products, one Triton kernel each.

PyTorch needs a kernel per op (relu then square; tanh and sigmoid on two slices), and at
batch 1 a kernel costs its launch whatever its size.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longyarn.kernels.triton_settings import check_triton_device

_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _tanh(x):
    # tanh(|x|) = (1 - e^-2|x|) / (1 + e^-2|x|), which cannot overflow.
    decay = tl.exp(-2.0 * tl.abs(x))
    magnitude = (1.0 - decay) / (1.0 + decay)
    return tl.where(x < 0, -magnitude, magnitude)


@triton.jit
def _lora_activation_kernel(hidden_ptr, out_ptr, plane, BLOCK: tl.constexpr):
    lora = tl.program_id(0)  # the stacked rows v, w, a, g
    offsets = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < plane
    x = tl.load(hidden_ptr + lora * plane + offsets, mask=mask, other=0.0).to(tl.float32)
    x = tl.where(lora == 1, _tanh(x), tl.where(lora == 3, tl.sigmoid(x), x))
    tl.store(out_ptr + lora * plane + offsets, x.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _relu_square_kernel(x_ptr, out_ptr, numel, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    x = tl.maximum(tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32), 0.0)
    tl.store(out_ptr + offsets, (x * x).to(out_ptr.dtype.element_ty), mask=mask)


def lora_activation_triton(hidden: torch.Tensor) -> torch.Tensor:
    """`lora_activation_torch` as one Triton kernel (same contract)."""
    check_triton_device(hidden)
    if hidden.dim() < 2 or hidden.shape[0] != 4:
        raise ValueError(f"the stacked LoRA products must have shape (4, *rows, R), not {tuple(hidden.shape)}.")
    hidden = hidden.contiguous()
    out = torch.empty_like(hidden)
    plane = hidden[0].numel()
    _lora_activation_kernel[(4, triton.cdiv(plane, _BLOCK))](hidden, out, plane, BLOCK=_BLOCK, num_warps=_NUM_WARPS)
    return out


def relu_square_triton(x: torch.Tensor) -> torch.Tensor:
    """relu(x)^2 as one Triton kernel."""
    check_triton_device(x)
    x = x.contiguous()
    out = torch.empty_like(x)
    _relu_square_kernel[(triton.cdiv(x.numel(), _BLOCK),)](x, out, x.numel(), BLOCK=_BLOCK, num_warps=_NUM_WARPS)
    return out

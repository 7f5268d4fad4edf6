"""Realistic wkv7 inputs, shaped like RWKV-7's: what the kernels see in a real model."""

from __future__ import annotations

import torch

# RWKV-7 computes log_w = -exp(-0.5) * sigmoid(x), so every log decay lies in (-0.6065, 0).
RWKV7_MIN_LOG_DECAY = -0.6065306597126334


def rwkv7_inputs(
    batch: int,
    seq_len: int,
    heads: int,
    head_size: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, ...]:
    """(r, log_w, k, v, a, b) as RWKV-7 builds them: a = -kk, b = kk * iclr, kk unit-norm per head."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, seq_len, heads, head_size)

    def normal() -> torch.Tensor:
        return torch.randn(shape, generator=generator)

    r, k, v = normal(), normal(), normal()
    kk = torch.nn.functional.normalize(normal(), dim=-1)
    in_context_learning_rate = torch.rand(shape, generator=generator)
    log_w = RWKV7_MIN_LOG_DECAY * torch.sigmoid(2.0 * normal())
    tensors = (r, log_w, k, v, -kk, kk * in_context_learning_rate)
    return tuple(x.to(device=device, dtype=dtype) for x in tensors)


def random_state(
    batch: int, heads: int, head_size: int, *, seed: int = 1, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """A float32 (B, H, N, N) state of the size a few hundred tokens of the recurrence build up."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, head_size, head_size, generator=generator).to(device)

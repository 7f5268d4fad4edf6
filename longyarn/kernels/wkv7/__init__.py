"""The RWKV-7 state recurrence ("wkv7"): one dispatch function and every form by name.

    S_t = S_{t-1} diag(exp(log_w_t)) + (S_{t-1} a_t) b_t^T + v_t k_t^T ;  o_t = S_t r_t

Forms (all share `wkv7_naive`'s signature and contract):
- `wkv7_naive`: the readable reference, one token at a time.
- `wkv7_recurrent_torch`: token by token with batched products; CPU decoding.
- `wkv7_chunk_torch`: chunked, differentiable PyTorch; CPU prefill and training.
- `wkv7_fused_recurrent`: Triton, state in registers across the time loop; GPU decoding.
- `wkv7_chunk`: Triton, chunked; GPU prefill.

Importing this package does not import Triton; the two Triton forms load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from longyarn.kernels.wkv7.chunk_torch import wkv7_chunk_torch
from longyarn.kernels.wkv7.naive import wkv7_naive
from longyarn.kernels.wkv7.recurrent_torch import wkv7_recurrent_torch

if TYPE_CHECKING:
    from longyarn.kernels.wkv7.chunk import wkv7_chunk
    from longyarn.kernels.wkv7.fused_recurrent import wkv7_fused_recurrent

__all__ = [
    "wkv7",
    "wkv7_naive",
    "wkv7_recurrent_torch",
    "wkv7_chunk_torch",
    "wkv7_fused_recurrent",
    "wkv7_chunk",
]

# Up to this many tokens the fused recurrent kernel beats the chunked one on a GPU: its cost
# grows with T one dependent step at a time, the chunked kernels pay for launches and workspaces.
GPU_RECURRENT_MAX_TOKENS = 64
# On a CPU the token loop wins only for a handful of tokens (measured on 2 cores, H=12, N=64).
CPU_RECURRENT_MAX_TOKENS = 4


def wkv7(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The wkv7 recurrence in the fastest form for the inputs' device and length.

    r, log_w, k, v, a, b: (B, T, H, N); state: (B, H, N, N) float32 or None (zeros).
    Returns (o (B, T, H, N) in r's dtype, final state (B, H, N, N) float32).
    On CUDA it runs the Triton kernels, unless autograd needs a backward (they have none), then
    `wkv7_chunk_torch`. On a CPU it runs `wkv7_recurrent_torch` for a few tokens and
    `wkv7_chunk_torch` beyond.
    """
    seq_len = r.shape[1]
    needs_backward = torch.is_grad_enabled() and any(
        x.requires_grad for x in (r, log_w, k, v, a, b, state) if x is not None
    )
    if r.is_cuda and not needs_backward:
        if seq_len <= GPU_RECURRENT_MAX_TOKENS:
            from longyarn.kernels.wkv7.fused_recurrent import wkv7_fused_recurrent

            return wkv7_fused_recurrent(r, log_w, k, v, a, b, state)
        from longyarn.kernels.wkv7.chunk import wkv7_chunk

        return wkv7_chunk(r, log_w, k, v, a, b, state)
    if seq_len <= CPU_RECURRENT_MAX_TOKENS:
        return wkv7_recurrent_torch(r, log_w, k, v, a, b, state)
    return wkv7_chunk_torch(r, log_w, k, v, a, b, state)


def __getattr__(name: str) -> Any:
    # Lazy exports of the Triton forms, so that CPU-only users never import triton.
    if name == "wkv7_fused_recurrent":
        from longyarn.kernels.wkv7.fused_recurrent import wkv7_fused_recurrent

        return wkv7_fused_recurrent
    if name == "wkv7_chunk":
        from longyarn.kernels.wkv7.chunk import wkv7_chunk

        return wkv7_chunk
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

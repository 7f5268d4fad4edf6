"""One token on a CPU: the wkv7 step written out, on as many threads as pay off.

`LocalLM` decodes a single token with PyTorch ops on a CPU (`LocalLM._forward_token`); these
are the two things that make that fast at batch 1: the recurrence step without the general
kernels' reshaping, and one thread for narrow models.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .config import RWKV7Config

# Below this width a CPU decodes faster on one core: each of a token's ~20 small products
# per layer is then shorter than waking a second core for it, and a second core that is
# busy elsewhere (the embedder, another program) stalls every one of them.
ONE_THREAD_DECODE_BELOW_WIDTH = 512


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for this thread, set for a block and then restored."""
    previous = torch.get_num_threads()
    if not threads or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def wkv7_one_token(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kk: torch.Tensor,
    iclr: torch.Tensor,
    state: torch.Tensor,
    state_out: torch.Tensor,
    head_size: int,
) -> torch.Tensor:
    """One step of the wkv7 recurrence for (B, C) inputs; writes the new state to `state_out`.

    The T = 1 case of `longyarn.kernels.wkv7.wkv7` with a = -kk, b = kk * iclr, written out because at
    one token the general kernels' reshaping costs more than this arithmetic does:
        S' = S diag(w) + (S a) b^T + v k^T = S diag(w) + (S kk)(-kk * iclr)^T + v k^T
    Returns o = S' r as (B*H, N, 1) float32.
    """
    N = head_size
    heads = r.numel() // N  # batch x heads
    if torch.compiler.is_compiling():
        return _wkv7_one_token_fused(r, log_w, k, v, kk, iclr, state, state_out, N)
    state = state.view(heads, N, N)
    state_kk = torch.bmm(state, kk.view(heads, N, 1))
    new_state = torch.baddbmm(
        state * torch.exp(log_w).view(heads, 1, N),
        torch.cat([state_kk, v.view(heads, N, 1)], dim=2),
        torch.stack([(kk * iclr).neg_().view(heads, N), k.view(heads, N)], dim=1),
        out=state_out.view(heads, N, N),
    )
    return torch.bmm(new_state, r.view(heads, N, 1))


def _wkv7_one_token_fused(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kk: torch.Tensor,
    iclr: torch.Tensor,
    state: torch.Tensor,
    state_out: torch.Tensor,
    head_size: int,
) -> torch.Tensor:
    """`wkv7_one_token` as products and sums that inductor fuses into two passes over S."""
    N = head_size
    heads = r.numel() // N
    state = state.reshape(heads, N, N)
    kk, k, r = kk.reshape(heads, 1, N), k.reshape(heads, 1, N), r.reshape(heads, 1, N)
    state_kk = (state * kk).sum(-1, keepdim=True)  # (heads, N, 1)
    new_state = (
        state * torch.exp(log_w).reshape(heads, 1, N)
        - state_kk * (kk * iclr.reshape(heads, 1, N))
        + v.reshape(heads, N, 1) * k
    )
    state_out.copy_(new_state.view_as(state_out))
    return (new_state * r).sum(-1, keepdim=True)


def decode_threads(config: RWKV7Config, device: torch.device) -> int | None:
    """Threads for one-token steps (None: torch's current setting)."""
    return 1 if device.type == "cpu" and config.n_embd < ONE_THREAD_DECODE_BELOW_WIDTH else None

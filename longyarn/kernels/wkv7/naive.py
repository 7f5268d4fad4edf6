"""The readable reference of the RWKV-7 state recurrence ("wkv7"), one token at a time.

Per head, with S the (N_v, N_k) state:
    S_t = S_{t-1} diag(exp(log_w_t)) + (S_{t-1} a_t) b_t^T + v_t k_t^T
    o_t = S_t r_t
RWKV-7 uses a = -kk and b = kk * iclr (its "generalised delta rule"), and log_w = -exp(w_raw).
"""

from __future__ import annotations

import torch


def wkv7_naive(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """r, log_w, k, v, a, b: (B, T, H, N). state: (B, H, N, N) float32 or None (zeros).

    Returns (o of shape (B, T, H, N) in the inputs' dtype, final state in float32).
    """
    B, T, H, N = r.shape
    dtype = r.dtype
    S = (
        torch.zeros(B, H, N, N, dtype=torch.float32, device=r.device)
        if state is None
        else state.to(torch.float32).clone()
    )
    r, log_w, k, v, a, b = (x.float() for x in (r, log_w, k, v, a, b))
    out = torch.empty(B, T, H, N, dtype=torch.float32, device=r.device)
    for t in range(T):
        w_t = torch.exp(log_w[:, t])  # (B, H, N)
        sa = torch.einsum("bhvk,bhk->bhv", S, a[:, t])
        S = (
            S * w_t[:, :, None, :]
            + sa[:, :, :, None] * b[:, t][:, :, None, :]
            + v[:, t][:, :, :, None] * k[:, t][:, :, None, :]
        )
        out[:, t] = torch.einsum("bhvk,bhk->bhv", S, r[:, t])
    return out.to(dtype), S

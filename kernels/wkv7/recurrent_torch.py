"""The wkv7 recurrence token by token with batched matrix products: CPU decoding.

The same arithmetic as `wkv7_naive`, written for the one-token case that a CPU decoder calls
once per layer per token: no einsum parsing, no copy of the caller's state.
"""

from __future__ import annotations

import torch

from kernels.wkv7.chunk_torch import check_wkv7_inputs


def wkv7_recurrent_torch(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The wkv7 recurrence (same contract as `wkv7_naive`), one token at a time.

    Cheapest for T of a few tokens; use `wkv7_chunk_torch` for longer sequences. The caller's
    state is never modified in place.
    """
    check_wkv7_inputs(r, log_w, k, v, a, b, state)
    batch, seq_len, heads, head_size = r.shape
    out_dtype = r.dtype
    current = (
        torch.zeros(batch, heads, head_size, head_size, dtype=torch.float32, device=r.device)
        if state is None
        else state.float()
    )
    # (B, T, H, N) -> (T, B, H, N, 1) column vectors, and row vectors for the outer products.
    r, log_w, k, v, a, b = (x.float().transpose(0, 1).unsqueeze(-1) for x in (r, log_w, k, v, a, b))
    decay = torch.exp(log_w).mT
    outputs = []
    for t in range(seq_len):
        state_times_a = current @ a[t]  # (B, H, N_v, 1)
        current = torch.baddbmm(
            (current * decay[t]).flatten(0, 1),
            torch.cat([state_times_a, v[t]], dim=-1).flatten(0, 1),
            torch.cat([b[t], k[t]], dim=-1).mT.flatten(0, 1),
        ).view_as(current)
        outputs.append(current @ r[t])
    out = torch.stack(outputs, dim=1).squeeze(-1)  # (B, T, H, N)
    return out.to(out_dtype), current

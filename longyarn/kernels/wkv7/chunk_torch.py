"""The RWKV-7 recurrence in chunks, in plain PyTorch: fast CPU prefill, and differentiable.

Within a chunk of C tokens that starts from state S_0, write g_t for the inclusive cumulative
sum of log_w inside the chunk (so exp(g_t - g_j) is the decay from just after token j to token t)
and u_t = S_{t-1} a_t for the "delta" vector. Unrolling the recurrence gives

    S_t = S_0 diag(exp(g_t)) + sum_{j<=t} (u_j b_j^T + v_j k_j^T) diag(exp(g_t - g_j))
    u_t = S_0 (a_t * exp(g_{t-1})) + sum_{j<t} [u_j (b_j . a_t) + v_j (k_j . a_t)]_decayed

so the u's solve one unit-lower-triangular system per chunk (the WY / UT-transform form of the
product of the chunk's generalised-Householder transitions). Everything that does not depend on
S_0 is computed for all chunks at once with batched matrix products; only an N x N affine map
S -> S M_c + D_c per chunk is applied sequentially.

Numerics: exp(g_t - g_j) is split into exp(g_t) * exp(-g_j). Both factors stay inside float32's
range as long as the decay across one chunk, -sum(log_w), stays below `_MAX_LOG_DECAY_PER_CHUNK`;
the chunk is shortened automatically when the inputs decay faster than that (RWKV-7's
log_w > -0.6065 allows chunks of up to 98 tokens). Products of the two factors keep float32's
relative precision, so nothing is lost where nothing overflows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# exp(60) ~ 1e26: products of such factors with O(1) inputs and their sums stay far from
# float32's limit (3e38), and exp(-60) stays a normal number.
_MAX_LOG_DECAY_PER_CHUNK = 60.0

DEFAULT_CHUNK_SIZE = 32


def check_wkv7_inputs(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None,
) -> None:
    """Raise ValueError unless the six inputs share one (B, T, H, N) shape and the state fits it."""
    shape = r.shape
    if r.dim() != 4:
        raise ValueError(f"wkv7 inputs must have shape (B, T, H, N); r has shape {tuple(shape)}.")
    for name, tensor in (("log_w", log_w), ("k", k), ("v", v), ("a", a), ("b", b)):
        if tensor.shape != shape:
            raise ValueError(
                f"wkv7 input {name} has shape {tuple(tensor.shape)} but r has {tuple(shape)}; "
                "pass all six inputs with the same (B, T, H, N) shape."
            )
    batch, _, heads, head_size = shape
    if state is not None and state.shape != (batch, heads, head_size, head_size):
        raise ValueError(
            f"wkv7 state has shape {tuple(state.shape)} but the inputs need "
            f"{(batch, heads, head_size, head_size)} (B, H, N_v, N_k)."
        )


def _safe_chunk_size(log_w: torch.Tensor, chunk_size: int) -> int:
    """The largest chunk size <= chunk_size whose worst-case decay stays within float32 range."""
    fastest_decay = float((-log_w).max()) if log_w.numel() else 0.0
    if fastest_decay * chunk_size <= _MAX_LOG_DECAY_PER_CHUNK:
        return chunk_size
    return max(1, int(_MAX_LOG_DECAY_PER_CHUNK // fastest_decay))


def _to_chunks(x: torch.Tensor, pad: int, chunk_size: int) -> torch.Tensor:
    """(B, T, H, N) -> (T_padded / C, B, H, C, N), zero-padded at the end of the time axis.

    Chunks lead so that each chunk's slice is contiguous for the sequential state pass.
    """
    batch, _, heads, head_size = x.shape
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
    return x.view(batch, -1, chunk_size, heads, head_size).permute(1, 0, 3, 2, 4).contiguous()


def wkv7_chunk_torch(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The wkv7 recurrence (same contract as `wkv7_naive`), computed chunk by chunk.

    r, log_w, k, v, a, b: (B, T, H, N); log_w must be finite and <= 0 for the usual stability.
    state: (B, H, N, N) float32 or None (zeros). Returns (o (B, T, H, N) in r's dtype,
    final state (B, H, N, N) float32). Differentiable through autograd; it always computes in
    float32, also inside an autocast region, because bf16 matrix products would lose the
    precision the triangular solve needs. Float64 inputs are computed, and their state returned,
    in float64: exactness tests use that as the truth that float32 results are measured against.
    """
    check_wkv7_inputs(r, log_w, k, v, a, b, state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    batch, seq_len, heads, head_size = r.shape
    out_dtype = r.dtype
    device = r.device
    compute = torch.float64 if r.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=device.type, enabled=False):
        r, log_w, k, v, a, b = (x.to(compute) for x in (r, log_w, k, v, a, b))
        initial_state = (
            torch.zeros(batch, heads, head_size, head_size, dtype=compute, device=device)
            if state is None
            else state.to(compute)
        )
        if seq_len == 0:
            return r.to(out_dtype), initial_state.clone()

        chunk = _safe_chunk_size(log_w.detach(), min(chunk_size, seq_len))
        pad = (-seq_len) % chunk
        # Padding tokens have log_w = 0 and zero vectors, so they leave the state unchanged.
        r, log_w, k, v, a, b = (_to_chunks(x, pad, chunk) for x in (r, log_w, k, v, a, b))

        decay_incl = log_w.cumsum(dim=-2)  # g_t
        decay_excl = decay_incl - log_w  # g_{t-1}
        decay_chunk = decay_incl[..., -1:, :]  # g_C, the decay across the whole chunk
        growth = torch.exp(-decay_incl)
        a_decayed = a * torch.exp(decay_excl)
        r_decayed = r * torch.exp(decay_incl)
        b_grown, k_grown = b * growth, k * growth
        to_chunk_end = torch.exp(decay_chunk - decay_incl)
        b_to_end, k_to_end = b * to_chunk_end, k * to_chunk_end

        ones = torch.ones(chunk, chunk, dtype=torch.bool, device=device)
        strictly_lower = torch.tril(ones, diagonal=-1)
        lower = torch.tril(ones)
        zero = torch.zeros((), dtype=compute, device=device)
        # [t, j] entries: how token j's b- and k-updates reach u_t (j < t) and o_t (j <= t).
        a_b = torch.where(strictly_lower, a_decayed @ b_grown.mT, zero)
        a_k = torch.where(strictly_lower, a_decayed @ k_grown.mT, zero)
        r_b = torch.where(lower, r_decayed @ b_grown.mT, zero)
        r_k = torch.where(lower, r_decayed @ k_grown.mT, zero)

        # u = W S_0^T + u_from_values, with (I - a_b) [W | u_from_values] = [a_decayed | a_k v].
        eye = torch.eye(chunk, dtype=compute, device=device)
        solved = torch.linalg.solve_triangular(
            eye - a_b, torch.cat([a_decayed, a_k @ v], dim=-1), upper=False, unitriangular=True
        )
        wy_keys, u_from_values = solved[..., :head_size], solved[..., head_size:]

        # o = query_to_state S_0^T + o_within_chunk; S_C = S_0 transition + state_increment.
        query_to_state = r_decayed + r_b @ wy_keys
        o_within_chunk = r_b @ u_from_values + r_k @ v
        transition = torch.diag_embed(torch.exp(decay_chunk.squeeze(-2))) + wy_keys.mT @ b_to_end
        state_increment = u_from_values.mT @ b_to_end + v.mT @ k_to_end

        chunk_states = []
        current = initial_state
        for chunk_transition, chunk_increment in zip(transition, state_increment):
            chunk_states.append(current)
            current = torch.baddbmm(
                chunk_increment.flatten(0, 1), current.flatten(0, 1), chunk_transition.flatten(0, 1)
            ).view_as(current)
        states_before = torch.stack(chunk_states)  # (chunks, B, H, N_v, N_k)
        out = query_to_state @ states_before.mT + o_within_chunk
        out = out.permute(1, 0, 3, 2, 4).reshape(batch, -1, heads, head_size)[:, :seq_len]
        return out.to(out_dtype), current

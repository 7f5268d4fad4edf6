"""The wkv7 recurrence as one fused Triton kernel that walks the sequence: decoding and short inputs.

One program owns a block of rows of one head's state (BLOCK_V value rows x N key columns) and
keeps it in registers for the whole time loop, so the state is read and written once per call,
not once per token. Each row of S_t = S_{t-1} diag(w_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T only
needs its own row of S_{t-1}, which is why blocks of rows are independent programs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longyarn.kernels.triton_settings import check_triton_device
from longyarn.kernels.wkv7.chunk_torch import check_wkv7_inputs


@triton.jit
def _wkv7_fused_recurrent_kernel(
    r_ptr,
    log_w_ptr,
    k_ptr,
    v_ptr,
    a_ptr,
    b_ptr,
    initial_state_ptr,
    out_ptr,
    final_state_ptr,
    seq_len,
    HEADS: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    BLOCK_V: tl.constexpr,
    HAS_INITIAL_STATE: tl.constexpr,
):
    batch_head = tl.program_id(0)
    value_block = tl.program_id(1)
    batch = batch_head // HEADS
    head = batch_head % HEADS

    key_offsets = tl.arange(0, HEAD_SIZE)
    value_offsets = value_block * BLOCK_V + tl.arange(0, BLOCK_V)
    state_offsets = (
        batch_head.to(tl.int64) * HEAD_SIZE * HEAD_SIZE
        + value_offsets[:, None] * HEAD_SIZE
        + key_offsets[None, :]
    )
    if HAS_INITIAL_STATE:
        state = tl.load(initial_state_ptr + state_offsets).to(tl.float32)
    else:
        state = tl.zeros([BLOCK_V, HEAD_SIZE], dtype=tl.float32)

    # Inputs are (B, T, H, N) contiguous: token t of this head starts at (b*T + t)*H*N + h*N.
    token_offset = (batch.to(tl.int64) * seq_len * HEADS + head) * HEAD_SIZE
    for _ in range(seq_len):
        r = tl.load(r_ptr + token_offset + key_offsets).to(tl.float32)
        decay = tl.exp(tl.load(log_w_ptr + token_offset + key_offsets).to(tl.float32))
        k = tl.load(k_ptr + token_offset + key_offsets).to(tl.float32)
        a = tl.load(a_ptr + token_offset + key_offsets).to(tl.float32)
        b = tl.load(b_ptr + token_offset + key_offsets).to(tl.float32)
        v = tl.load(v_ptr + token_offset + value_offsets).to(tl.float32)

        state_times_a = tl.sum(state * a[None, :], axis=1)
        state = state * decay[None, :] + state_times_a[:, None] * b[None, :] + v[:, None] * k[None, :]
        out = tl.sum(state * r[None, :], axis=1)
        tl.store(out_ptr + token_offset + value_offsets, out.to(out_ptr.dtype.element_ty))
        token_offset += HEADS * HEAD_SIZE

    tl.store(final_state_ptr + state_offsets, state)


# Rows of the state per program. Small blocks give batch-1 decoding enough programs to fill a
# GPU (H=32, N=64: 128 programs for an H100's 132 SMs); a 16 x 64 float32 block is 16 registers
# per thread at two warps.
_BLOCK_V = 16
_NUM_WARPS = 2


def wkv7_fused_recurrent(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The wkv7 recurrence (same contract as `wkv7_naive`) as one fused Triton kernel.

    r, log_w, k, v, a, b: (B, T, H, N) float32 or bf16 on a CUDA device, N a power of two >= 16.
    state: (B, H, N, N) float32 or None. Returns (o in r's dtype, final state float32).
    Accumulates in float32. Forward only: it has no backward (use `wkv7_chunk_torch` to train).
    """
    check_wkv7_inputs(r, log_w, k, v, a, b, state)
    check_triton_device(r)
    batch, seq_len, heads, head_size = r.shape
    if head_size < 16 or head_size & (head_size - 1):
        raise ValueError(f"the Triton wkv7 kernels need a power-of-two head size >= 16, got {head_size}.")
    r, log_w, k, v, a, b = (x.contiguous() for x in (r, log_w, k, v, a, b))
    out = torch.empty_like(r)
    final_state = torch.empty(batch, heads, head_size, head_size, dtype=torch.float32, device=r.device)
    initial_state = state.float().contiguous() if state is not None else final_state
    grid = (batch * heads, head_size // _BLOCK_V)
    _wkv7_fused_recurrent_kernel[grid](
        r,
        log_w,
        k,
        v,
        a,
        b,
        initial_state,
        out,
        final_state,
        seq_len,
        HEADS=heads,
        HEAD_SIZE=head_size,
        BLOCK_V=_BLOCK_V,
        HAS_INITIAL_STATE=state is not None,
        num_warps=_NUM_WARPS,
    )
    return out, final_state

"""The wkv7 recurrence as chunked Triton kernels: prefill.

The same algebra as `chunk_torch.py` (read its docstring first), split in two kernels:

1. `_wkv7_chunk_prepare_kernel`, one program per (chunk, batch*head), all chunks in parallel:
   everything that does not depend on the state entering the chunk. It forms the chunk's C x C
   interaction matrices with tl.dot, inverts the unit-lower-triangular I - L by repeated
   squaring, (I - L)^-1 = (I + L)(I + L^2)(I + L^4)... (exact because L^C = 0, and all tl.dot),
   and writes per chunk: the WY keys W and value part U_v of u = W S_0^T + U_v, the queries Q and
   the within-chunk outputs of o = Q S_0^T + O_intra, b and k decayed to the chunk's end, and
   the chunk's total decay.
2. `_wkv7_chunk_state_kernel`, one program per (batch*head, block of state rows): walks the
   chunks in order with the state block in registers, finishing each chunk's outputs and
   passing the state to the next chunk with three C-sized matrix products.

All arithmetic is float32; `dot_precision` picks the tensor-core mode (see there).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longyarn.kernels.triton_settings import check_triton_device, dot_precision, triton_interpreting
from longyarn.kernels.wkv7.chunk_torch import check_wkv7_inputs

DEFAULT_CHUNK_SIZE = 32


@triton.jit
def _wkv7_chunk_prepare_kernel(
    r_ptr,
    log_w_ptr,
    k_ptr,
    v_ptr,
    a_ptr,
    b_ptr,
    wy_keys_ptr,
    u_from_values_ptr,
    query_to_state_ptr,
    o_within_chunk_ptr,
    b_to_end_ptr,
    k_to_end_ptr,
    chunk_decay_ptr,
    seq_len,
    num_chunks,
    HEADS: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    CHUNK: tl.constexpr,
    LOG2_CHUNK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    chunk_index = tl.program_id(0)
    batch_head = tl.program_id(1)
    batch = batch_head // HEADS
    head = batch_head % HEADS

    rows = tl.arange(0, CHUNK)
    cols = tl.arange(0, HEAD_SIZE)
    token = chunk_index * CHUNK + rows
    in_sequence = (token < seq_len)[:, None]
    # Inputs are (B, T, H, N) contiguous. Tokens past the end load as zeros, with log_w = 0,
    # so they neither decay nor change the state.
    input_offsets = ((batch.to(tl.int64) * seq_len + token[:, None]) * HEADS + head) * HEAD_SIZE + cols[None, :]
    r = tl.load(r_ptr + input_offsets, mask=in_sequence, other=0.0).to(tl.float32)
    log_w = tl.load(log_w_ptr + input_offsets, mask=in_sequence, other=0.0).to(tl.float32)
    k = tl.load(k_ptr + input_offsets, mask=in_sequence, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + input_offsets, mask=in_sequence, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + input_offsets, mask=in_sequence, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + input_offsets, mask=in_sequence, other=0.0).to(tl.float32)

    decay_incl = tl.cumsum(log_w, axis=0)
    decay_chunk = tl.sum(log_w, axis=0)
    growth = tl.exp(-decay_incl)
    a_decayed = a * tl.exp(decay_incl - log_w)
    r_decayed = r * tl.exp(decay_incl)
    b_grown = b * growth
    k_grown = k * growth
    to_chunk_end = tl.exp(decay_chunk[None, :] - decay_incl)

    strictly_lower = rows[:, None] > rows[None, :]
    lower = rows[:, None] >= rows[None, :]
    a_b = tl.where(strictly_lower, tl.dot(a_decayed, tl.trans(b_grown), input_precision=PRECISION), 0.0)
    a_k = tl.where(strictly_lower, tl.dot(a_decayed, tl.trans(k_grown), input_precision=PRECISION), 0.0)
    r_b = tl.where(lower, tl.dot(r_decayed, tl.trans(b_grown), input_precision=PRECISION), 0.0)
    r_k = tl.where(lower, tl.dot(r_decayed, tl.trans(k_grown), input_precision=PRECISION), 0.0)

    # inverse = (I - a_b)^-1 = (I + L)(I + L^2)...(I + L^(C/2)), with L = a_b nilpotent.
    inverse = tl.where(rows[:, None] == rows[None, :], 1.0, 0.0) + a_b
    power = a_b
    for _ in tl.static_range(LOG2_CHUNK - 1):
        power = tl.dot(power, power, input_precision=PRECISION)
        inverse += tl.dot(inverse, power, input_precision=PRECISION)

    wy_keys = tl.dot(inverse, a_decayed, input_precision=PRECISION)
    u_from_values = tl.dot(inverse, tl.dot(a_k, v, input_precision=PRECISION), input_precision=PRECISION)
    query_to_state = r_decayed + tl.dot(r_b, wy_keys, input_precision=PRECISION)
    o_within_chunk = tl.dot(r_b, u_from_values, input_precision=PRECISION) + tl.dot(
        r_k, v, input_precision=PRECISION
    )

    # Workspaces are (B*H, num_chunks*C, N) float32, padded tokens included.
    chunk_row = batch_head.to(tl.int64) * num_chunks + chunk_index
    work_offsets = (chunk_row * CHUNK + rows[:, None]) * HEAD_SIZE + cols[None, :]
    tl.store(wy_keys_ptr + work_offsets, wy_keys)
    tl.store(u_from_values_ptr + work_offsets, u_from_values)
    tl.store(query_to_state_ptr + work_offsets, query_to_state)
    tl.store(o_within_chunk_ptr + work_offsets, o_within_chunk)
    tl.store(b_to_end_ptr + work_offsets, b * to_chunk_end)
    tl.store(k_to_end_ptr + work_offsets, k * to_chunk_end)
    tl.store(chunk_decay_ptr + chunk_row * HEAD_SIZE + cols, tl.exp(decay_chunk))


@triton.jit
def _wkv7_chunk_state_kernel(
    v_ptr,
    wy_keys_ptr,
    u_from_values_ptr,
    query_to_state_ptr,
    o_within_chunk_ptr,
    b_to_end_ptr,
    k_to_end_ptr,
    chunk_decay_ptr,
    initial_state_ptr,
    out_ptr,
    final_state_ptr,
    seq_len,
    num_chunks,
    HEADS: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_V: tl.constexpr,
    HAS_INITIAL_STATE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    batch_head = tl.program_id(0)
    value_block = tl.program_id(1)
    batch = batch_head // HEADS
    head = batch_head % HEADS

    rows = tl.arange(0, CHUNK)
    key_cols = tl.arange(0, HEAD_SIZE)
    value_cols = value_block * BLOCK_V + tl.arange(0, BLOCK_V)
    state_offsets = (
        batch_head.to(tl.int64) * HEAD_SIZE * HEAD_SIZE + value_cols[:, None] * HEAD_SIZE + key_cols[None, :]
    )
    if HAS_INITIAL_STATE:
        state = tl.load(initial_state_ptr + state_offsets).to(tl.float32)
    else:
        state = tl.zeros([BLOCK_V, HEAD_SIZE], dtype=tl.float32)

    for chunk_index in range(num_chunks):
        chunk_row = batch_head.to(tl.int64) * num_chunks + chunk_index
        work_rows = chunk_row * CHUNK + rows[:, None]
        key_offsets = work_rows * HEAD_SIZE + key_cols[None, :]
        value_offsets = work_rows * HEAD_SIZE + value_cols[None, :]
        token = chunk_index * CHUNK + rows
        in_sequence = (token < seq_len)[:, None]
        input_rows = (batch.to(tl.int64) * seq_len + token[:, None]) * HEADS + head
        input_offsets = input_rows * HEAD_SIZE + value_cols[None, :]

        query_to_state = tl.load(query_to_state_ptr + key_offsets)
        o_within_chunk = tl.load(o_within_chunk_ptr + value_offsets)
        out = tl.dot(query_to_state, tl.trans(state), input_precision=PRECISION) + o_within_chunk
        tl.store(out_ptr + input_offsets, out.to(out_ptr.dtype.element_ty), mask=in_sequence)

        wy_keys = tl.load(wy_keys_ptr + key_offsets)
        u = tl.dot(wy_keys, tl.trans(state), input_precision=PRECISION) + tl.load(u_from_values_ptr + value_offsets)
        v = tl.load(v_ptr + input_offsets, mask=in_sequence, other=0.0).to(tl.float32)
        b_to_end = tl.load(b_to_end_ptr + key_offsets)
        k_to_end = tl.load(k_to_end_ptr + key_offsets)
        chunk_decay = tl.load(chunk_decay_ptr + chunk_row * HEAD_SIZE + key_cols)
        state = (
            state * chunk_decay[None, :]
            + tl.dot(tl.trans(u), b_to_end, input_precision=PRECISION)
            + tl.dot(tl.trans(v), k_to_end, input_precision=PRECISION)
        )

    tl.store(final_state_ptr + state_offsets, state)


def _launch_settings(chunk: int) -> tuple[int, int, int]:
    """(value rows per state program, warps for the prepare kernel, warps for the state kernel)."""
    if triton_interpreting():
        return 16, 4, 4
    return 32, (4 if chunk <= 32 else 8), 4


def wkv7_chunk(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The wkv7 recurrence (same contract as `wkv7_naive`) as chunked Triton kernels.

    r, log_w, k, v, a, b: (B, T, H, N) float32 or bf16 on a CUDA device, N a power of two >= 16;
    log_w must satisfy -sum(log_w over one chunk) <= 60 (RWKV-7's log_w > -0.6065 allows chunks
    up to 64). chunk_size: 16, 32 or 64; 32 was fastest on an H100 at B=1 and close to 16 at
    B=8, while 64 spills registers with float32 inputs (4x slower there). state: (B, H, N, N)
    float32 or None.
    Returns (o in r's dtype, final state float32). Forward only: it has no backward.
    """
    check_wkv7_inputs(r, log_w, k, v, a, b, state)
    check_triton_device(r)
    batch, seq_len, heads, head_size = r.shape
    if head_size < 16 or head_size & (head_size - 1):
        raise ValueError(f"the Triton wkv7 kernels need a power-of-two head size >= 16, got {head_size}.")
    if chunk_size not in (16, 32, 64):
        raise ValueError(f"wkv7_chunk supports chunk_size 16, 32 or 64, got {chunk_size}.")
    r, log_w, k, v, a, b = (x.contiguous() for x in (r, log_w, k, v, a, b))
    out = torch.empty_like(r)
    final_state = torch.empty(batch, heads, head_size, head_size, dtype=torch.float32, device=r.device)
    if seq_len == 0:
        final_state.copy_(state if state is not None else torch.zeros_like(final_state))
        return out, final_state
    initial_state = state.float().contiguous() if state is not None else final_state

    num_chunks = triton.cdiv(seq_len, chunk_size)
    workspace_shape = (batch * heads, num_chunks * chunk_size, head_size)
    wy_keys, u_from_values, query_to_state, o_within_chunk, b_to_end, k_to_end = (
        torch.empty(workspace_shape, dtype=torch.float32, device=r.device) for _ in range(6)
    )
    chunk_decay = torch.empty(batch * heads, num_chunks, head_size, dtype=torch.float32, device=r.device)
    precision = dot_precision(r.dtype)
    block_v, prepare_warps, state_warps = _launch_settings(chunk_size)
    block_v = min(block_v, head_size)

    _wkv7_chunk_prepare_kernel[(num_chunks, batch * heads)](
        r,
        log_w,
        k,
        v,
        a,
        b,
        wy_keys,
        u_from_values,
        query_to_state,
        o_within_chunk,
        b_to_end,
        k_to_end,
        chunk_decay,
        seq_len,
        num_chunks,
        HEADS=heads,
        HEAD_SIZE=head_size,
        CHUNK=chunk_size,
        LOG2_CHUNK=chunk_size.bit_length() - 1,
        PRECISION=precision,
        num_warps=prepare_warps,
    )
    _wkv7_chunk_state_kernel[(batch * heads, head_size // block_v)](
        v,
        wy_keys,
        u_from_values,
        query_to_state,
        o_within_chunk,
        b_to_end,
        k_to_end,
        chunk_decay,
        initial_state,
        out,
        final_state,
        seq_len,
        num_chunks,
        HEADS=heads,
        HEAD_SIZE=head_size,
        CHUNK=chunk_size,
        BLOCK_V=block_v,
        HAS_INITIAL_STATE=state is not None,
        PRECISION=precision,
        num_warps=state_warps,
    )
    return out, final_state

"""The PyTorch forms of wkv7 agree with the naive reference, in values and in gradients."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from longyarn.kernels.wkv7 import wkv7, wkv7_chunk_torch, wkv7_naive, wkv7_recurrent_torch
from tests.kernels.rwkv7_inputs import rwkv7_inputs, random_state

FLOAT32_TOLERANCE = 1e-4


def max_abs_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x.float() - y.float()).abs().max().item()


@pytest.mark.parametrize("seq_len", [1, 5, 33, 100])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("chunk_size", [16, 32])
def test_chunk_torch_matches_naive(seq_len: int, with_state: bool, chunk_size: int) -> None:
    inputs = rwkv7_inputs(2, seq_len, 2, 16)
    state = random_state(2, 2, 16) if with_state else None
    expected_out, expected_state = wkv7_naive(*inputs, state=state)
    out, final_state = wkv7_chunk_torch(*inputs, state=state, chunk_size=chunk_size)
    assert out.shape == expected_out.shape and out.dtype == torch.float32
    assert max_abs_error(out, expected_out) < FLOAT32_TOLERANCE
    assert max_abs_error(final_state, expected_state) < FLOAT32_TOLERANCE


def test_chunk_torch_matches_naive_at_rwkv_head_size_over_long_input() -> None:
    inputs = rwkv7_inputs(1, 300, 2, 64, seed=3)
    expected_out, expected_state = wkv7_naive(*inputs)
    out, final_state = wkv7_chunk_torch(*inputs)
    assert max_abs_error(out, expected_out) < FLOAT32_TOLERANCE
    assert max_abs_error(final_state, expected_state) < FLOAT32_TOLERANCE


def test_chunk_torch_stays_finite_and_exact_when_decay_is_fast() -> None:
    # log_w of -4 per token decays e^-128 across a 32-token chunk: without shortening the
    # chunk, exp(-cumulative decay) would overflow float32.
    r, _, k, v, a, b = rwkv7_inputs(1, 70, 2, 16)
    log_w = torch.full_like(r, -4.0)
    expected_out, expected_state = wkv7_naive(r, log_w, k, v, a, b)
    out, final_state = wkv7_chunk_torch(r, log_w, k, v, a, b, chunk_size=32)
    assert torch.isfinite(out).all()
    assert max_abs_error(out, expected_out) < FLOAT32_TOLERANCE
    assert max_abs_error(final_state, expected_state) < FLOAT32_TOLERANCE


def test_chunk_torch_continues_from_its_own_state() -> None:
    inputs = rwkv7_inputs(2, 50, 2, 16)
    whole_out, whole_state = wkv7_chunk_torch(*inputs, chunk_size=16)
    first_out, first_state = wkv7_chunk_torch(*(x[:, :21] for x in inputs), chunk_size=16)
    second_out, second_state = wkv7_chunk_torch(*(x[:, 21:] for x in inputs), state=first_state, chunk_size=16)
    assert max_abs_error(torch.cat([first_out, second_out], dim=1), whole_out) < FLOAT32_TOLERANCE
    assert max_abs_error(second_state, whole_state) < FLOAT32_TOLERANCE


def test_chunk_torch_gradients_match_naive() -> None:
    inputs = [x.double() for x in rwkv7_inputs(1, 12, 2, 16)]
    state = random_state(1, 2, 16).double()

    def gradients(function) -> list[torch.Tensor]:
        leaves = [x.clone().requires_grad_() for x in (*inputs, state)]
        out, final_state = function(*leaves[:6], state=leaves[6])
        # Weighted sums so that every output element contributes a different gradient.
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
        state_weights = torch.linspace(1, 2, final_state.numel(), dtype=out.dtype).view_as(final_state)
        loss = loss + (final_state * state_weights).sum()
        loss.backward()
        return [leaf.grad for leaf in leaves]

    # The chunked form computes in float32, so compare at float32 accuracy.
    expected = gradients(wkv7_naive)
    actual = gradients(lambda *x, state: wkv7_chunk_torch(*x, state=state, chunk_size=8))
    for name, grad, expected_grad in zip(("r", "log_w", "k", "v", "a", "b", "state"), actual, expected):
        scale = expected_grad.abs().max().item()
        assert max_abs_error(grad, expected_grad) < 1e-4 * max(1.0, scale), name


def test_chunk_torch_keeps_input_dtype_and_float32_under_autocast() -> None:
    inputs = rwkv7_inputs(1, 40, 2, 16, dtype=torch.bfloat16)
    expected_out, expected_state = wkv7_naive(*(x.float() for x in inputs))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, final_state = wkv7_chunk_torch(*inputs)
    assert out.dtype == torch.bfloat16 and final_state.dtype == torch.float32
    # Only the bf16 rounding of the output (2^-8 relative) separates it from the reference.
    assert max_abs_error(out, expected_out) < 1e-2 * expected_out.abs().max().item()
    assert max_abs_error(final_state, expected_state) < FLOAT32_TOLERANCE


@pytest.mark.parametrize("seq_len", [1, 3])
def test_recurrent_torch_matches_naive_and_leaves_state_alone(seq_len: int) -> None:
    inputs = rwkv7_inputs(2, seq_len, 2, 32)
    state = random_state(2, 2, 32)
    state_before = state.clone()
    expected_out, expected_state = wkv7_naive(*inputs, state=state)
    out, final_state = wkv7_recurrent_torch(*inputs, state=state)
    assert max_abs_error(out, expected_out) < FLOAT32_TOLERANCE
    assert max_abs_error(final_state, expected_state) < FLOAT32_TOLERANCE
    assert torch.equal(state, state_before)


@pytest.mark.parametrize("seq_len", [1, 20])
def test_dispatch_on_cpu_matches_naive(seq_len: int) -> None:
    inputs = rwkv7_inputs(1, seq_len, 2, 16)
    expected_out, expected_state = wkv7_naive(*inputs)
    out, final_state = wkv7(*inputs)
    assert max_abs_error(out, expected_out) < FLOAT32_TOLERANCE
    assert max_abs_error(final_state, expected_state) < FLOAT32_TOLERANCE


def test_mismatched_shapes_are_refused_with_the_offending_input_named() -> None:
    r, log_w, k, v, a, b = rwkv7_inputs(1, 4, 2, 16)
    with pytest.raises(ValueError, match="input v"):
        wkv7(r, log_w, k, v[:, :3], a, b)
    with pytest.raises(ValueError, match="state"):
        wkv7(r, log_w, k, v, a, b, state=torch.zeros(1, 2, 16, 8))


def test_importing_the_kernels_does_not_import_triton() -> None:
    code = "import sys, longyarn.kernels.wkv7, longyarn.kernels.rwkv7_fused; assert 'triton' not in sys.modules, 'triton was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

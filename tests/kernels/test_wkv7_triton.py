"""The Triton wkv7 kernels agree with the naive reference (in the interpreter without a GPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from longyarn.kernels.triton_settings import triton_interpreting  # noqa: E402
from longyarn.kernels.wkv7 import wkv7_chunk, wkv7_fused_recurrent, wkv7_naive  # noqa: E402
from tests.kernels.rwkv7_inputs import random_state, rwkv7_inputs  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and not triton_interpreting() else "cpu"
FLOAT32_TOLERANCE = 1e-4
# bf16 runs compare with the float32 reference on the same bf16-rounded inputs, so the kernel's
# own error is the bf16 rounding of each output (2^-8 ~ 0.4% relative) plus, on a GPU, TF32
# matrix products (~1e-3 relative); 2% of the output's scale leaves room for both while still
# catching any real mistake, which shows up at the scale of the output itself.
BF16_TOLERANCE_OF_OUTPUT_SCALE = 2e-2

KERNELS = {
    "fused_recurrent": wkv7_fused_recurrent,
    "chunk16": lambda *x, state=None: wkv7_chunk(*x, state=state, chunk_size=16),
    "chunk32": lambda *x, state=None: wkv7_chunk(*x, state=state, chunk_size=32),
}


def max_abs_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x.float() - y.float()).abs().max().item()


@pytest.mark.parametrize("kernel_name", KERNELS)
@pytest.mark.parametrize("seq_len", [1, 5, 33])
@pytest.mark.parametrize("with_state", [False, True])
def test_float32_matches_naive(kernel_name: str, seq_len: int, with_state: bool) -> None:
    inputs = rwkv7_inputs(2, seq_len, 2, 16, device=DEVICE)
    state = random_state(2, 2, 16, device=DEVICE) if with_state else None
    expected_out, expected_state = wkv7_naive(*inputs, state=state)
    out, final_state = KERNELS[kernel_name](*inputs, state=state)
    assert out.dtype == torch.float32 and final_state.dtype == torch.float32
    assert max_abs_error(out, expected_out) < FLOAT32_TOLERANCE
    assert max_abs_error(final_state, expected_state) < FLOAT32_TOLERANCE


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_bfloat16_matches_naive_on_the_same_rounded_inputs(kernel_name: str) -> None:
    inputs = rwkv7_inputs(2, 33, 2, 32, dtype=torch.bfloat16, device=DEVICE)
    state = random_state(2, 2, 32, device=DEVICE)
    expected_out, expected_state = wkv7_naive(*(x.float() for x in inputs), state=state)
    out, final_state = KERNELS[kernel_name](*inputs, state=state)
    assert out.dtype == torch.bfloat16 and final_state.dtype == torch.float32
    output_scale = expected_out.abs().max().item()
    assert max_abs_error(out, expected_out) < BF16_TOLERANCE_OF_OUTPUT_SCALE * output_scale
    state_scale = expected_state.abs().max().item()
    assert max_abs_error(final_state, expected_state) < BF16_TOLERANCE_OF_OUTPUT_SCALE * state_scale


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_two_calls_chained_by_state_equal_one_call(kernel_name: str) -> None:
    inputs = rwkv7_inputs(1, 40, 2, 16, device=DEVICE)
    kernel = KERNELS[kernel_name]
    whole_out, whole_state = kernel(*inputs)
    first_out, first_state = kernel(*(x[:, :19] for x in inputs))
    second_out, second_state = kernel(*(x[:, 19:] for x in inputs), state=first_state)
    assert max_abs_error(torch.cat([first_out, second_out], dim=1), whole_out) < FLOAT32_TOLERANCE
    assert max_abs_error(second_state, whole_state) < FLOAT32_TOLERANCE


def test_chunk_kernel_at_rwkv_head_size_with_chunk_64() -> None:
    inputs = rwkv7_inputs(1, 70, 1, 64, device=DEVICE)
    expected_out, expected_state = wkv7_naive(*inputs)
    out, final_state = wkv7_chunk(*inputs, chunk_size=64)
    assert max_abs_error(out, expected_out) < FLOAT32_TOLERANCE
    assert max_abs_error(final_state, expected_state) < FLOAT32_TOLERANCE


def test_unsupported_head_size_is_refused() -> None:
    inputs = rwkv7_inputs(1, 3, 1, 24, device=DEVICE)
    with pytest.raises(ValueError, match="power-of-two head size"):
        wkv7_fused_recurrent(*inputs)

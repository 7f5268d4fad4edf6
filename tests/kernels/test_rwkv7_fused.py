"""The fused RWKV-7 kernels agree with their PyTorch references (in the interpreter without a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

from longyarn.kernels import rwkv7_fused  # noqa: E402
from longyarn.kernels.rwkv7_fused import reference  # noqa: E402
from longyarn.kernels.triton_settings import triton_interpreting  # noqa: E402
from longyarn.kernels.wkv7 import wkv7_fused_recurrent  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and not triton_interpreting() else "cpu"
FLOAT32_TOLERANCE = 1e-4
# bf16 runs compare with the float32 reference on the same bf16-rounded inputs. The kernels
# compute in float32 and round each output once: to nearest on a GPU (2^-8 relative), toward
# zero in Triton's interpreter (up to 2^-7); the token shift also rounds the residual sum before
# normalising it, as the model stores it. 2e-2 of the output's scale covers both roundings and
# still catches any real mistake, which shows up at the scale of the output itself.
BF16_TOLERANCE_OF_OUTPUT_SCALE = 2e-2

BATCH, SEQ_LEN, HEADS, HEAD_SIZE = 2, 3, 2, 16
CHANNELS = HEADS * HEAD_SIZE


def max_abs_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x.float() - y.float()).abs().max().item()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, name: str = "") -> None:
    if dtype == torch.float32:
        assert max_abs_error(actual, expected) < FLOAT32_TOLERANCE, name
    else:
        scale = expected.abs().max().item()
        assert max_abs_error(actual, expected) < BF16_TOLERANCE_OF_OUTPUT_SCALE * scale, name


class Inputs:
    """Random tensors on the test device, rounded to `dtype`; `.reference(t)` is t in float32."""

    def __init__(self, dtype: torch.dtype, seed: int = 0):
        self.dtype = dtype
        self.generator = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=self.generator) * scale).to(device=DEVICE, dtype=self.dtype)

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        values = torch.rand(*shape, generator=self.generator) * (high - low) + low
        return values.to(device=DEVICE, dtype=self.dtype)

    def time_mix_vectors(self) -> torch.Tensor:
        return reference.stack_time_mix_vectors(
            w0=self.normal(CHANNELS), a0=self.normal(CHANNELS), v0=self.normal(CHANNELS),
            k_k=self.uniform(CHANNELS, low=0.5, high=1.5), k_a=self.uniform(CHANNELS),
            r_k=self.normal(CHANNELS, scale=0.3), ln_x_weight=self.uniform(CHANNELS, low=0.5, high=1.5),
            ln_x_bias=self.normal(CHANNELS, scale=0.1),
        )

    @staticmethod
    def reference(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.float()


DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("seq_len", [None, SEQ_LEN], ids=["token", "sequence"])
@pytest.mark.parametrize("with_residual", [False, True], ids=["", "residual"])
@pytest.mark.parametrize("mixes", [6, 1])
def test_token_shift_mix_matches_reference(dtype, seq_len, with_residual, mixes) -> None:
    data = Inputs(dtype)
    shape = (BATCH, CHANNELS) if seq_len is None else (BATCH, seq_len, CHANNELS)
    x, shift = data.normal(*shape), data.normal(BATCH, CHANNELS)
    residual = data.normal(*shape) if with_residual else None
    mix = data.uniform(mixes, CHANNELS)
    ln_weight, ln_bias = data.uniform(CHANNELS, low=0.5, high=1.5), data.normal(CHANNELS, scale=0.1)

    mixed, x_out, shift_out = rwkv7_fused.token_shift_mix(
        x, shift, mix, ln_weight, ln_bias, residual=residual, use_triton=True
    )
    expected = reference.token_shift_mix_torch(
        *(Inputs.reference(t) for t in (x, shift, mix, ln_weight, ln_bias)), residual=Inputs.reference(residual)
    )
    assert mixed.shape == (mixes, *shape) and mixed.dtype == dtype
    for name, actual, wanted in zip(("mixed", "x", "shift"), (mixed, x_out, shift_out), expected):
        assert_close(actual, wanted, dtype, name)


@pytest.mark.parametrize("seq_len", [None, SEQ_LEN], ids=["token", "sequence"])
@pytest.mark.parametrize("strided", [False, True], ids=["dense", "strided"])
def test_token_shift_mix_can_update_the_shift_in_place(seq_len, strided) -> None:
    data = Inputs(torch.float32, seed=1)
    shape = (BATCH, CHANNELS) if seq_len is None else (BATCH, seq_len, CHANNELS)
    x, residual, shift = data.normal(*shape), data.normal(*shape), data.normal(BATCH, CHANNELS)
    if strided:  # e.g. one layer's slice of a shift stacked batch-first
        shift = torch.stack([shift, shift], dim=1)[:, 0]
    mix, ln_weight, ln_bias = data.uniform(6, CHANNELS), data.uniform(CHANNELS), data.normal(CHANNELS)
    expected_mixed, _, expected_shift = reference.token_shift_mix_torch(
        x, shift, mix, ln_weight, ln_bias, residual=residual
    )
    mixed, _, shift_out = rwkv7_fused.token_shift_mix(
        x, shift, mix, ln_weight, ln_bias, residual=residual, shift_out=shift, use_triton=True
    )
    assert shift_out is shift
    assert max_abs_error(mixed, expected_mixed) < FLOAT32_TOLERANCE
    assert max_abs_error(shift, expected_shift) < FLOAT32_TOLERANCE


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_activations_match_reference(dtype) -> None:
    data = Inputs(dtype, seed=2)
    hidden = data.normal(4, BATCH, 40, scale=3.0)  # 40: not a multiple of the block
    assert_close(
        rwkv7_fused.lora_activation(hidden, use_triton=True),
        reference.lora_activation_torch(hidden.float()), dtype, "lora",
    )
    assert_close(
        rwkv7_fused.relu_square(hidden, use_triton=True), reference.relu_square_torch(hidden.float()), dtype, "relu^2"
    )


def prepare_inputs(data: Inputs, rows: tuple[int, ...], value_residual: bool):
    k, v = data.normal(*rows, CHANNELS), data.normal(*rows, CHANNELS)
    lora = data.normal(4, *rows, CHANNELS)
    v_first = data.normal(*rows, CHANNELS) if value_residual else None
    return k, v, lora, v_first, data.time_mix_vectors()


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("value_residual", [False, True], ids=["layer0", "later_layer"])
def test_wkv7_prepare_matches_reference(dtype, value_residual) -> None:
    data = Inputs(dtype, seed=3)
    inputs = prepare_inputs(data, (BATCH, SEQ_LEN), value_residual)
    outputs = rwkv7_fused.wkv7_prepare(*inputs, HEADS, use_triton=True)
    expected = reference.wkv7_prepare_torch(*(Inputs.reference(t) for t in inputs), HEADS)
    assert outputs[0].dtype == torch.float32 and all(t.dtype == dtype for t in outputs[1:])
    for name, actual, wanted in zip(("log_w", "k", "v", "a", "b"), outputs, expected):
        assert_close(actual, wanted, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_time_mix_output_matches_reference(dtype) -> None:
    data = Inputs(dtype, seed=4)
    o, r, k, v, gate = (data.normal(BATCH, SEQ_LEN, CHANNELS) for _ in range(5))
    vectors = data.time_mix_vectors()
    out = rwkv7_fused.time_mix_output(o, r, k, v, gate, vectors, HEADS, use_triton=True)
    expected = reference.time_mix_output_torch(*(t.float() for t in (o, r, k, v, gate, vectors)), HEADS)
    assert out.dtype == dtype
    assert_close(out, expected, dtype)


def decode_inputs(data: Inputs, value_residual: bool):
    rkv = data.normal(3, BATCH, CHANNELS)
    lora = data.normal(4, BATCH, CHANNELS)
    v_first = data.normal(BATCH, CHANNELS) if value_residual else None
    state = (torch.randn(BATCH, HEADS, HEAD_SIZE, HEAD_SIZE, generator=data.generator)).to(DEVICE)
    return rkv, lora, v_first, data.time_mix_vectors(), state


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("value_residual", [False, True], ids=["layer0", "later_layer"])
def test_time_mix_decode_matches_reference(dtype, value_residual) -> None:
    data = Inputs(dtype, seed=5)
    rkv, lora, v_first, vectors, state = decode_inputs(data, value_residual)
    state_before = state.clone()
    out, new_state = rwkv7_fused.time_mix_decode(rkv, lora, v_first, vectors, state, HEADS, use_triton=True)
    expected_out, expected_state = reference.time_mix_decode_torch(
        *(Inputs.reference(t) for t in (rkv, lora, v_first, vectors)), state, HEADS
    )
    assert out.dtype == dtype and new_state.dtype == torch.float32
    assert torch.equal(state, state_before)
    assert_close(out, expected_out, dtype, "output")
    # The state is float32 in both, from the same (rounded) inputs.
    assert max_abs_error(new_state, expected_state) < FLOAT32_TOLERANCE * max(1.0, expected_state.abs().max().item())


@pytest.mark.parametrize("strided", [False, True], ids=["dense", "strided"])
def test_time_mix_decode_can_update_the_state_in_place(strided) -> None:
    rkv, lora, v_first, vectors, state = decode_inputs(Inputs(torch.float32, seed=6), value_residual=True)
    if strided:  # e.g. a state stacked with heads outermost
        state = state.transpose(0, 1).contiguous().transpose(0, 1)
    expected_out, expected_state = reference.time_mix_decode_torch(rkv, lora, v_first, vectors, state, HEADS)
    out, new_state = rwkv7_fused.time_mix_decode(
        rkv, lora, v_first, vectors, state, HEADS, state_out=state, use_triton=True
    )
    assert new_state is state
    assert max_abs_error(out, expected_out) < FLOAT32_TOLERANCE
    assert max_abs_error(state, expected_state) < FLOAT32_TOLERANCE


def test_time_mix_decode_equals_the_three_kernels_it_fuses() -> None:
    rkv, lora, v_first, vectors, state = decode_inputs(Inputs(torch.float32, seed=7), value_residual=True)
    r, k, v = rkv.unbind(0)
    log_w, k, v, a, b = rwkv7_fused.wkv7_prepare(k, v, lora, v_first, vectors, HEADS, use_triton=True)
    as_heads = (BATCH, 1, HEADS, HEAD_SIZE)
    o, expected_state = wkv7_fused_recurrent(*(t.reshape(as_heads) for t in (r, log_w, k, v, a, b)), state)
    expected_out = rwkv7_fused.time_mix_output(
        o.reshape(BATCH, CHANNELS), r, k, v, lora[3], vectors, HEADS, use_triton=True
    )
    out, new_state = rwkv7_fused.time_mix_decode(rkv, lora, v_first, vectors, state, HEADS, use_triton=True)
    assert max_abs_error(out, expected_out) < FLOAT32_TOLERANCE
    assert max_abs_error(new_state, expected_state) < FLOAT32_TOLERANCE


def test_dispatch_runs_pytorch_for_cpu_tensors_and_for_gradients() -> None:
    data = Inputs(torch.float32, seed=8)
    x, shift, mix = data.normal(BATCH, CHANNELS), data.normal(BATCH, CHANNELS), data.uniform(6, CHANNELS)
    ln_weight, ln_bias = data.uniform(CHANNELS), data.normal(CHANNELS)
    x.requires_grad_()
    mixed, _, _ = rwkv7_fused.token_shift_mix(x, shift, mix, ln_weight, ln_bias)
    mixed.sum().backward()  # only the PyTorch form has a backward
    assert x.grad is not None
    if DEVICE == "cpu":
        hidden = data.normal(4, BATCH, 8)
        assert torch.equal(rwkv7_fused.lora_activation(hidden), reference.lora_activation_torch(hidden))


def test_mismatched_shapes_are_refused_with_the_input_named() -> None:
    data = Inputs(torch.float32, seed=9)
    k, v, lora, v_first, vectors = prepare_inputs(data, (BATCH,), value_residual=True)
    for use_triton in (False, True):
        with pytest.raises(ValueError, match="v_first"):
            rwkv7_fused.wkv7_prepare(k, v, lora, v_first[:1], vectors, HEADS, use_triton=use_triton)
        with pytest.raises(ValueError, match="stack_time_mix_vectors"):
            rwkv7_fused.wkv7_prepare(k, v, lora, v_first, vectors[:5], HEADS, use_triton=use_triton)
        with pytest.raises(ValueError, match="shift"):
            rwkv7_fused.token_shift_mix(
                k, v[:1], vectors[:6], vectors[0], vectors[1], use_triton=use_triton
            )


def test_kernels_compile_for_an_h100_without_one() -> None:
    # The interpreter accepts code that Triton's compiler rejects; build the real cubins too.
    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this Triton build has no NVIDIA backend")
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.kernels.compile_for_sm90"],
        cwd=Path(__file__).resolve().parents[2], env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all kernels compiled for sm_90" in result.stdout

"""RWKV-7's elementwise work around the wkv7 recurrence, fused: one dispatch function per op.

At batch 1 a decoding step is bound by the number of kernels it launches, not by bytes: the
PyTorch form of one layer launches about 50. With these ops between batched products (r/k/v
in one `torch.bmm` over stacked weights, the four LoRAs in two, zero-padded to one width) a
layer takes 11: five of these kernels and six products (the three bmm, the output projection
and the channel mix's two).

Ops (each a Triton kernel on CUDA and its PyTorch reference in `reference.py` elsewhere):
- `token_shift_mix`: residual add + layer norm + token shift + the lerps (6 for a time mix,
  1 for a channel mix), and the new shift state.
- `lora_activation`: tanh / sigmoid between the stacked LoRA products (rows v, w, a, g).
- `wkv7_prepare`: key normalisation, in-context learning rate, value residual, decay.
- `time_mix_output`: group norm per head + the r.k bonus + the output gate.
- `time_mix_decode`: `wkv7_prepare`, one recurrence step and `time_mix_output` in one kernel.
- `relu_square`: the channel mix's activation.

Each takes `use_triton`: None picks Triton for CUDA tensors that need no gradient, True forces
it (on a CPU only under TRITON_INTERPRET=1, as the tests run it), False forces PyTorch.
Importing this package does not import Triton.
"""

from __future__ import annotations

import torch

from longyarn.kernels.rwkv7_fused.reference import (
    DECAY_SCALE,
    GROUP_NORM_EPS,
    LAYER_NORM_EPS,
    LORA_ROWS,
    TIME_MIX_VECTOR_ROWS,
    lora_activation_torch,
    relu_square_torch,
    stack_time_mix_vectors,
    time_mix_decode_torch,
    time_mix_output_torch,
    token_shift_mix_torch,
    wkv7_prepare_torch,
)

__all__ = [
    "DECAY_SCALE",
    "GROUP_NORM_EPS",
    "LAYER_NORM_EPS",
    "LORA_ROWS",
    "TIME_MIX_VECTOR_ROWS",
    "lora_activation",
    "relu_square",
    "stack_time_mix_vectors",
    "time_mix_decode",
    "time_mix_output",
    "token_shift_mix",
    "wkv7_prepare",
]


def _triton_chosen(use_triton: bool | None, *tensors: torch.Tensor | None) -> bool:
    if use_triton is not None:
        return use_triton
    present = [t for t in tensors if t is not None]
    needs_backward = torch.is_grad_enabled() and any(t.requires_grad for t in present)
    return present[0].is_cuda and not needs_backward  # the Triton forms have no backward


def token_shift_mix(
    x: torch.Tensor,
    shift: torch.Tensor,
    mix: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    *,
    residual: torch.Tensor | None = None,
    shift_out: torch.Tensor | None = None,
    eps: float = LAYER_NORM_EPS,
    use_triton: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mixed (M, *x.shape), x + residual, shift_out); see `token_shift_mix_torch`."""
    if _triton_chosen(use_triton, x, residual, shift, mix, ln_weight, ln_bias):
        from longyarn.kernels.rwkv7_fused.token_shift import token_shift_mix_triton

        return token_shift_mix_triton(
            x, shift, mix, ln_weight, ln_bias, residual=residual, shift_out=shift_out, eps=eps
        )
    return token_shift_mix_torch(x, shift, mix, ln_weight, ln_bias, residual=residual, shift_out=shift_out, eps=eps)


def lora_activation(hidden: torch.Tensor, *, use_triton: bool | None = None) -> torch.Tensor:
    """tanh on the decay row, sigmoid on the gate row of (4, *rows, R); see `lora_activation_torch`."""
    if _triton_chosen(use_triton, hidden):
        from longyarn.kernels.rwkv7_fused.activations import lora_activation_triton

        return lora_activation_triton(hidden)
    return lora_activation_torch(hidden)


def relu_square(x: torch.Tensor, *, use_triton: bool | None = None) -> torch.Tensor:
    """relu(x)^2."""
    if _triton_chosen(use_triton, x):
        from longyarn.kernels.rwkv7_fused.activations import relu_square_triton

        return relu_square_triton(x)
    return relu_square_torch(x)


def wkv7_prepare(
    k: torch.Tensor,
    v: torch.Tensor,
    lora: torch.Tensor,
    v_first: torch.Tensor | None,
    vectors: torch.Tensor,
    heads: int,
    *,
    use_triton: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log_w float32, k, v, a, b), the wkv7 inputs; see `wkv7_prepare_torch`."""
    if _triton_chosen(use_triton, k, v, lora, v_first, vectors):
        from longyarn.kernels.rwkv7_fused.time_mix import wkv7_prepare_triton

        return wkv7_prepare_triton(k, v, lora, v_first, vectors, heads)
    return wkv7_prepare_torch(k, v, lora, v_first, vectors, heads)


def time_mix_output(
    o: torch.Tensor,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gate: torch.Tensor,
    vectors: torch.Tensor,
    heads: int,
    *,
    eps: float = GROUP_NORM_EPS,
    use_triton: bool | None = None,
) -> torch.Tensor:
    """The output projection's input; see `time_mix_output_torch`."""
    if _triton_chosen(use_triton, r, o, k, v, gate, vectors):
        from longyarn.kernels.rwkv7_fused.time_mix import time_mix_output_triton

        return time_mix_output_triton(o, r, k, v, gate, vectors, heads, eps)
    return time_mix_output_torch(o, r, k, v, gate, vectors, heads, eps)


def time_mix_decode(
    rkv: torch.Tensor,
    lora: torch.Tensor,
    v_first: torch.Tensor | None,
    vectors: torch.Tensor,
    state: torch.Tensor,
    heads: int,
    *,
    state_out: torch.Tensor | None = None,
    eps: float = GROUP_NORM_EPS,
    use_triton: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output projection's input, new state) for one token; see `time_mix_decode_torch`."""
    if _triton_chosen(use_triton, rkv, lora, v_first, vectors, state):
        from longyarn.kernels.rwkv7_fused.time_mix import time_mix_decode_triton

        return time_mix_decode_triton(rkv, lora, v_first, vectors, state, heads, state_out=state_out, eps=eps)
    return time_mix_decode_torch(rkv, lora, v_first, vectors, state, heads, state_out=state_out, eps=eps)

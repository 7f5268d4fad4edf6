"""One token of one sequence through every block in a single C++ call (`longyarn::token_blocks`
in weight_rows.cpp), where every weight matrix streams through our kernel (row_kernel.py).

A half-precision 0.1B model reads 282 MB of weights a token, about 17 ms on a 2-core machine.
Compiled by inductor, the work around those products (layer norms, lerps, LoRAs, the wkv step)
is a few hundred small parallel loops, each waking the second core, plus a graph call per
block: 7 to 8 ms more a token on an AVX2 EPYC. The op does that work in plain loops on one
thread (exp, tanh and sigmoid a vector at a time), wakes torch's threads six times a block for
the products (the LoRAs stream through the same kernel) and the wkv heads, and is called once
a token: 1.23x to 1.43x the compiled step at fp16, 1.29x to 1.60x at int8 (cpu_peers.py).

It computes what `token_block` computes, in fp32, for one sequence (batch 1); several sequences
at once (versions sampled as a batch) keep the compiled step, which reads each weight once for
all of them. Turn it off with `LocalLM.native_decode = False`.

The same library runs a prefill's wkv recurrence (`wkv_sequence`): token by token, each head's
state held in the core's cache, about 9 times as fast as the chunked PyTorch form on a CPU.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import row_kernel
from .projection import Projection
from .weights import LayerWeights


def _kernel_operands(projection: Projection) -> list[torch.Tensor] | None:
    """(values, scale) of a matrix our kernel takes one row of, or None."""
    if not projection.one_row_kernel:
        return None
    return [projection.stored.values, projection.stored.scale]


def _dense(tensor: torch.Tensor | None) -> torch.Tensor:
    """A contiguous fp32 vector, or an empty one for layer 0's missing value LoRA."""
    return torch.empty(0) if tensor is None else tensor.contiguous()


def _lora(matrix: torch.Tensor | None) -> torch.Tensor | None:
    """A LoRA matrix (in, out) as the rows our kernel reads, (out, in) at fp32 or bf16; an empty
    one for layer 0's missing value LoRA; None for one the op does not take (another dtype, or
    an input width not a multiple of 16)."""
    if matrix is None:
        return torch.empty(0)
    if matrix.dtype not in (torch.float32, torch.bfloat16) or matrix.dim() != 2 or matrix.shape[0] % 16:
        return None
    return matrix.t().contiguous()  # a CPU model holds them so (see weights.py): no copy


def block_operands(layers: Sequence[LayerWeights], head_size: int) -> list[torch.Tensor] | None:
    """The op's list of tensors, 34 a block in the order of weight_rows.cpp's `Weight`, or None
    where the op does not apply: a matrix our kernel does not take (fp32 weights, a narrow
    model, no kernel on this CPU), a LoRA at another dtype, or heads not a multiple of 16 wide."""
    if head_size % 16:
        return None
    operands: list[torch.Tensor] = []
    for layer in layers:
        products = [_kernel_operands(p) for p in (layer.receptance, layer.key, layer.value, layer.output,
                                                  layer.ffn_key, layer.ffn_value)]
        loras = [_lora(m) for m in (layer.w1, layer.w2, layer.a1, layer.a2, layer.v1, layer.v2, layer.g1, layer.g2)]
        if any(p is None for p in products) or any(m is None for m in loras):
            return None
        receptance, key, value, output, ffn_key, ffn_value = products
        w1, w2, a1, a2, v1, v2, g1, g2 = loras
        operands += [
            _dense(layer.ln1_weight), _dense(layer.ln1_bias),
            layer.token_shift_mix.reshape(6, -1).contiguous(),
            *receptance, *key, *value,
            _dense(layer.w0), w1, w2, _dense(layer.a0), a1, a2, _dense(layer.v0), v1, v2, g1, g2,
            _dense(layer.k_k), _dense(layer.k_a), _dense(layer.r_k),
            *output, _dense(layer.ln_x_weight), _dense(layer.ln_x_bias),
            _dense(layer.ln2_weight), _dense(layer.ln2_bias), _dense(layer.channel_mix_x_k),
            *ffn_key, *ffn_value,
        ]
    return operands


def token_blocks(
    embedded: torch.Tensor,
    time_mix_shift: torch.Tensor,
    channel_mix_shift: torch.Tensor,
    wkv: torch.Tensor,
    operands: list[torch.Tensor],
) -> torch.Tensor:
    """The last hidden state (1, C) after one token whose embedding row is `embedded` (C,);
    updates one sequence's contiguous state tensors in place."""
    return torch.ops.longyarn.token_blocks(embedded, time_mix_shift, channel_mix_shift, wkv, operands).view(1, -1)


def runs_wkv_sequence(r: torch.Tensor, head_size: int, *states: torch.Tensor) -> bool:
    """Whether `wkv_sequence` takes this CPU fp32 sequence and its state tensors: no gradient
    wanted (the op has no backward), heads a multiple of 16 wide, the library built."""
    wants_gradient = torch.is_grad_enabled() and (r.requires_grad or any(s.requires_grad for s in states))
    return (
        r.device.type == "cpu" and r.dtype == torch.float32 and head_size % 16 == 0 and not wants_gradient
        and not torch.compiler.is_compiling() and all(s.is_contiguous() for s in states)
        and row_kernel.available()
    )


def wkv_sequence(
    r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
    state: torch.Tensor, new_state: torch.Tensor,
) -> torch.Tensor:
    """`wkv7`'s recurrence (longyarn/kernels/wkv7) over (B, T, H, N) inputs, with the decay
    `w` = exp(log_w); writes the final state into `new_state` (which may be `state`) and
    returns the output (B, T, H, N). Call only where `runs_wkv_sequence`."""
    operands = [t.contiguous() for t in (r, w, k, v, a, b)]
    return torch.ops.longyarn.wkv_sequence(*operands, state, new_state)

"""Weight-matrix products in the fastest form that gives the fp32 result on this machine.

Decoding one token reads every weight once, so on a CPU it runs at the speed of memory, not
arithmetic. BlinkDL publishes RWKV weights in bf16, and every bf16 number is also an fp16
number once scaled by a power of two into fp16's range (fp16 has more mantissa bits and,
after scaling, enough exponent range). FBGEMM's fp16-weight product (the engine behind
PyTorch's dynamic fp16 linear) reads those fp16 weights, widens them to fp32 in registers and
multiplies fp32 activations with fp32 accumulation. That is the same arithmetic as an fp32
product of the original weights, reading half the bytes, and on the 2-core AMD machine FBGEMM
is also faster than MKL per byte (about 2.5x on a 768x3072 matrix-vector product).

A matrix is packed this way only where the round trip is verified exact; otherwise (weights
trained and saved in fp32, GPUs, non-x86 builds) the product is a plain `x @ W`.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch

_FP16_TOP_EXPONENT = 14  # scale the largest magnitude into [2^14, 2^15), below fp16's max


def _scaled_exactly_into_fp16(weight: torch.Tensor) -> tuple[torch.Tensor, float] | None:
    """(weight * 2^s, 2^-s) for the s that puts weight in fp16's range, if that is exact.

    None when some value would lose bits: more mantissa than fp16 holds (weights trained and
    saved in fp32), or a range so wide that the smallest values fall below fp16's.
    """
    lowest, highest = torch.aminmax(weight)
    largest = max(-float(lowest), float(highest))
    if largest == 0.0 or not math.isfinite(largest):
        return None
    scale = 2.0 ** (_FP16_TOP_EXPONENT - math.floor(math.log2(largest)))
    scaled = weight * scale  # exact: a power of two
    if not torch.equal(scaled.to(torch.float16).to(scaled.dtype), scaled):
        return None
    return scaled, 1.0 / scale


@functools.cache
def fbgemm_fp16_available() -> bool:
    """Whether this PyTorch build can run FBGEMM's fp16-weight product (x86 builds can)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao quantization notices; the ops are core
            packed = torch.ops.quantized.linear_prepack_fp16(torch.ones(2, 3), None)
            result = torch.ops.quantized.linear_dynamic_fp16(torch.ones(1, 3), packed)
    except (RuntimeError, AttributeError, NotImplementedError):
        # A build without FBGEMM (e.g. ARM) or with another quantized engine selected.
        return False
    return torch.equal(result, torch.full((1, 2), 3.0))


class Projection:
    """y = x @ W^T for one weight matrix W of shape (out, in), as `nn.Linear` without bias."""

    __slots__ = ("_packed", "_unscale", "_weight_in_out")

    def __init__(self, weight_out_in: torch.Tensor, device: torch.device, dtype: torch.dtype):
        self._packed = None
        self._unscale = 1.0
        self._weight_in_out: torch.Tensor | None = None
        if device.type == "cpu" and dtype == torch.float32 and fbgemm_fp16_available():
            self._packed, self._unscale = _pack_fp16_exactly(weight_out_in.float())
        if self._packed is None:
            self._weight_in_out = weight_out_in.to(device=device, dtype=dtype).t().contiguous()

    @classmethod
    def of_weight_in_out(cls, weight_in_out: torch.Tensor) -> Projection:
        """y = x @ weight_in_out, sharing the tensor's memory unless it is packed for FBGEMM.

        For weights that also live in a larger stacked tensor (the batched decode products), so
        that a GPU holds them once.
        """
        if weight_in_out.device.type == "cpu" and weight_in_out.dtype == torch.float32 and fbgemm_fp16_available():
            return cls(weight_in_out.t(), weight_in_out.device, weight_in_out.dtype)
        projection = cls.__new__(cls)
        projection._packed, projection._unscale, projection._weight_in_out = None, 1.0, weight_in_out
        return projection

    @property
    def packed_fp16(self) -> bool:
        """Whether products read exact fp16 copies of the weights (FBGEMM) rather than fp32."""
        return self._packed is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            return x @ self._weight_in_out
        y = torch.ops.quantized.linear_dynamic_fp16(x, self._packed)
        return y if self._unscale == 1.0 else y.mul_(self._unscale)


def _pack_fp16_exactly(weight: torch.Tensor) -> tuple[object | None, float]:
    """FBGEMM-packed exact fp16 copy of `weight` * 2^s, and 2^-s; (None, 1) if not exact."""
    scaling = _scaled_exactly_into_fp16(weight)
    if scaling is None:
        return None, 1.0
    scaled, unscale = scaling
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao quantization notices; the op is core
        return torch.ops.quantized.linear_prepack_fp16(scaled, None), unscale

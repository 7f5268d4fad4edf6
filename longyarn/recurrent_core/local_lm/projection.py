"""Weight-matrix products, y = x @ W^T, with W kept at the precision the user chose.

Decoding one token reads every weight once, so on a CPU it runs at the speed of memory, not
arithmetic: fewer bytes per weight is faster. On a CPU the activations and the sums stay
fp32 whatever the weights are stored at (see precision.py), and a product takes one of:

- inside the compiled decode step (`compiled_decode`): `(x * W.float()).sum(-1)`, which
  inductor turns into one streaming pass over the stored weights, widened in registers;
- a few rows in eager mode: FBGEMM's fp16-weight product (fp16 weights widened to fp32 in
  registers, fp32 sums) or PyTorch's weight-only int8 product (`_weight_int8pack_mm`);
- many rows (prefill): the stored matrix widened to fp32 once per call, then an fp32 GEMM.

Why int8 decodes through inductor's fused widening and not through PyTorch's int8 kernel or
torchao: one token is a matrix-vector product, and measured on one core of an AVX-512 Xeon
(a 3072 x 768 int8 matrix, weights out of cache) the fused form reads 4.2 GB/s of weights,
`torch._weight_int8pack_mm` 1.15 GB/s and torchao 0.18's `Int8WeightOnlyConfig` 1.0 GB/s
eager and 0.9 GB/s compiled (it lands on the same int8 kernel). The eager path keeps
`_weight_int8pack_mm` for when compiling is off or failed: it needs no widened copy.

On a GPU, or for a CPU model computing in another dtype, a Projection is a plain `x @ W`.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from .precision import StoredMatrix, store_matrix

# Up to this many rows a product runs a matrix-vector kernel on the stored weights; beyond,
# widening the matrix once is cheap next to the GEMM.
FEW_ROWS = 16


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


@functools.cache
def int8_weight_product_available() -> bool:
    """Whether `torch._weight_int8pack_mm` runs here (CPU builds of PyTorch 2.3 and later)."""
    try:
        result = torch._weight_int8pack_mm(
            torch.ones(1, 32), torch.ones(2, 32, dtype=torch.int8), torch.full((2,), 0.5)
        )
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return torch.equal(result, torch.full((1, 2), 16.0))


class Projection:
    """y = x @ W^T for one weight matrix W of shape (out, in), as `nn.Linear` without bias."""

    __slots__ = ("stored", "_weight_in_out", "_fbgemm_packed")

    def __init__(
        self,
        weight_out_in: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
        precision: str = "fp32",
    ):
        """`precision` (see precision.py) applies on a CPU computing in fp32; elsewhere the
        weights are kept in `dtype`."""
        self._fbgemm_packed = None
        if device.type == "cpu" and dtype == torch.float32:
            self.stored: StoredMatrix | None = store_matrix(weight_out_in.to(device), precision)
            self._weight_in_out: torch.Tensor | None = None
        else:
            self.stored = None
            self._weight_in_out = weight_out_in.to(device=device, dtype=dtype).t().contiguous()

    @classmethod
    def of_weight_in_out(cls, weight_in_out: torch.Tensor) -> Projection:
        """y = x @ weight_in_out, sharing the tensor's memory (a view of a stacked tensor, so
        that a GPU holds the weights once)."""
        projection = cls.__new__(cls)
        projection.stored, projection._weight_in_out, projection._fbgemm_packed = None, weight_in_out, None
        return projection

    @property
    def precision(self) -> str:
        """The storage precision of the weights ("fp32", "fp16", "bf16", "int8"), or the
        dtype's name for a plain product."""
        return self.stored.precision if self.stored is not None else str(self._weight_in_out.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes a product reads from this matrix (values and scales)."""
        if self.stored is None:
            return self._weight_in_out.numel() * self._weight_in_out.element_size()
        scale = self.stored.scale
        values = self.stored.values
        return values.numel() * values.element_size() + (0 if scale is None else scale.numel() * 4)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._weight_in_out is not None:
            return x @ self._weight_in_out
        stored = self.stored
        if torch.compiler.is_compiling():
            # Fused by inductor into one pass over the stored weights: no widened copy.
            y = (x.unsqueeze(-2) * stored.values.float()).sum(-1)
            return y if stored.scale is None else y * stored.scale
        if stored.scale is None:
            return F.linear(x, stored.values)
        rows = x.numel() // x.shape[-1]
        if rows <= FEW_ROWS:
            few = self._few_rows(x)
            if few is not None:
                return few
        return F.linear(x, stored.values.float()) * stored.scale

    def _few_rows(self, x: torch.Tensor) -> torch.Tensor | None:
        """A matrix-vector kernel on the stored weights, where this build has one."""
        stored = self.stored
        if stored.values.dtype == torch.float16 and fbgemm_fp16_available():
            if self._fbgemm_packed is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch.ao quantization notices; the op is core
                    self._fbgemm_packed = torch.ops.quantized.linear_prepack_fp16(stored.values.float(), None)
            # All rows of an fp16 matrix share one power-of-two scale.
            return torch.ops.quantized.linear_dynamic_fp16(x, self._fbgemm_packed).mul_(stored.scale[0])
        if stored.values.dtype == torch.int8 and int8_weight_product_available():
            flat = x.reshape(-1, x.shape[-1]).float().contiguous()
            y = torch._weight_int8pack_mm(flat, stored.values, stored.scale)
            return y.view(*x.shape[:-1], y.shape[-1])
        return None

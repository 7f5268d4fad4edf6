"""Weight-matrix products, y = x @ W^T, with W kept at the precision the user chose.

Decoding one token reads every weight once, so on a CPU it runs at the speed of memory, not
arithmetic: fewer bytes per weight is faster. On a CPU the activations and the sums stay
fp32 whatever the weights are stored at (see precision.py), and a product takes one of:

- one row and a big half-precision or int8 matrix (the decode step of a model 512 wide or
  more), compiled or eager: our kernel (row_kernel.py, weight_rows.cpp), which streams the
  stored weights at close to the memory's speed;
- inside the compiled decode step (`compiled_decode`), one row otherwise: `(x * W.float()).sum(-1)`,
  which inductor turns into one pass over the stored weights, widened in registers;
- inside it, several rows (versions sampled as a batch) and a matrix too big for the cache:
  a kernel that reads each weight once for all the rows: an fp32 GEMM, or FBGEMM's fp16
  product, for int8 weights too (exact in fp16; the packed copy, 2 bytes a weight, is made on
  the first batch). The fused reduction would compute each row on its own, nearly a row's
  time per row;
- a few rows in eager mode: FBGEMM's fp16-weight product (fp16 weights widened to fp32 in
  registers, fp32 sums) or PyTorch's weight-only int8 product (`_weight_int8pack_mm`);
- many rows (prefill): the stored matrix widened to fp32 once per call, then an fp32 GEMM.

Why int8 decodes through our kernel and not through PyTorch's int8 kernel or torchao: one
token is a matrix-vector product, and measured on one core of an AVX-512 Xeon (a 3072 x 768
int8 matrix, weights out of cache) inductor's fused widening reads 4.2 GB/s of weights,
`torch._weight_int8pack_mm` 1.15 GB/s and torchao 0.18's `Int8WeightOnlyConfig` 1.0 GB/s
eager and 0.9 GB/s compiled (it lands on the same int8 kernel); on two cores over the 0.1B
shape's matrices our kernel reads 20 to 30 GB/s, and `_weight_int8pack_mm` about 3.
`_weight_int8pack_mm` stays for a few rows in eager mode: it needs no widened copy.

On a GPU, or for a CPU model computing in another dtype, a Projection is a plain `x @ W`.
"""

from __future__ import annotations

import functools
import warnings
import weakref

import torch
import torch.nn.functional as F

from . import row_kernel
from .precision import StoredMatrix, store_matrix
from .row_kernel import weight_row_product

# Up to this many rows a product runs a matrix-vector kernel on the stored weights; beyond,
# widening the matrix once is cheap next to the GEMM.
FEW_ROWS = 16
# A matrix smaller than this (half a core's L2 cache in fp16) stays in cache, so the compiled
# per-row reduction reads it from memory once anyway, and an opaque kernel call costs more than
# it saves; measured on the demo model (128 wide) and a 0.1B shape (768 wide).
ROWS_KERNEL_MIN_WEIGHTS = 1 << 18
# One row runs our kernel only on matrices at least this wide (see `_one_row_kernel_for`).
ONE_ROW_KERNEL_MIN_COLUMNS = 512


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


# FBGEMM's packed copies of fp16 matrices, by the address of the stored values. A compiled graph
# cannot take the packed object (a TorchScript object) as an input, so the product below is an
# opaque custom op that takes the stored values and finds their packed copy here.
_PACKED_FP16: dict[int, object] = {}


def _packed_fp16(values: torch.Tensor) -> object:
    """FBGEMM's packed copy of an fp16 matrix, made once and dropped with the matrix."""
    address = values.data_ptr()
    packed = _PACKED_FP16.get(address)
    if packed is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao quantization notices; the op is core
            packed = torch.ops.quantized.linear_prepack_fp16(values.float(), None)
        _PACKED_FP16[address] = packed
        weakref.finalize(values.untyped_storage(), _PACKED_FP16.pop, address, None)
    return packed


@torch.library.custom_op("longyarn::fp16_weight_rows", mutates_args=())
def fp16_weight_rows(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """x (rows, in) @ values (out, in, fp16)^T in fp32, reading the weights once for all rows."""
    return torch.ops.quantized.linear_dynamic_fp16(x.contiguous(), _packed_fp16(values))


@fp16_weight_rows.register_fake
def _fp16_weight_rows_shape(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], values.shape[0]))


def _rows_kernel_for(stored: StoredMatrix) -> str:
    """Which kernel multiplies several rows at once by this matrix inside a compiled graph
    (decided eagerly: the availability checks run kernels, which a trace must not)."""
    if stored.values.numel() < ROWS_KERNEL_MIN_WEIGHTS:
        return "widened"
    if stored.scale is None:
        return "fp32"
    if stored.values.dtype in (torch.float16, torch.int8) and fbgemm_fp16_available():
        # int8 values are exact in fp16; the per-row scales apply to the product.
        return "fbgemm"
    return "widened"


def _one_row_kernel_for(stored: StoredMatrix) -> bool:
    """Whether one row times this matrix runs our kernel (row_kernel.py): a half-precision or
    int8 matrix too big for the cache, in a model wide enough to stream its weights from memory
    (a narrower one, like the 4 MB demo model, stays in cache between tokens, where a kernel
    call costs more than it saves), where the kernel builds. Decided eagerly, as above."""
    return (
        stored.scale is not None
        and stored.values.numel() >= ROWS_KERNEL_MIN_WEIGHTS
        and stored.values.shape[1] >= ONE_ROW_KERNEL_MIN_COLUMNS
        and row_kernel.fits(stored.values)
        and row_kernel.available()
    )


class Projection:
    """y = x @ W^T for one weight matrix W of shape (out, in), as `nn.Linear` without bias."""

    __slots__ = ("stored", "_weight_in_out", "_rows_kernel", "_one_row_kernel")

    def __init__(
        self,
        weight_out_in: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
        precision: str = "fp32",
    ):
        """`precision` (see precision.py) applies on a CPU computing in fp32; elsewhere the
        weights are kept in `dtype`."""
        if device.type == "cpu" and dtype == torch.float32:
            self.stored: StoredMatrix | None = store_matrix(weight_out_in.to(device), precision)
            self._weight_in_out: torch.Tensor | None = None
            self._rows_kernel = _rows_kernel_for(self.stored)
            self._one_row_kernel = _one_row_kernel_for(self.stored)
        else:
            self.stored = None
            self._weight_in_out = weight_out_in.to(device=device, dtype=dtype).t().contiguous()
            self._rows_kernel = "plain"
            self._one_row_kernel = False

    @classmethod
    def of_weight_in_out(cls, weight_in_out: torch.Tensor) -> Projection:
        """y = x @ weight_in_out, sharing the tensor's memory (a view of a stacked tensor, so
        that a GPU holds the weights once)."""
        projection = cls.__new__(cls)
        projection.stored, projection._weight_in_out, projection._rows_kernel = None, weight_in_out, "plain"
        projection._one_row_kernel = False
        return projection

    @property
    def one_row_kernel(self) -> bool:
        """Whether one row times this matrix runs our kernel (row_kernel.py)."""
        return self._one_row_kernel

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
        rows = x.numel() // x.shape[-1]
        if rows == 1 and self._one_row_kernel:
            return weight_row_product(x, stored.values, stored.scale)
        if torch.compiler.is_compiling():
            if rows > 1 and self._rows_kernel != "widened":
                return self._rows_at_once(x, rows)
            # Fused by inductor into one pass over the stored weights, widened in registers.
            y = (x.unsqueeze(-2) * stored.values.float()).sum(-1)
            return y if stored.scale is None else y * stored.scale
        if stored.scale is None:
            return F.linear(x, stored.values)
        if rows <= FEW_ROWS:
            few = self._few_rows(x)
            if few is not None:
                return few
        return F.linear(x, stored.values.float()).mul_(stored.scale)  # in place: no second output

    def _rows_at_once(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """Several rows inside a compiled graph, each weight read once for all of them."""
        stored = self.stored
        flat = x.reshape(rows, x.shape[-1])
        if self._rows_kernel == "fp32":
            y = F.linear(flat, stored.values)
        else:
            y = fp16_weight_rows(flat, stored.values) * stored.scale
        return y.view(*x.shape[:-1], y.shape[-1])

    def _few_rows(self, x: torch.Tensor) -> torch.Tensor | None:
        """A matrix-vector kernel on the stored weights, where this build has one."""
        stored = self.stored
        if stored.values.dtype == torch.float16 and fbgemm_fp16_available():
            # All rows of an fp16 matrix share one power-of-two scale.
            return torch.ops.quantized.linear_dynamic_fp16(x, _packed_fp16(stored.values)).mul_(stored.scale[0])
        if stored.values.dtype == torch.int8 and int8_weight_product_available():
            flat = x.reshape(-1, x.shape[-1]).float().contiguous()
            y = torch._weight_int8pack_mm(flat, stored.values, stored.scale)
            return y.view(*x.shape[:-1], y.shape[-1])
        return None

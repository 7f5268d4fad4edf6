"""One row times a big weight matrix at half precision or int8: our C++ kernel (weight_rows.cpp).

Decoding one token is a chain of matrix-vector products, and on a CPU each runs at the speed
its weights stream from memory. Inductor's fused reduction and FBGEMM's fp16 product read a
0.1B model's matrices at about 14 GB/s on our 2-core machines; the kernel in weight_rows.cpp
(four rows at once, software prefetch) reads them at 23 to 27 GB/s, and int8 at 20 to 30.

It is built the way inductor builds its own kernels (`CppPythonBindingsCodeCache`: the same
compiler, vector flags and OpenMP runtime as torch, so no second thread pool), once, into
inductor's on-disk cache; a later start only loads it. It needs an x86 CPU with AVX2 (AVX-512
where present) and a C++ compiler. Without them the products take the other paths in
projection.py: on other CPUs silently, and after a failed build with one warning.

Inside a compiled decode step the kernel is the op `longyarn::weight_row_product`, registered
through `torch.library.Library` (about 5 microseconds a call; `torch.library.custom_op` costs
about 16, and a token makes some 70 of these calls).
"""

from __future__ import annotations

import platform
import threading
import warnings
from pathlib import Path
from typing import Callable

import torch

from .inductor_cache import use_persistent_cache

KIND_OF_DTYPE = {torch.float16: 0, torch.bfloat16: 1, torch.int8: 2}
COLUMNS_MULTIPLE = 16  # the kernel reads 16 (AVX-512) or 8 (AVX2) weights at a time
_ARGUMENT_TYPES = ["const float*", "const void*", "const float*", "float*", "int64_t", "int64_t", "int64_t"]
_SOURCE = Path(__file__).with_name("weight_rows.cpp")

_lock = threading.Lock()
_built: list[Callable | None] = []  # [kernel or None] once the build was tried
build_error: str | None = None  # why the kernel could not be built, where it could not


def fits(values: torch.Tensor) -> bool:
    """Whether the kernel takes this stored matrix (its dtype and width)."""
    return values.dtype in KIND_OF_DTYPE and values.dim() == 2 and values.shape[1] % COLUMNS_MULTIPLE == 0


def _cpu_has_the_instructions() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def kernel() -> Callable | None:
    """The built kernel, building it on first use; None where it cannot run here."""
    if _built:
        return _built[0]
    with _lock:
        if not _built:
            _built.append(_build() if _cpu_has_the_instructions() else None)
    return _built[0]


def _build() -> Callable | None:
    global build_error
    try:
        from torch._inductor.codecache import CppPythonBindingsCodeCache

        use_persistent_cache()
        built = CppPythonBindingsCodeCache.load_pybinding(
            _ARGUMENT_TYPES, _SOURCE.read_text(encoding="utf-8"), needs_vec_isa=True
        )
        _check(built)
    except Exception as error:  # no compiler, an unsupported toolchain, a wrong result
        build_error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}"
        warnings.warn(
            f"Building the CPU kernel for half-precision and int8 weights failed ({build_error}); "
            "decoding goes on with slower products. Install a C++ compiler (gcc or clang) to get it back.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return built


def _check(built: Callable) -> None:
    """The kernel's products on a small matrix of each kind, against PyTorch's."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(48, generator=generator)
    weight = torch.randn(7, 48, generator=generator)
    scale = torch.rand(7, generator=generator) + 0.5
    for dtype, kind in KIND_OF_DTYPE.items():
        values = weight.mul(40).round().to(dtype) if dtype == torch.int8 else weight.to(dtype)
        y = torch.empty(7)
        built(x, values, scale, y, 7, 48, kind)
        expected = (values.float() @ x) * scale
        if not torch.allclose(y, expected, rtol=1e-5, atol=1e-4):
            raise ArithmeticError(f"its {dtype} product is off by {float((y - expected).abs().max()):.3g}")


def _product(x: torch.Tensor, values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    out, columns = values.shape
    y = x.new_empty((*x.shape[:-1], out))
    _built[0](x.contiguous(), values, scale, y, out, columns, KIND_OF_DTYPE[values.dtype])
    return y


def weight_row_product(x: torch.Tensor, values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (..., in) holding one row, fp32, times values (out, in) scaled per output row: (..., out).
    Call only where `kernel()` is not None and `fits(values)`."""
    if torch.compiler.is_compiling():
        return torch.ops.longyarn.weight_row_product(x, values, scale)
    return _product(x, values, scale)


_library = torch.library.Library("longyarn", "FRAGMENT")
_library.define("weight_row_product(Tensor x, Tensor values, Tensor scale) -> Tensor")
_library.impl("weight_row_product", _product, "CPU")
_library.impl(
    "weight_row_product", lambda x, values, scale: x.new_empty((*x.shape[:-1], values.shape[0])), "Meta"
)

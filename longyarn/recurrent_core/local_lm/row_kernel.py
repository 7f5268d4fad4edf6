"""One row times a big weight matrix at half precision or int8: our C++ op (weight_rows.cpp).

Decoding one token is a chain of matrix-vector products, and on a CPU each runs at the speed
its weights stream from memory. Inductor's fused reduction and FBGEMM's fp16 product read a
0.1B model's matrices at about 14 GB/s on our 2-core machines; the kernel in weight_rows.cpp
(four rows at once, software prefetch) reads them at 23 to 27 GB/s, and int8 at 20 to 30.

It is a PyTorch operator, `longyarn::weight_row_product`, written in C++ and built with
PyTorch's extension builder (the system's C++ compiler and ninja, torch's OpenMP threads)
once per machine into the user's cache directory; later starts load the built library. Being
a C++ operator, a compiled decode step calls it for about 3 microseconds (one in Python costs
12, and a token makes some 70 of these calls). It needs an x86 CPU with AVX2 (AVX-512 where
present). Without one the products take the other paths in projection.py, silently; if the
build fails, with one warning.
"""

from __future__ import annotations

import os
import platform
import threading
import warnings
from pathlib import Path

import torch

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.int8)
COLUMNS_MULTIPLE = 16  # the kernel reads 16 (AVX-512) or 8 (AVX2) weights at a time
_SOURCE = Path(__file__).with_name("weight_rows.cpp")
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx2", "-mfma", "-mf16c"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
}

_lock = threading.Lock()
_built: list[bool] = []  # [whether the op is loaded and right] once the build was tried
build_error: str | None = None  # why the op could not be built, where it could not


def fits(values: torch.Tensor) -> bool:
    """Whether the kernel takes this stored matrix (its dtype and width)."""
    return values.dtype in KERNEL_DTYPES and values.dim() == 2 and values.shape[1] % COLUMNS_MULTIPLE == 0


def instruction_set() -> str | None:
    """"AVX512" or "AVX2" where the kernel can run (an x86 CPU), else None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    return capability if capability in _ISA_FLAGS else None


def available() -> bool:
    """Whether the op is loaded, building it on first use."""
    if not _built:
        with _lock:
            if not _built:
                isa = instruction_set()
                _built.append(isa is not None and _build(isa))
    return _built[0]


def _build_directory(isa: str) -> Path:
    import platformdirs

    # One build per torch version and instruction set: a shared home may serve several CPUs.
    version = torch.__version__.replace("+", "-")
    return Path(platformdirs.user_cache_dir("longyarn")) / "weight_rows" / f"torch-{version}-{isa.lower()}"


def _build(isa: str) -> bool:
    global build_error
    try:
        from torch.utils.cpp_extension import load

        if not hasattr(torch.ops.longyarn, "weight_row_product"):
            _put_ninja_on_the_path()
            directory = _build_directory(isa)
            directory.mkdir(parents=True, exist_ok=True)
            load(
                name=f"longyarn_weight_rows_{isa.lower()}",
                sources=[str(_SOURCE)],
                extra_cflags=["-O3", "-fopenmp", *_ISA_FLAGS[isa]],
                extra_ldflags=["-fopenmp"],
                build_directory=str(directory),
                is_python_module=False,
                verbose=False,
            )
            torch.library.register_fake("longyarn::weight_row_product")(_product_shape)
        _check()
    except Exception as error:  # no compiler or ninja, a read-only cache, a wrong result
        build_error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}"
        warnings.warn(
            f"Building the CPU kernel for half-precision and int8 weights failed ({build_error}); "
            "decoding goes on with slower products. Install a C++ compiler (gcc or clang) to get it back.",
            RuntimeWarning,
            stacklevel=4,
        )
        return False
    return True


def _put_ninja_on_the_path() -> None:
    """The `ninja` package's binary, for a virtualenv whose bin directory is not on PATH."""
    try:
        import ninja
    except ImportError:
        return  # torch looks for a system ninja, and says so if there is none
    paths = os.environ.get("PATH", "").split(os.pathsep)
    if ninja.BIN_DIR not in paths:
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, *paths])


def _product_shape(x: torch.Tensor, values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], values.shape[0]))


def _check() -> None:
    """The op's products on a small matrix of each kind, against PyTorch's."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, generator=generator)
    weight = torch.randn(7, 48, generator=generator)
    scale = torch.rand(7, generator=generator) + 0.5
    for dtype in KERNEL_DTYPES:
        values = weight.mul(40).round().to(dtype) if dtype == torch.int8 else weight.to(dtype)
        y = torch.ops.longyarn.weight_row_product(x, values, scale)
        expected = (x @ values.float().t()) * scale
        if not torch.allclose(y, expected, rtol=1e-5, atol=1e-4):
            raise ArithmeticError(f"its {dtype} product is off by {float((y - expected).abs().max()):.3g}")


def weight_row_product(x: torch.Tensor, values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (..., in) holding one row, fp32, times values (out, in) scaled per output row: (..., out).
    Call only where `available()` and `fits(values)`."""
    return torch.ops.longyarn.weight_row_product(x, values, scale)

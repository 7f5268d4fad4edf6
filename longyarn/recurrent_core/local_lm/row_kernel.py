"""One row times a big weight matrix at half precision or int8: our C++ op (weight_rows.cpp).

Decoding one token is a chain of matrix-vector products, and on a CPU each runs at the speed
its weights stream from memory. Inductor's fused reduction and FBGEMM's fp16 product read a
0.1B model's matrices at about 14 GB/s on our 2-core machines; the kernel in weight_rows.cpp
(four independent sums per row, software prefetch) reads them at 23 to 27 GB/s, and int8 at 20 to 30.

It is a PyTorch operator, `longyarn::weight_row_product`, written in C++ (the same library
holds `longyarn::token_blocks`, a whole decode step built on it: see native_step.py) and built with
PyTorch's extension builder (the system's C++ compiler and ninja, torch's OpenMP threads)
once per user, source, compiler and torch version into the user's cache directory (about 10
seconds); later starts load the built library. Being a C++ operator, a compiled decode step
calls it for about 3 microseconds (one in Python costs 12, and a token makes some 70 of these
calls). It needs Linux on an x86 CPU with AVX2, FMA and F16C (AVX-512 where present). Without
them the products take the other paths in projection.py, silently; if the build or its check
fails, with one warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Iterator

import torch

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.int8)
COLUMNS_MULTIPLE = 16  # the kernel reads 16 (AVX-512) or 8 (AVX2) weights at a time
_SOURCE = Path(__file__).with_name("weight_rows.cpp")
# The flags each instruction set needs, and the CPU flags (/proc/cpuinfo) that must be there.
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx2", "-mfma", "-mf16c"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
}
_CPU_FLAGS = {"AVX512": {"avx512f", "avx2", "fma", "f16c"}, "AVX2": {"avx2", "fma", "f16c"}}

_lock = threading.Lock()
_built: list[bool] = []  # [whether the op is loaded and right] once the build was tried
build_error: str | None = None  # why the op could not be built, where it could not


def fits(values: torch.Tensor) -> bool:
    """Whether the kernel takes this stored matrix (its dtype and width)."""
    return values.dtype in KERNEL_DTYPES and values.dim() == 2 and values.shape[1] % COLUMNS_MULTIPLE == 0


def instruction_set() -> str | None:
    """"AVX512" or "AVX2" where the kernel can run (Linux on an x86 CPU that has the
    instructions), else None."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    capability = torch.backends.cpu.get_cpu_capability()  # honours ATEN_CPU_CAPABILITY
    if capability not in _ISA_FLAGS:
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return None
    # A virtual CPU may report AVX2 to torch and still hide F16C, which the kernel needs.
    return capability if _CPU_FLAGS[capability] <= set(flags) else None


def available() -> bool:
    """Whether the op is loaded, building it on first use."""
    if not _built:
        with _lock:
            if not _built:
                isa = instruction_set()
                _built.append(isa is not None and _build(isa))
    return _built[0]


def _build_directory(isa: str) -> Path:
    """One build per source, flags, compiler and torch version: a user cache may serve several
    checkouts, virtualenvs and CPUs."""
    import platformdirs

    key = "\n".join([_SOURCE.read_text(encoding="utf-8"), *_ISA_FLAGS[isa], os.environ.get("CXX", ""), torch.__version__])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("longyarn")) / "weight_rows" / f"{isa.lower()}-{digest}"


def _build(isa: str) -> bool:
    global build_error
    directory = _build_directory(isa)
    try:
        if not hasattr(torch.ops.longyarn, "weight_row_product"):
            directory.mkdir(parents=True, exist_ok=True)
            with _only_builder(directory):
                _put_ninja_on_the_path()
                from torch.utils.cpp_extension import load

                # torch logs a page of advice for any compiler but g++; our warning says what to do.
                with _quiet_logger("torch.utils.cpp_extension"):
                    load(
                        name=f"longyarn_weight_rows_{isa.lower()}",
                        sources=[str(_SOURCE)],
                        extra_cflags=["-O3", "-fopenmp", *_ISA_FLAGS[isa]],
                        extra_ldflags=["-fopenmp"],
                        build_directory=str(directory),
                        is_python_module=False,
                        verbose=False,
                    )
        _check()
    except Exception as error:  # no compiler or ninja, a read-only cache, a wrong result
        build_error = str(error)
        warnings.warn(_failure_sentence(error, directory), RuntimeWarning, stacklevel=4)
        return False
    return True


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def _only_builder(directory: Path) -> Iterator[None]:
    """Hold the build directory against other longyarn processes. torch's own lock file is
    removed only by the process that made it, so one left by a build that was killed would
    make every later start wait forever: while we hold this lock, any such file is stale."""
    import fcntl  # Linux only, as the kernel is

    with open(directory / "longyarn-build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (directory / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# The build output's line that says what went wrong: a compiler error, a missing program or file.
_TELLING = re.compile(r"error|not found|no such file", re.IGNORECASE)


def _failure_sentence(error: Exception, directory: Path) -> str:
    """One sentence: what failed, that decoding goes on, and what to do."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = (line for line in lines if _TELLING.search(line) and "Error building extension" not in line)
    reason = next(telling, lines[0] if lines else type(error).__name__)
    if isinstance(error, ArithmeticError):
        fix = "it gave wrong products on this CPU, so it stays off (please report this)"
    elif isinstance(error, OSError):
        fix = f"make {directory} writable to get it"
    else:
        fix = "install g++ (or point CXX at a C++ compiler) to get it"
    return (
        f"The CPU kernel for half-precision and int8 weights was not built ({reason[:200]}), so "
        f"decoding goes on, correctly but more slowly; {fix}."
    )


def _put_ninja_on_the_path() -> None:
    """The `ninja` package's binary, for a virtualenv whose bin directory is not on PATH."""
    try:
        import ninja
    except ImportError:
        return  # torch looks for a system ninja, and says so if there is none
    paths = os.environ.get("PATH", "").split(os.pathsep)
    if ninja.BIN_DIR not in paths:
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, *paths])


def _check() -> None:
    """The op's products on a small matrix of each kind, against PyTorch's."""
    generator = torch.Generator().manual_seed(0)
    cpu32 = dict(dtype=torch.float32, device="cpu")
    x = torch.randn(1, 48, generator=generator, **cpu32)
    weight = torch.randn(7, 48, generator=generator, **cpu32)
    scale = torch.rand(7, generator=generator, **cpu32) + 0.5
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

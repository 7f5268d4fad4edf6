"""Launch settings shared by the Triton kernels, chosen at call time.

Autotuning needs a GPU, so under the Triton interpreter (TRITON_INTERPRET=1, how the tests run
the kernels on a CPU) every kernel uses one fixed configuration. Importing this module does not
import Triton.
"""

from __future__ import annotations

import os

import torch


def triton_interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter rather than compiling them."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_triton_device(tensor: torch.Tensor) -> None:
    """Raise ValueError unless Triton can run on the tensor's device (CUDA, or the interpreter)."""
    if not (tensor.is_cuda or triton_interpreting()):
        raise ValueError(
            f"Triton kernels need CUDA tensors (got {tensor.device}); move the inputs to a GPU, "
            "use the PyTorch forms on a CPU, or set TRITON_INTERPRET=1 before importing triton."
        )


def dot_precision(dtype: torch.dtype) -> str:
    """The tl.dot input precision for float32 accumulation of inputs of this dtype.

    float32 inputs get "tf32x3" (three TF32 tensor-core passes, about float32 accuracy) because
    plain TF32 keeps 10 mantissa bits, too few for 1e-4 agreement with the reference; bf16 inputs
    already carry 8 bits, so one TF32 pass loses nothing that matters. The interpreter computes
    in numpy float32 whatever is asked.
    """
    if triton_interpreting():
        return "ieee"
    return "tf32x3" if dtype == torch.float32 else "tf32"

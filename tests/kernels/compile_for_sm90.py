"""Compile the fused RWKV-7 Triton kernels for an H100 (sm_90) on a machine without a GPU.

The interpreter that runs the kernels in CI accepts some code that the compiler rejects, so this
takes each kernel through Triton's whole pipeline to a cubin (Triton ships ptxas) at the shapes
of the RWKV-7 1.5B model, and prints each kernel's registers and spills. Run it without
TRITON_INTERPRET (the interpreter replaces the kernels' compiled form):
    python -m tests.kernels.compile_for_sm90
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from longyarn.kernels.rwkv7_fused import activations, time_mix, token_shift
from longyarn.kernels.rwkv7_fused.reference import DECAY_SCALE

H100 = GPUTarget("cuda", 90, 32)


def compile_kernel(kernel, dtype: str, constants: dict, num_warps: int, types: dict | None = None) -> str:
    """Compile for sm_90; return the cubin's resource usage line. Pointers default to `dtype`."""
    types = types or {}
    signature = {
        name: "constexpr" if name in constants else types.get(name, f"*{dtype}" if name.endswith("_ptr") else "i32")
        for name in kernel.arg_names
    }
    compiled = triton.compile(ASTSource(kernel, signature, constants), target=H100, options={"num_warps": num_warps})
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as directory:
        cubin = Path(directory) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run(
            [str(cuobjdump), "--dump-resource-usage", str(cubin)], capture_output=True, text=True, check=True
        ).stdout
    return re.search(r"REG:\d+ STACK:\d+ SHARED:\d+ LOCAL:\d+", usage).group(0)


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET: the interpreter has no compiled kernels to build")
        return 2
    heads, head_size, channels = 32, 64, 2048
    decay = {"DECAY_SCALE_": DECAY_SCALE}
    for dtype in ("bf16", "fp32"):
        builds = [
            (token_shift._token_shift_mix_kernel, {"MIXES": mixes, "BLOCK_C": channels, "HAS_RESIDUAL": residual},
             token_shift._num_warps(channels), {"eps": "fp32"})
            for mixes, residual in ((6, False), (6, True), (1, True))
        ]
        for value_residual in (False, True):
            head = {"HEADS": heads, "HEAD_SIZE": head_size, "HAS_VALUE_RESIDUAL": value_residual, **decay}
            builds.append((time_mix._time_mix_decode_kernel, head, time_mix._DECODE_WARPS,
                           {"eps": "fp32", "state_ptr": "*fp32", "state_out_ptr": "*fp32"}))
            builds.append((time_mix._wkv7_prepare_kernel, head, time_mix._HEAD_WARPS, {"log_w_ptr": "*fp32"}))
        builds += [
            (time_mix._time_mix_output_kernel, {"HEADS": heads, "HEAD_SIZE": head_size}, time_mix._HEAD_WARPS,
             {"eps": "fp32"}),
            (activations._lora_activation_kernel, {"BLOCK": activations._BLOCK}, activations._NUM_WARPS, {}),
            (activations._relu_square_kernel, {"BLOCK": activations._BLOCK}, activations._NUM_WARPS, {}),
        ]
        for kernel, constants, num_warps, types in builds:
            usage = compile_kernel(kernel, dtype, constants, num_warps, types)
            shown = {k: v for k, v in constants.items() if k != "DECAY_SCALE_"}
            print(f"{kernel.__name__:<28} {dtype} {shown} warps={num_warps}: {usage}")
            if not usage.endswith("LOCAL:0"):
                print("  ^ spills registers to local memory")
                return 1
    print("all kernels compiled for sm_90")
    return 0


if __name__ == "__main__":
    sys.exit(main())

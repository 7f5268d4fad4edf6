"""The GPU benchmark script runs end to end (tiny shapes, Triton interpreter on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels_gpu.py"


def test_gpu_benchmark_smoke_run_on_cpu_completes_every_section() -> None:
    environment = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny"],
        capture_output=True, text=True, env=environment, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SECTION FAILED" not in result.stdout
    assert "6 of 6 sections ran" in result.stdout
    # 5 float32 forms + 4 bf16 Triton forms of wkv7, and the fused decode step against PyTorch's
    assert result.stdout.count("PASS") == 10
    assert "fused decode step vs the PyTorch step" in result.stdout
    decode_lines = [line for line in result.stdout.splitlines() if "tokens/s" in line and "of bound" in line]
    # section 3's two variants, then the app's own decoding (eager only: no CUDA graphs on a CPU)
    assert [line.split()[0] for line in decode_lines] == ["PyTorch", "fused", "eager"]

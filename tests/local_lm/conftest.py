"""Real RWKV-7 checkpoint files (random weights, BlinkDL names) and the reference implementation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from longyarn.training.synthetic import random_rwkv7_state_dict

# Without a GPU the fused decode tests run the Triton kernels in the interpreter, which triton
# reads when it is imported (as tests/kernels/conftest.py does).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@dataclass(frozen=True)
class CheckpointFile:
    path: Path  # a BlinkDL-style .pth
    state_dict: dict[str, torch.Tensor]
    n_layer: int
    n_embd: int
    head_size: int
    vocab_size: int


# The 0.1B layout (RWKV-7 "World" 0.1B: 12 layers, 768 wide, head 64; a small vocabulary keeps
# the file small), and a tiny 3-layer model with head size 32.
SHAPES = {
    "tiny": dict(n_layer=3, n_embd=128, head_size=32, vocab_size=300),
    "layout_0.1b": dict(n_layer=12, n_embd=768, head_size=64, vocab_size=1024),
}


@pytest.fixture(scope="session", autouse=True)
def _two_threads():
    torch.set_num_threads(2)


def _write_checkpoint(
    directory: Path, name: str, seed: int, dtype: torch.dtype = torch.bfloat16
) -> CheckpointFile:
    shape = SHAPES[name]
    # BlinkDL publishes bf16 weights; both implementations widen them to fp32 on load.
    state_dict = random_rwkv7_state_dict(**shape, seed=seed, dtype=dtype)
    path = directory / f"{name}.pth"
    torch.save(state_dict, path)
    return CheckpointFile(path=path, state_dict=state_dict, **shape)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> CheckpointFile:
    return _write_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=1)


@pytest.fixture(scope="session")
def tiny_fp32_checkpoint(tmp_path_factory) -> CheckpointFile:
    """Weights with full fp32 mantissas, as a training run might save them."""
    return _write_checkpoint(tmp_path_factory.mktemp("tiny_fp32"), "tiny", seed=3, dtype=torch.float32)


@pytest.fixture(scope="session")
def checkpoint_01b_layout(tmp_path_factory) -> CheckpointFile:
    return _write_checkpoint(tmp_path_factory.mktemp("layout_01b"), "layout_0.1b", seed=2)


@pytest.fixture(scope="session")
def tiny_lm(tiny_checkpoint):
    from longyarn.recurrent_core.local_lm import LocalLM

    return LocalLM.load(tiny_checkpoint.path)


@pytest.fixture(scope="session")
def reference_rwkv():
    """The `rwkv` package's RWKV_x070 class, imported the way its users must (env first)."""
    os.environ["RWKV_V7_ON"] = "1"
    os.environ["RWKV_JIT_ON"] = "1"
    os.environ["RWKV_CUDA_ON"] = "0"
    from rwkv import model as reference_module

    if not hasattr(reference_module, "RWKV_x070"):
        pytest.fail("rwkv.model was imported before RWKV_V7_ON=1 was set; run these tests alone.")
    return reference_module.RWKV

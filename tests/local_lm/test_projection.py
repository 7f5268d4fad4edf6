"""Weight products at each storage precision give the product of the weights they stand for."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longyarn.recurrent_core.local_lm import row_kernel
from longyarn.recurrent_core.local_lm.precision import HUGE_PAGE_BYTES, choose_half_precision, fp16_scale, store_matrix
from longyarn.recurrent_core.local_lm.projection import Projection

CPU = torch.device("cpu")


def _product_error(projection: Projection, weight: torch.Tensor, x: torch.Tensor) -> float:
    exact = x.double() @ weight.double().t()
    return float((projection(x).double() - exact).abs().max() / exact.abs().max())


@pytest.mark.parametrize("rows", [1, 5, 40], ids=["one row", "a few rows", "many rows"])
def test_bf16_weights_at_half_precision_give_the_fp32_product(rows):
    generator = torch.Generator().manual_seed(0)
    # A realistic spread of magnitudes, tiny values included: fp16 holds them after scaling.
    weight = (torch.randn(300, 200, generator=generator) * 0.03).bfloat16().float()
    weight[0, :3] = torch.tensor([1e-7, -3e-6, 0.0]).bfloat16().float()
    assert choose_half_precision([weight]) == "fp16"
    projection = Projection(weight, CPU, torch.float32, "fp16")
    assert store_matrix(weight, "fp16").dequantized().equal(weight)  # stored exactly
    x = torch.randn(rows, 200, generator=generator)
    assert _product_error(projection, weight, x) < 1e-6
    assert projection(x.view(rows, 1, 200)).shape == (rows, 1, 300)


def test_weights_too_large_for_fp16_are_scaled_into_its_range_exactly():
    weight = torch.tensor([[70000.0, -1.5], [3.0, 0.25]]).bfloat16().float()  # 70000 > fp16's max
    stored = store_matrix(weight, "fp16")
    assert stored.values.dtype == torch.float16 and torch.isfinite(stored.values.float()).all()
    assert stored.dequantized().equal(weight)


@pytest.mark.parametrize(
    "make_weight, expected",
    [
        (lambda g: torch.randn(64, 32, generator=g) * 0.03, "fp16"),  # fp32 mantissas, normal range
        (lambda g: torch.cat([torch.full((1, 32), 1e-30), torch.ones(63, 32)]).bfloat16().float(), "bf16"),
    ],
    ids=["fp32 mantissas: fp16, the finer of the two", "a range too wide for fp16: bf16, exact"],
)
def test_the_half_precision_is_the_one_that_holds_the_weights(make_weight, expected):
    generator = torch.Generator().manual_seed(1)
    weight = make_weight(generator)
    assert choose_half_precision([weight]) == expected
    projection = Projection(weight, CPU, torch.float32, expected)
    x = torch.randn(3, 32, generator=generator)
    assert _product_error(projection, weight, x) < 2**-10


@pytest.mark.parametrize("rows", [1, 40])
def test_int8_weights_keep_one_scale_per_output_row(rows):
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(96, 64, generator=generator) * torch.logspace(-3, 1, 96).unsqueeze(1)
    stored = store_matrix(weight, "int8")
    # Each row is within half a step of its own largest magnitude / 127, tiny rows included.
    step = weight.abs().amax(dim=1, keepdim=True) / 127
    assert ((stored.dequantized() - weight).abs() <= step / 2 + 1e-7).all()
    projection = Projection(weight, CPU, torch.float32, "int8")
    x = torch.randn(rows, 64, generator=generator)
    exact = x @ stored.dequantized().t()
    torch.testing.assert_close(projection(x), exact, rtol=1e-2, atol=1e-4)


needs_row_kernel = pytest.mark.skipif(
    row_kernel.instruction_set() is None or shutil.which(os.environ.get("CXX", "c++")) is None,
    reason="our one-row kernel needs Linux on an x86 CPU with AVX2, and a C++ compiler",
)


def _wide_matrix(generator: torch.Generator) -> torch.Tensor:
    # 515 x 512: big enough for the kernel; 515 rows leave a last group of three.
    return (torch.randn(515, 512, generator=generator) * 0.03).bfloat16().float()


@needs_row_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_one_row_times_a_big_matrix_runs_our_kernel_and_gives_the_stored_weights_product(precision, threads):
    generator = torch.Generator().manual_seed(5)
    weight = _wide_matrix(generator)
    projection = Projection(weight, CPU, torch.float32, precision)
    assert projection._one_row_kernel
    x = torch.randn(1, 1, 512, generator=generator)
    exact = x.double() @ store_matrix(weight, precision).dequantized().double().t()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = projection(x)
    finally:
        torch.set_num_threads(previous)
    assert y.shape == (1, 1, 515) and y.dtype == torch.float32
    assert float((y.double() - exact).abs().max() / exact.abs().max()) < 1e-6


@needs_row_kernel
@pytest.mark.parametrize(
    "x, values, scale",
    [
        (torch.ones(2, 512), torch.ones(8, 512, dtype=torch.float16), torch.ones(8)),
        (torch.ones(1, 500), torch.ones(8, 500, dtype=torch.float16), torch.ones(8)),
        (torch.ones(1, 512), torch.ones(8, 512, dtype=torch.float16), torch.ones(7)),
        (torch.ones(1, 512), torch.ones(8, 512), torch.ones(8)),
        (torch.ones(1, 512, dtype=torch.float64), torch.ones(8, 512, dtype=torch.int8), torch.ones(8)),
    ],
    ids=["two rows", "a width not a multiple of 16", "a scale too short", "fp32 weights", "an fp64 row"],
)
def test_the_kernel_refuses_what_it_cannot_multiply(x, values, scale):
    assert row_kernel.available()
    with pytest.raises(RuntimeError, match="weight_row_product takes"):
        row_kernel.weight_row_product(x, values, scale)


def test_the_demo_models_narrow_matrices_keep_the_fused_products():
    # 4096 x 128, the demo model's head: it stays in cache, where a kernel call costs more.
    weight = torch.randn(4096, 128) * 0.03
    assert not Projection(weight, CPU, torch.float32, "fp16")._one_row_kernel


# Run in a fresh process, as a user's first start: its own cache, nothing built yet.
_FRESH_START = """
import warnings, torch
from longyarn.recurrent_core.local_lm import row_kernel
from longyarn.recurrent_core.local_lm.projection import Projection
generator = torch.Generator().manual_seed(6)
weight = (torch.randn(515, 512, generator=generator) * 0.03).bfloat16().float()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    projections = [Projection(weight, torch.device("cpu"), torch.float32, p) for p in ("fp16", "bf16", "int8")]
x = torch.randn(1, 512, generator=generator)
worst = max(float((p(x) - x @ p.stored.dequantized().t()).abs().max()) for p in projections)
print(row_kernel.instruction_set(), [p._one_row_kernel for p in projections].count(True), worst < 1e-5)
for warning in caught:
    print("WARNING", warning.message)
"""


def _fresh_start(tmp_path, **environment: str) -> list[str]:
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), **environment}
    result = subprocess.run([sys.executable, "-c", _FRESH_START], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


@needs_row_kernel
def test_without_a_compiler_big_products_warn_once_and_stay_right(tmp_path):
    lines = _fresh_start(tmp_path, CXX="no-such-c++-compiler")
    assert lines[0].split()[1:] == ["0", "True"], lines
    warnings_given = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings_given) == 1, lines
    assert "was not built" in warnings_given[0] and "correctly but more slowly" in warnings_given[0]
    assert "install g++" in warnings_given[0] and warnings_given[0].count(". ") == 0  # one sentence


@needs_row_kernel
def test_a_cpu_with_avx2_alone_gets_the_avx2_kernel_right(tmp_path):
    lines = _fresh_start(tmp_path, ATEN_CPU_CAPABILITY="avx2")
    assert lines == ["AVX2 3 True"]


@needs_row_kernel
def test_a_build_killed_midway_does_not_stop_the_next_start(tmp_path):
    # torch's lock file, left behind by a build that was killed, must not make the next wait.
    directory = Path(tmp_path) / "longyarn" / "weight_rows"
    isa = row_kernel.instruction_set()
    script = f"import os; os.environ['XDG_CACHE_HOME'] = {str(tmp_path)!r}\n" + (
        "from longyarn.recurrent_core.local_lm import row_kernel; "
        f"d = row_kernel._build_directory({isa!r}); d.mkdir(parents=True); (d / 'lock').write_text('')"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert [path.name for path in directory.glob("*/lock")] == ["lock"]
    lines = _fresh_start(tmp_path)
    assert lines[0].split()[1:] == ["3", "True"], lines


def test_a_matrix_moved_to_huge_pages_keeps_its_values_after_the_original_is_gone():
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(2048, 512, generator=generator)  # 4 MB at fp32, 2 MB at fp16
    expected = {"fp32": weight.clone(), "fp16": (weight * fp16_scale(weight)).half().float() / fp16_scale(weight)}
    stored = {precision: store_matrix(weight, precision) for precision in ("fp32", "fp16")}
    del weight
    gc.collect()
    for precision, matrix in stored.items():
        assert matrix.values.is_contiguous() and matrix.values.shape == (2048, 512)
        if sys.platform.startswith("linux"):  # in a mapping of its own, not torch's allocator
            assert not matrix.values.untyped_storage().resizable()
            assert matrix.values.data_ptr() % HUGE_PAGE_BYTES == 0
        assert matrix.dequantized().equal(expected[precision])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="huge pages are Linux's")
def test_a_loaded_model_keeps_every_matrix_in_shared_huge_pages_with_its_values():
    from longyarn.recurrent_core.local_lm import LocalLM
    from longyarn.training.synthetic import random_rwkv7_state_dict

    # 768 wide: the r/k/v/output matrices are 1.2 MB at fp16, under one huge page each.
    state_dict = random_rwkv7_state_dict(n_layer=2, n_embd=768, head_size=64, vocab_size=2048, seed=4,
                                         dtype=torch.bfloat16)
    model = LocalLM.from_state_dict(state_dict, weights="fp16")
    del state_dict
    gc.collect()
    layer = model._layers[1]
    matrices = [p.stored.values for p in (layer.receptance, layer.key, layer.value, layer.output,
                                          layer.ffn_key, layer.ffn_value, model._head)]
    loras = [layer.w1, layer.w2, layer.g1, layer.g2]
    mappings = set()
    for values in matrices + loras:
        assert not values.untyped_storage().resizable(), "in an arena mapping, not torch's allocator"
        assert values.data_ptr() % 64 == 0
        mappings.add(values.untyped_storage().data_ptr())
    assert len(mappings) == 1, "one mapping shared, not a whole huge page rounded up for each"
    fresh = random_rwkv7_state_dict(n_layer=2, n_embd=768, head_size=64, vocab_size=2048, seed=4,
                                    dtype=torch.bfloat16)
    assert layer.receptance.stored.values.equal(store_matrix(fresh["blocks.1.att.receptance.weight"], "fp16").values)
    assert layer.w1.equal(fresh["blocks.1.att.w1"])

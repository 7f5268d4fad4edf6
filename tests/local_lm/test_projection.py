"""Weight products at each storage precision give the product of the weights they stand for."""

from __future__ import annotations

import pytest
import torch

from longyarn.recurrent_core.local_lm.precision import choose_half_precision, store_matrix
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

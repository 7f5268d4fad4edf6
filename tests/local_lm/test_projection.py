"""Weight products read exact fp16 copies where the weights allow it, and fp32 otherwise."""

from __future__ import annotations

import pytest
import torch

from longyarn.recurrent_core.local_lm.projection import Projection, fbgemm_fp16_available


def _product_error(projection: Projection, weight: torch.Tensor, x: torch.Tensor) -> float:
    exact = (x.double() @ weight.double().t())
    return float((projection(x).double() - exact).abs().max() / exact.abs().max())


@pytest.mark.skipif(not fbgemm_fp16_available(), reason="this PyTorch build has no FBGEMM")
def test_bf16_weights_are_packed_and_give_the_fp32_product():
    generator = torch.Generator().manual_seed(0)
    # A realistic spread of magnitudes, tiny values included: fp16 holds them after scaling.
    weight = (torch.randn(300, 200, generator=generator) * 0.03).bfloat16().float()
    weight[0, :3] = torch.tensor([1e-7, -3e-6, 0.0]).bfloat16().float()
    projection = Projection(weight, torch.device("cpu"), torch.float32)
    assert projection.packed_fp16
    x = torch.randn(5, 200, generator=generator)
    assert _product_error(projection, weight, x) < 1e-6
    assert projection(x[:1]).shape == (1, 300)
    assert projection(x.view(5, 1, 200)).shape == (5, 1, 300)


@pytest.mark.parametrize(
    "make_weight",
    [
        lambda g: torch.randn(64, 32, generator=g) * 0.03,  # fp32 mantissas (trained in fp32)
        lambda g: torch.cat([torch.full((1, 32), 1e-30), torch.ones(63, 32)]).bfloat16().float(),
    ],
    ids=["fp32 mantissas", "range too wide for fp16"],
)
def test_weights_fp16_cannot_hold_stay_fp32(make_weight):
    generator = torch.Generator().manual_seed(1)
    weight = make_weight(generator)
    projection = Projection(weight, torch.device("cpu"), torch.float32)
    assert not projection.packed_fp16
    x = torch.randn(3, 32, generator=generator)
    assert _product_error(projection, weight, x) < 1e-6

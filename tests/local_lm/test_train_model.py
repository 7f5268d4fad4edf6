"""The training model computes what the reference `rwkv` package computes, under BlinkDL's names."""

from __future__ import annotations

import os

import pytest
import torch

from longyarn.training.training_model import RWKV7, blinkdl_config

VOCAB = 61


def random_model(n_layer: int = 3, n_embd: int = 32, head_size: int = 8, seed: int = 0) -> RWKV7:
    """A tiny model with every parameter perturbed, so no term of the forward is a no-op."""
    model = RWKV7(blinkdl_config(VOCAB, n_embd, n_layer, head_size)).initialise(seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def reference_rwkv():
    os.environ["RWKV_V7_ON"] = "1"  # read when rwkv.model is first imported
    rwkv_model = pytest.importorskip("rwkv.model")
    if not hasattr(rwkv_model, "RWKV_x070"):
        pytest.skip("rwkv.model was imported without RWKV_V7_ON=1 earlier in this process")
    return rwkv_model.RWKV_x070


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_logits_match_the_reference_package(tmp_path, reference_rwkv):
    torch.set_num_threads(1)
    model = random_model()
    torch.save(model.state_dict(), tmp_path / "tiny.pth")
    reference = reference_rwkv(str(tmp_path / "tiny"), "cpu fp32")  # it appends ".pth"
    tokens = torch.randint(0, VOCAB, (40,), generator=torch.Generator().manual_seed(3)).tolist()

    expected, _ = reference.forward(tokens, None, full_output=True)
    with torch.no_grad():
        logits, _ = model(torch.tensor([tokens]))

    assert expected.abs().max() > 1.0  # a real signal, not near-zero outputs
    torch.testing.assert_close(logits[0], expected, atol=1e-4, rtol=0)


def test_state_dict_has_blinkdl_names_and_shapes():
    config = blinkdl_config(VOCAB, n_embd=32, n_layer=2, head_size=8)
    state = RWKV7(config).state_dict()
    assert {"emb.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias", "ln_out.weight", "head.weight"} <= set(state)
    assert "blocks.0.att.v0" not in state and "blocks.1.att.v0" in state  # layer 0 defines v_first
    assert "blocks.1.ln0.weight" not in state
    assert state["blocks.1.att.x_r"].shape == (1, 1, 32)
    assert state["blocks.1.att.r_k"].shape == (4, 8)
    assert state["blocks.1.att.key.weight"].shape == (32, 32)
    assert state["blocks.1.ffn.key.weight"].shape == (128, 32)
    assert state["head.weight"].shape == (VOCAB, 32)


def test_reading_in_pieces_with_carried_state_equals_reading_at_once():
    model = random_model(n_layer=2)
    tokens = torch.randint(0, VOCAB, (2, 45), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        whole, whole_state = model(tokens)
        first, state = model(tokens[:, :17])
        second, state = model(tokens[:, 17:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(state[-1][1], whole_state[-1][1], atol=1e-4, rtol=1e-4)


def test_from_state_dict_rebuilds_the_same_model():
    model = random_model(n_layer=2)
    rebuilt = RWKV7.from_state_dict(model.state_dict()).eval()
    tokens = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(tokens)[0], model(tokens)[0])


def test_fresh_model_predicts_near_uniform():
    # RWKV-7's initialisation starts from near-uniform predictions (loss ~ ln(vocab)), which is
    # what lets a small model learn quickly instead of first unlearning huge logits.
    model = RWKV7(blinkdl_config(4096, n_embd=64, n_layer=2, head_size=16)).initialise(seed=0)
    tokens = torch.randint(0, 4096, (2, 32), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits, _ = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    assert abs(loss.item() - torch.log(torch.tensor(4096.0)).item()) < 0.5

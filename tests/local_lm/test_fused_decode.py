"""The GPU's fused decode path (batched products + fused kernels) computes what the CPU path does.

On a CUDA machine LocalLM decodes through `_forward_token_fused`; these tests force that path on
the CPU, with the kernels' PyTorch references or with the Triton kernels in the interpreter, and
hold it to the CPU decode path in float32.
"""

from __future__ import annotations

import pytest
import torch

from longyarn.recurrent_core.local_lm import LocalLM, load_checkpoint
from tests.local_lm.exactness import Float64Truth, assert_as_exact_as

FLOAT32_TOLERANCE = 1e-4


def _model(checkpoint, fused_decode: bool, dtype: torch.dtype = torch.float32) -> LocalLM:
    loaded = load_checkpoint(checkpoint.path)
    return LocalLM(loaded.state_dict, loaded.config, torch.device("cpu"), dtype, fused_decode=fused_decode)


def _tokens(vocab_size: int, count: int, seed: int, batch: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, count), generator=generator)


def _max_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.float() - y.float()).abs().max())


def _assert_states_close(state, expected) -> None:
    for name in ("time_mix_shift", "wkv", "channel_mix_shift"):
        assert _max_error(getattr(state, name), getattr(expected, name)) < FLOAT32_TOLERANCE, name


@pytest.mark.parametrize("name", ["tiny_checkpoint", "checkpoint_01b_layout"])
def test_fused_decode_with_pytorch_references_matches_the_cpu_path(name, request) -> None:
    checkpoint = request.getfixturevalue(name)
    cpu, fused = _model(checkpoint, fused_decode=False), _model(checkpoint, fused_decode=True)
    prompt = _tokens(checkpoint.vocab_size, 12, seed=0)[0].tolist()
    decoded = _tokens(checkpoint.vocab_size, 3, seed=1)[0].tolist()
    truth_logits, _ = Float64Truth.of(checkpoint.state_dict).run(prompt + decoded)
    # On the 12-layer model the two float32 paths differ by a CPU-dependent amount: there the
    # fused path must be as exact as the CPU path, measured against float64.
    tight = checkpoint.n_layer <= 3
    # The sequence path is shared, reading views of the stacked weights in the fused model.
    expected, state = cpu.forward(prompt)
    logits, fused_state = fused.forward(prompt)
    assert _max_error(logits, expected) < FLOAT32_TOLERANCE
    for position, token in enumerate(decoded, start=len(prompt)):
        expected, state = cpu.forward([token], state)
        logits, fused_state = fused.forward([token], fused_state)
        assert_as_exact_as(logits, expected, truth_logits[position], f"token {position}")
        if tight:
            assert _max_error(logits, expected) < FLOAT32_TOLERANCE
    if tight:
        _assert_states_close(fused_state, state)


def test_fused_decode_with_triton_kernels_matches_the_cpu_path_for_a_batch(tiny_checkpoint) -> None:
    pytest.importorskip("triton")
    cpu, fused = _model(tiny_checkpoint, fused_decode=False), _model(tiny_checkpoint, fused_decode=True)
    fused._fused_kernels_use_triton = True  # the interpreter, without a GPU
    _, state = cpu.forward(_tokens(tiny_checkpoint.vocab_size, 5, seed=2, batch=2))
    fused_state = state
    for step in range(2):
        tokens = _tokens(tiny_checkpoint.vocab_size, 1, seed=3 + step, batch=2)
        expected, state = cpu.forward(tokens, state)
        logits, fused_state = fused.forward(tokens, fused_state)
        assert logits.shape == (2, tiny_checkpoint.vocab_size)
        assert _max_error(logits, expected) < FLOAT32_TOLERANCE
    _assert_states_close(fused_state, state)


def test_fused_decode_from_the_start_matches_including_layer_0(tiny_checkpoint) -> None:
    # From the zero state every layer's shift and wkv state matter, layer 0's missing value LoRA too.
    cpu, fused = _model(tiny_checkpoint, fused_decode=False), _model(tiny_checkpoint, fused_decode=True)
    expected, state = cpu.forward([7])
    logits, fused_state = fused.forward([7])
    assert _max_error(logits, expected) < FLOAT32_TOLERANCE
    _assert_states_close(fused_state, state)


def test_half_precision_weights_are_stored_once_and_decode_close_to_float32(tiny_checkpoint) -> None:
    # Outside float32 on a CPU, Projections are not FBGEMM-packed: as on a GPU, the per-matrix
    # weights that the sequence path reads must be views of the stacks the fused path reads.
    cpu = _model(tiny_checkpoint, fused_decode=False)
    half = _model(tiny_checkpoint, fused_decode=True, dtype=torch.bfloat16)
    layer = half._layers[1]
    assert layer.value._weight_in_out.data_ptr() == layer.decode.rkv[2].data_ptr()
    assert layer.w1.data_ptr() == layer.decode.lora_down[1].data_ptr()
    expected, state = cpu.forward([5])
    logits, half_state = half.forward([5])
    for token in (9, 11):
        expected, state = cpu.forward([token], state)
        logits, half_state = half.forward([token], half_state)
    assert torch.nn.functional.cosine_similarity(logits, expected, dim=0) > 0.99


def test_cpu_models_keep_the_cpu_decode_path(tiny_checkpoint) -> None:
    model = LocalLM.load(tiny_checkpoint.path)
    assert not model._fused_decode
    assert all(layer.decode is None for layer in model._layers)


def test_a_fused_path_that_fails_on_its_first_token_falls_back_and_says_why(tiny_checkpoint):
    # As when Triton cannot build the kernels for a GPU: decoding must go on, correctly.
    plain = LocalLM.load(tiny_checkpoint.path)
    fused = LocalLM.load(tiny_checkpoint.path)
    fused._fused_decode = True  # its layers carry no stacked weights, so the first call fails
    _, state = plain.forward([3, 4, 5])
    with pytest.warns(RuntimeWarning, match="decoding goes on with PyTorch ops"):
        logits, _ = fused.forward([6], state)
    expected, _ = plain.forward([6], state)
    torch.testing.assert_close(logits, expected, atol=0, rtol=0)
    assert fused.fused_decode_error and not fused._fused_decode


def test_a_model_that_cannot_capture_cuda_graphs_warns_once_and_decodes_the_same(tiny_checkpoint) -> None:
    # A CPU has no CUDA graphs, so capturing one really fails here: decoding must go on, eagerly.
    loaded = load_checkpoint(tiny_checkpoint.path)
    plain = LocalLM(loaded.state_dict, loaded.config, torch.device("cpu"), torch.float32, cuda_graphs=False)
    asked = LocalLM(loaded.state_dict, loaded.config, torch.device("cpu"), torch.float32, cuda_graphs=True)
    expected, expected_state = plain.forward([1, 2, 3])
    logits, state = asked.forward([1, 2, 3])
    tokens = _tokens(tiny_checkpoint.vocab_size, 4, seed=5)[0].tolist()
    with pytest.warns(RuntimeWarning, match="CUDA graphs failed") as caught:
        for token in tokens:
            expected, expected_state = plain.forward([token], expected_state)
            logits, state = asked.forward([token], state)
            assert torch.equal(logits, expected)
    assert len(caught) == 1
    assert asked.cuda_graph_error is not None
    _assert_states_close(state, expected_state)

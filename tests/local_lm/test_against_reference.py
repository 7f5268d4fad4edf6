"""LocalLM computes what the `rwkv` package's RWKV_x070 computes ("cpu fp32").

On any CPU: our float32 error against the model computed in float64 is within a small factor of
the reference's own float32 error (see tests/local_lm/exactness.py). On the tiny 3-layer models,
where float32 is all but exact, ours is also within 1e-4 of the reference directly.
"""

from __future__ import annotations

import pytest
import torch

from longyarn.recurrent_core.local_lm import LocalLM, RecurrentState
from tests.local_lm.exactness import Float64Truth, assert_as_exact_as

TOLERANCE = 1e-4  # direct, on the tiny models only


@pytest.fixture(
    scope="module", params=["tiny_checkpoint", "tiny_fp32_checkpoint", "checkpoint_01b_layout"]
)
def models(request, reference_rwkv):
    """(our model, the reference model, the float64 truth, the checkpoint) for each checkpoint."""
    checkpoint = request.getfixturevalue(request.param)
    reference = reference_rwkv(str(checkpoint.path)[: -len(".pth")], "cpu fp32")
    return LocalLM.load(checkpoint.path, weights="fp32"), reference, Float64Truth.of(checkpoint.state_dict), checkpoint


def _tokens(checkpoint, count: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, checkpoint.vocab_size, (count,), generator=generator).tolist()


def _copy(reference_state: list[torch.Tensor]) -> list[torch.Tensor]:
    # The reference replaces the entries of the list it is given; keep ours intact.
    return [t.clone() for t in reference_state]


def _is_tiny(checkpoint) -> bool:
    return checkpoint.n_layer <= 3


def _assert_logits(ours, reference_logits, truth, checkpoint, what: str) -> None:
    assert ours.dtype == torch.float32 and ours.shape == (checkpoint.vocab_size,)
    assert_as_exact_as(ours, reference_logits, truth, what)
    if _is_tiny(checkpoint):
        assert float((ours - reference_logits).abs().max()) < TOLERANCE, what


def _assert_states(ours: RecurrentState, reference_state, truth_state, checkpoint) -> None:
    for layer in range(ours.signature.n_layer):
        parts = {
            "time-mix shift": ours.time_mix_shift[layer, 0],
            "wkv state": ours.wkv[layer, 0],
            "channel-mix shift": ours.channel_mix_shift[layer, 0],
        }
        for index, (name, mine) in enumerate(parts.items()):
            theirs = reference_state[3 * layer + index]
            assert_as_exact_as(mine, theirs, truth_state[layer][index], f"layer {layer} {name}")
            if _is_tiny(checkpoint):  # wkv entries grow with the sequence: relative there
                torch.testing.assert_close(mine, theirs, atol=TOLERANCE, rtol=TOLERANCE)


def test_token_by_token_logits_match_reference(models):
    lm, reference, truth, checkpoint = models
    tokens = _tokens(checkpoint, 10, seed=0)
    truth_logits, truth_state = truth.run(tokens)
    state, reference_state = None, None
    for position, token in enumerate(tokens):
        logits, state = lm.forward([token], state)
        expected, reference_state = reference.forward([token], reference_state)
        _assert_logits(logits, expected, truth_logits[position], checkpoint, f"token {position}")
    _assert_states(state, reference_state, truth_state, checkpoint)


def test_whole_sequence_logits_and_state_match_reference(models):
    lm, reference, truth, checkpoint = models
    tokens = _tokens(checkpoint, 16, seed=1)
    truth_logits, truth_state = truth.run(tokens)
    logits, state = lm.forward(tokens)
    expected, reference_state = reference.forward(tokens, None)
    _assert_logits(logits, expected, truth_logits[-1], checkpoint, "the last position")
    assert logits.std() > 0.1  # the comparison means something only if logits vary
    _assert_states(state, reference_state, truth_state, checkpoint)


def test_continuing_from_a_saved_state_matches_reference(models):
    lm, reference, truth, checkpoint = models
    prompt, continuation = _tokens(checkpoint, 8, seed=2), _tokens(checkpoint, 6, seed=3)
    _, state = lm.forward(prompt)
    _, reference_state = reference.forward(prompt, None)

    restored = RecurrentState.from_bytes(state.to_bytes())
    logits, _ = lm.forward(continuation, restored)
    expected, _ = reference.forward(continuation, _copy(reference_state))
    _assert_logits(logits, expected, truth.run(prompt + continuation)[0][-1], checkpoint, "continued")

    next_token_logits, _ = lm.forward(continuation[:1], restored)
    expected_next, _ = reference.forward(continuation[:1], _copy(reference_state))
    truth_next = truth.run(prompt + continuation[:1])[0][-1]
    _assert_logits(next_token_logits, expected_next, truth_next, checkpoint, "one token on")


def test_prefill_in_two_parts_equals_prefill_at_once(models):
    lm, reference, truth, checkpoint = models
    first, second = _tokens(checkpoint, 9, seed=4), _tokens(checkpoint, 7, seed=5)
    truth_logits, _ = truth.run(first + second)
    expected, _ = reference.forward(first + second, None)
    logits_at_once, state_at_once = lm.forward(first + second)
    _, state = lm.forward(first)
    logits_in_parts, state_in_parts = lm.forward(second, state)
    _assert_logits(logits_at_once, expected, truth_logits[-1], checkpoint, "at once")
    _assert_logits(logits_in_parts, expected, truth_logits[-1], checkpoint, "in two parts")
    if _is_tiny(checkpoint):
        torch.testing.assert_close(state_in_parts.wkv, state_at_once.wkv, atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(state_in_parts.time_mix_shift, state_at_once.time_mix_shift)
    torch.testing.assert_close(state_in_parts.channel_mix_shift, state_at_once.channel_mix_shift)


def test_sequence_equals_token_by_token(models):
    lm, reference, truth, checkpoint = models
    tokens = _tokens(checkpoint, 12, seed=6)
    truth_logits, truth_state = truth.run(tokens)
    expected, reference_state = reference.forward(tokens, None)
    logits_at_once, state_at_once = lm.forward(tokens)
    state = None
    for token in tokens:
        logits, state = lm.forward(torch.tensor([token]), state)
    _assert_logits(logits_at_once, expected, truth_logits[-1], checkpoint, "the sequence at once")
    _assert_logits(logits, expected, truth_logits[-1], checkpoint, "token by token")
    _assert_states(state_at_once, reference_state, truth_state, checkpoint)
    _assert_states(state, reference_state, truth_state, checkpoint)


def test_long_input_run_in_segments_matches_reference(tiny_checkpoint, reference_rwkv):
    lm = LocalLM.load(tiny_checkpoint.path, weights="fp32")
    lm.prefill_segment_tokens = 5  # 23 tokens: segments of 5, 5, 5, 5 and 3
    reference = reference_rwkv(str(tiny_checkpoint.path)[: -len(".pth")], "cpu fp32")
    truth = Float64Truth.of(tiny_checkpoint.state_dict)
    tokens = _tokens(tiny_checkpoint, 23, seed=7)
    truth_logits, truth_state = truth.run(tokens)
    logits, state = lm.forward(tokens)
    expected, reference_state = reference.forward(tokens, None)
    _assert_logits(logits, expected, truth_logits[-1], tiny_checkpoint, "in segments")
    _assert_states(state, reference_state, truth_state, tiny_checkpoint)


@pytest.mark.parametrize("layout", ["as RWKV-LM's training code saves it", "converted, without them"])
def test_both_layouts_of_layer_0s_unused_value_tensors_load_and_match_reference(
    layout, tmp_path, reference_rwkv
):
    from longyarn.training.synthetic import random_rwkv7_state_dict

    weights = random_rwkv7_state_dict(
        3, 128, 300, head_size=32, seed=5, dtype=torch.bfloat16,
        unused_layer_0_tensors=layout.startswith("as"),
    )
    assert ("blocks.0.att.v0" in weights) == layout.startswith("as")
    path = tmp_path / "model.pth"
    torch.save(weights, path)
    lm = LocalLM.load(path, weights="fp32")
    reference = reference_rwkv(str(path)[: -len(".pth")], "cpu fp32")
    tokens = [5, 17, 250, 3]
    logits, _ = lm.forward(tokens)
    expected, _ = reference.forward(tokens, None)
    assert float((logits - expected).abs().max()) < TOLERANCE


def test_a_batch_gives_each_sequence_its_own_result(tiny_lm, tiny_checkpoint):
    rows = [_tokens(tiny_checkpoint, 6, seed=8), _tokens(tiny_checkpoint, 6, seed=9)]
    batch_logits, batch_state = tiny_lm.forward(torch.tensor(rows))
    assert batch_logits.shape == (2, tiny_checkpoint.vocab_size)
    for row, tokens in enumerate(rows):
        logits, state = tiny_lm.forward(tokens)
        assert float((batch_logits[row] - logits).abs().max()) < TOLERANCE
        torch.testing.assert_close(batch_state.wkv[:, row], state.wkv[:, 0], atol=TOLERANCE, rtol=TOLERANCE)
    next_logits, _ = tiny_lm.forward(torch.tensor([[1], [2]]), batch_state)
    assert next_logits.shape == (2, tiny_checkpoint.vocab_size)

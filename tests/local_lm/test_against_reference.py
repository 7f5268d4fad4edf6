"""LocalLM computes what the `rwkv` package's RWKV_x070 computes ("cpu fp32"), within 1e-4."""

from __future__ import annotations

import pytest
import torch

from recurrent_core.local_lm import LocalLM, RecurrentState

TOLERANCE = 1e-4


@pytest.fixture(
    scope="module", params=["tiny_checkpoint", "tiny_fp32_checkpoint", "checkpoint_01b_layout"]
)
def models(request, reference_rwkv):
    """(our model, the reference model, the checkpoint) for each checkpoint."""
    checkpoint = request.getfixturevalue(request.param)
    reference = reference_rwkv(str(checkpoint.path)[: -len(".pth")], "cpu fp32")
    return LocalLM.load(checkpoint.path), reference, checkpoint


def _tokens(checkpoint, count: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, checkpoint.vocab_size, (count,), generator=generator).tolist()


def _copy(reference_state: list[torch.Tensor]) -> list[torch.Tensor]:
    # The reference replaces the entries of the list it is given; keep ours intact.
    return [t.clone() for t in reference_state]


def _assert_states_match(ours: RecurrentState, reference_state: list[torch.Tensor]) -> None:
    for layer in range(ours.signature.n_layer):
        time_shift, wkv, channel_shift = reference_state[3 * layer : 3 * layer + 3]
        torch.testing.assert_close(ours.time_mix_shift[layer, 0], time_shift, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(ours.channel_mix_shift[layer, 0], channel_shift, atol=TOLERANCE, rtol=0)
        # wkv entries grow with the sequence; compare relative to their size.
        torch.testing.assert_close(ours.wkv[layer, 0], wkv, atol=TOLERANCE, rtol=TOLERANCE)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_token_by_token_logits_match_reference(models):
    lm, reference, checkpoint = models
    state, reference_state = None, None
    for token in _tokens(checkpoint, 10, seed=0):
        logits, state = lm.forward([token], state)
        expected, reference_state = reference.forward([token], reference_state)
        assert logits.dtype == torch.float32 and logits.shape == (checkpoint.vocab_size,)
        assert _max_abs(logits, expected) < TOLERANCE
    _assert_states_match(state, reference_state)


def test_whole_sequence_logits_and_state_match_reference(models):
    lm, reference, checkpoint = models
    tokens = _tokens(checkpoint, 16, seed=1)
    logits, state = lm.forward(tokens)
    expected, reference_state = reference.forward(tokens, None)
    assert _max_abs(logits, expected) < TOLERANCE
    assert logits.std() > 0.1  # the comparison means something only if logits vary
    _assert_states_match(state, reference_state)


def test_continuing_from_a_saved_state_matches_reference(models):
    lm, reference, checkpoint = models
    prompt, continuation = _tokens(checkpoint, 8, seed=2), _tokens(checkpoint, 6, seed=3)
    _, state = lm.forward(prompt)
    _, reference_state = reference.forward(prompt, None)

    restored = RecurrentState.from_bytes(state.to_bytes())
    logits, _ = lm.forward(continuation, restored)
    expected, _ = reference.forward(continuation, _copy(reference_state))
    assert _max_abs(logits, expected) < TOLERANCE

    next_token_logits, _ = lm.forward(continuation[:1], restored)
    expected_next, _ = reference.forward(continuation[:1], _copy(reference_state))
    assert _max_abs(next_token_logits, expected_next) < TOLERANCE


def test_prefill_in_two_parts_equals_prefill_at_once(models):
    lm, _, checkpoint = models
    first, second = _tokens(checkpoint, 9, seed=4), _tokens(checkpoint, 7, seed=5)
    logits_at_once, state_at_once = lm.forward(first + second)
    _, state = lm.forward(first)
    logits_in_parts, state_in_parts = lm.forward(second, state)
    assert _max_abs(logits_at_once, logits_in_parts) < TOLERANCE
    torch.testing.assert_close(state_in_parts.wkv, state_at_once.wkv, atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(state_in_parts.time_mix_shift, state_at_once.time_mix_shift)
    torch.testing.assert_close(state_in_parts.channel_mix_shift, state_at_once.channel_mix_shift)


def test_sequence_equals_token_by_token(models):
    lm, _, checkpoint = models
    tokens = _tokens(checkpoint, 12, seed=6)
    logits_at_once, state_at_once = lm.forward(tokens)
    state = None
    for token in tokens:
        logits, state = lm.forward(torch.tensor([token]), state)
    assert _max_abs(logits_at_once, logits) < TOLERANCE
    torch.testing.assert_close(state.wkv, state_at_once.wkv, atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(state.time_mix_shift, state_at_once.time_mix_shift, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(state.channel_mix_shift, state_at_once.channel_mix_shift, atol=TOLERANCE, rtol=0)


def test_long_input_run_in_segments_matches_reference(tiny_checkpoint, reference_rwkv):
    lm = LocalLM.load(tiny_checkpoint.path)
    lm.prefill_segment_tokens = 5  # 23 tokens: segments of 5, 5, 5, 5 and 3
    reference = reference_rwkv(str(tiny_checkpoint.path)[: -len(".pth")], "cpu fp32")
    tokens = _tokens(tiny_checkpoint, 23, seed=7)
    logits, state = lm.forward(tokens)
    expected, reference_state = reference.forward(tokens, None)
    assert _max_abs(logits, expected) < TOLERANCE
    _assert_states_match(state, reference_state)


def test_a_batch_gives_each_sequence_its_own_result(tiny_lm, tiny_checkpoint):
    rows = [_tokens(tiny_checkpoint, 6, seed=8), _tokens(tiny_checkpoint, 6, seed=9)]
    batch_logits, batch_state = tiny_lm.forward(torch.tensor(rows))
    assert batch_logits.shape == (2, tiny_checkpoint.vocab_size)
    for row, tokens in enumerate(rows):
        logits, state = tiny_lm.forward(tokens)
        assert _max_abs(batch_logits[row], logits) < TOLERANCE
        torch.testing.assert_close(batch_state.wkv[:, row], state.wkv[:, 0], atol=TOLERANCE, rtol=TOLERANCE)
    next_logits, _ = tiny_lm.forward(torch.tensor([[1], [2]]), batch_state)
    assert next_logits.shape == (2, tiny_checkpoint.vocab_size)

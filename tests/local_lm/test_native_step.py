"""One sequence's next token as one C++ call (native_step.py): what the PyTorch step computes,
for every precision our kernel takes, and the PyTorch step wherever the call does not apply;
and a prefill's wkv recurrence as one call."""

from __future__ import annotations

import pytest
import torch

from longyarn.kernels.wkv7 import wkv7_naive
from longyarn.recurrent_core.local_lm import LocalLM
from longyarn.recurrent_core.local_lm.native_step import runs_wkv_sequence, wkv_sequence
from longyarn.training.synthetic import random_rwkv7_state_dict
from tests.kernels.rwkv7_inputs import random_state, rwkv7_inputs
from tests.local_lm.exactness import Float64Truth, assert_as_exact_as
from tests.local_lm.test_projection import needs_row_kernel

# 512 wide: the narrowest model whose matrices stream through our kernel (projection.py).
WIDE = dict(n_layer=2, n_embd=512, head_size=64, vocab_size=1024)


def wide_models(weights: str, saved_as: torch.dtype = torch.bfloat16) -> tuple[LocalLM, LocalLM]:
    """(a model decoding natively, the same weights decoding with PyTorch ops)."""
    state_dict = random_rwkv7_state_dict(**WIDE, seed=8, dtype=saved_as)
    native = LocalLM.from_state_dict(state_dict, weights=weights)
    pytorch = LocalLM.from_state_dict(state_dict, weights=weights)
    pytorch.native_decode = False
    return native, pytorch


@needs_row_kernel
@pytest.mark.parametrize(
    "weights, saved_as",
    # fp32-trained weights keep their LoRAs at fp32 (weights.py): the call takes those too.
    [("fp16", torch.bfloat16), ("bf16", torch.bfloat16), ("int8", torch.bfloat16), ("fp16", torch.float32)],
    ids=["fp16", "bf16", "int8", "fp16 of fp32-trained weights"],
)
def test_one_sequence_decodes_natively_to_the_pytorch_logits_and_state(weights, saved_as):
    native, pytorch = wide_models(weights, saved_as)
    if saved_as == torch.float32:
        assert native._layers[1].w1.dtype == torch.float32
    assert native.decodes_natively and not pytorch.decodes_natively
    logits, state = native.forward([1, 2, 3])
    expected, expected_state = pytorch.forward([1, 2, 3])
    for token in (4, 5, 6, 7, 8):
        given = state
        logits, state = native.forward([token], state, in_place=token > 5)
        assert (state is given) == (token > 5), "in place only when asked"
        expected, expected_state = pytorch.forward([token], expected_state)
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    for ours, theirs in zip(state.tensors(), expected_state.tensors()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@needs_row_kernel
def test_a_state_given_without_in_place_is_left_as_it_was():
    native, _ = wide_models("fp16")
    _, state = native.forward([1, 2, 3])
    before = [t.clone() for t in state.tensors()]
    first, _ = native.forward([4], state)
    again, _ = native.forward([4], state)
    for kept, original in zip(state.tensors(), before):
        assert torch.equal(kept, original)
    assert torch.equal(first, again)


@needs_row_kernel
def test_versions_at_once_each_decode_as_they_would_alone():
    # Several sequences take the PyTorch step; each row is still its own sequence.
    native, _ = wide_models("fp16")
    _, prompt_state = native.forward([1, 2, 3])
    rows = [[4, 9], [5, 9], [6, 10]]
    state = prompt_state.repeated(len(rows))
    for position in range(2):
        logits, state = native.forward(torch.tensor([[row[position]] for row in rows]), state, in_place=True)
    for index, row in enumerate(rows):
        alone, alone_state = native.forward(row, prompt_state)
        torch.testing.assert_close(logits[index], alone, rtol=0, atol=1e-4)
        torch.testing.assert_close(state.rows([index]).wkv, alone_state.wkv, rtol=0, atol=1e-4)


@needs_row_kernel
def test_the_01b_layout_decodes_natively_as_exactly_as_the_reference(checkpoint_01b_layout, reference_rwkv):
    # BlinkDL's bf16 weights are exact in fp16 (scaled by a power of two): the native step's
    # float32 error against float64 must be the reference's own, token by token and in the state.
    lm = LocalLM.load(checkpoint_01b_layout.path)
    assert lm.weights == "fp16" and lm.decodes_natively
    reference = reference_rwkv(str(checkpoint_01b_layout.path)[: -len(".pth")], "cpu fp32")
    truth = Float64Truth.of(checkpoint_01b_layout.state_dict)
    tokens = torch.randint(0, checkpoint_01b_layout.vocab_size, (8,), generator=torch.Generator().manual_seed(0)).tolist()
    truth_logits, truth_state = truth.run(tokens)
    state, reference_state = None, None
    for position, token in enumerate(tokens):
        logits, state = lm.forward([token], state, in_place=True)
        expected, reference_state = reference.forward([token], reference_state)
        assert_as_exact_as(logits, expected, truth_logits[position], f"token {position}")
    for layer in range(checkpoint_01b_layout.n_layer):
        assert_as_exact_as(state.wkv[layer, 0], reference_state[3 * layer + 1], truth_state[layer][1], f"layer {layer} wkv")


def test_a_model_our_kernel_does_not_take_decodes_with_pytorch():
    # fp32 weights, and a model too narrow to stream its weights, keep the PyTorch step.
    state_dict = random_rwkv7_state_dict(**WIDE, seed=8, dtype=torch.bfloat16)
    assert not LocalLM.from_state_dict(state_dict, weights="fp32").decodes_natively
    narrow = random_rwkv7_state_dict(n_layer=2, n_embd=128, head_size=32, vocab_size=300, seed=3)
    assert not LocalLM.from_state_dict(narrow, weights="fp16").decodes_natively


@needs_row_kernel
@pytest.mark.parametrize("head_size", [16, 64])
def test_a_prefills_wkv_in_one_call_is_the_recurrence_and_continues_in_place(head_size):
    # A CPU prefill runs the recurrence as one C++ call (wkv_sequence); it must be `wkv7`'s.
    inputs = rwkv7_inputs(2, 90, 3, head_size, seed=5)
    r, log_w, k, v, a, b = inputs
    state = random_state(2, 3, head_size)
    expected_out, expected_state = wkv7_naive(*inputs, state=state)
    assert runs_wkv_sequence(r, head_size, state)
    new_state = torch.empty_like(state)
    out = wkv_sequence(r, log_w.exp(), k, v, a, b, state, new_state)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-4)
    torch.testing.assert_close(new_state, expected_state, rtol=0, atol=1e-4)
    assert torch.equal(state, random_state(2, 3, head_size)), "the given state is kept"

    # In two parts, the second over the first's state in place, as prefill segments run.
    first = wkv_sequence(*(t[:, :37] for t in (r, log_w.exp(), k, v, a, b)), state, new_state)
    second = wkv_sequence(*(t[:, 37:] for t in (r, log_w.exp(), k, v, a, b)), new_state, new_state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), expected_out, rtol=0, atol=1e-4)
    torch.testing.assert_close(new_state, expected_state, rtol=0, atol=1e-4)


@needs_row_kernel
def test_a_prefill_that_wants_gradients_keeps_the_differentiable_recurrence():
    r = torch.randn(1, 8, 2, 16, requires_grad=True)
    state = torch.zeros(1, 2, 16, 16)
    assert not runs_wkv_sequence(r, 16, state)
    with torch.no_grad():
        assert runs_wkv_sequence(r, 16, state)
    assert not runs_wkv_sequence(r.detach(), 24, state), "heads a multiple of 16 wide only"

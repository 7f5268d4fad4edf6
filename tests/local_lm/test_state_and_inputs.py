"""States are values (never changed by forward) and bad inputs fail clearly, changing nothing."""

from __future__ import annotations

import pytest
import torch

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.local_lm import LocalLM, RecurrentState
from longyarn.training.synthetic import random_rwkv7_state_dict


def _assert_same_state(a: RecurrentState, b: RecurrentState) -> None:
    for left, right in zip((a.time_mix_shift, a.wkv, a.channel_mix_shift),
                           (b.time_mix_shift, b.wkv, b.channel_mix_shift)):
        assert torch.equal(left, right)


@pytest.mark.parametrize("continuation", [[7], [7, 8, 9, 10, 11, 12]], ids=["decode", "sequence"])
def test_forward_never_changes_the_state_it_is_given(tiny_lm, continuation):
    _, parent = tiny_lm.forward([1, 2, 3, 4])
    snapshot = parent.clone()
    _, child = tiny_lm.forward(continuation, parent)
    _assert_same_state(parent, snapshot)
    assert not torch.equal(child.wkv, parent.wkv)


def test_branches_from_one_state_are_independent(tiny_lm):
    _, parent = tiny_lm.forward([10, 11, 12])
    first_logits, _ = tiny_lm.forward([20, 21], parent)
    other_logits, _ = tiny_lm.forward([30, 31], parent)
    again_logits, _ = tiny_lm.forward([20, 21], parent)
    assert not torch.equal(first_logits, other_logits)
    assert torch.equal(first_logits, again_logits)


def test_state_survives_bytes_and_clone(tiny_lm):
    _, state = tiny_lm.forward([5, 6, 7])
    restored = RecurrentState.from_bytes(state.to_bytes())
    _assert_same_state(restored, state)
    assert restored.signature == state.signature
    cloned = state.clone()
    cloned.wkv.zero_()
    assert state.wkv.abs().sum() > 0
    assert torch.equal(tiny_lm.forward([8], restored)[0], tiny_lm.forward([8], state)[0])
    _assert_same_state(state.to("cpu"), state)


def test_a_state_in_another_precision_is_accepted(tiny_lm):
    # E.g. a state saved by a bf16 GPU model and continued on the CPU in fp32.
    _, state = tiny_lm.forward([5, 6, 7])
    half = RecurrentState(state.time_mix_shift.bfloat16(), state.wkv, state.channel_mix_shift.bfloat16())
    widened = RecurrentState(half.time_mix_shift.float(), state.wkv, half.channel_mix_shift.float())
    logits, next_state = tiny_lm.forward([8], half)
    assert torch.equal(logits, tiny_lm.forward([8], widened)[0])
    assert next_state.time_mix_shift.dtype == torch.float32


def test_bytes_that_are_not_a_state_are_refused():
    with pytest.raises(InvalidInput, match="not a saved RWKV-7 state"):
        RecurrentState.from_bytes(b"once upon a time")


def test_a_state_from_another_model_is_refused(tiny_lm, tmp_path):
    other_path = tmp_path / "other.pth"
    torch.save(random_rwkv7_state_dict(2, 64, 300, head_size=32), other_path)
    other = LocalLM.load(other_path)
    _, foreign_state = other.forward([1, 2])
    snapshot = foreign_state.clone()
    with pytest.raises(InvalidInput, match="belongs to a model of 2 layers x 64 wide"):
        tiny_lm.forward([1], foreign_state)
    _assert_same_state(foreign_state, snapshot)


def test_a_state_for_another_batch_size_is_refused(tiny_lm):
    _, state = tiny_lm.forward([1, 2])
    with pytest.raises(InvalidInput, match="holds 1 sequences but 2 were given"):
        tiny_lm.forward(torch.tensor([[1], [2]]), state)


@pytest.mark.parametrize(
    "token_ids, message",
    [
        ([], "No token ids were given"),
        (torch.tensor([], dtype=torch.long), "No token ids were given"),
        ([1, 300], "Token id 300 is outside this model's vocabulary \\(0 to 299\\)"),
        ([-1, 2], "Token id -1 is outside"),
        ([1.5], "must be a list of integers"),
        (torch.tensor([0.5]), "must be integers"),
        ("hello", "must be a list of integers"),
    ],
)
def test_bad_token_ids_are_refused_and_change_nothing(tiny_lm, token_ids, message):
    _, state = tiny_lm.forward([3, 4])
    snapshot = state.clone()
    with pytest.raises(InvalidInput, match=message):
        tiny_lm.forward(token_ids, state)
    _assert_same_state(state, snapshot)


def test_a_device_that_is_not_there_is_refused(tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(InvalidInput, match="Device 'cuda' was asked for but this machine has no usable CUDA GPU"):
        LocalLM.load(tiny_checkpoint.path, device="cuda")
    with pytest.raises(InvalidInput, match="not a device name"):
        LocalLM.load(tiny_checkpoint.path, device="gpu0")


def test_decoding_on_one_core_gives_the_same_text_and_leaves_the_thread_setting_alone(tiny_lm):
    # A small model decodes on one core (faster on a CPU); the caller's setting must survive,
    # or whatever runs next (the embedder) would be left on one core.
    assert tiny_lm.decode_threads == 1
    _, state = tiny_lm.forward([5, 6, 7])
    before = torch.get_num_threads()
    one_core, _ = tiny_lm.forward([8], state)
    assert torch.get_num_threads() == before
    tiny_lm.decode_threads = None
    try:
        default, _ = tiny_lm.forward([8], state)
    finally:
        tiny_lm.decode_threads = 1
    torch.testing.assert_close(one_core, default, atol=1e-5, rtol=0)

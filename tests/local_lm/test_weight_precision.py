"""The precision a CPU model keeps its weights at: what a user asks for, and what they get."""

from __future__ import annotations

import pytest
import torch

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.local_lm import LocalLM
from longyarn.training.synthetic import random_rwkv7_state_dict
from tests.local_lm.test_projection import needs_row_kernel


def _greedy(lm: LocalLM, prompt: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """`steps` greedy tokens after `prompt`, and the logits each was picked from."""
    logits, state = lm.forward(prompt)
    picked, seen = [], []
    for _ in range(steps):
        seen.append(logits)
        picked.append(int(logits.argmax()))
        logits, state = lm.forward([picked[-1]], state)
    return picked, seen


def _agreement(lm: LocalLM, reference: LocalLM, prompt: list[int], steps: int) -> float:
    """How often `lm` picks what `reference` picks, both fed the reference's greedy tokens."""
    tokens, expected = _greedy(reference, prompt, steps)
    logits, state = lm.forward(prompt)
    agree = 0
    for token, reference_logits in zip(tokens, expected):
        agree += int(logits.argmax()) == int(reference_logits.argmax())
        logits, state = lm.forward([token], state)
    return agree / steps


def test_half_precision_is_the_default_and_exact_for_bf16_weights(tiny_checkpoint):
    default = LocalLM.load(tiny_checkpoint.path)
    exact = LocalLM.load(tiny_checkpoint.path, weights="fp32")
    assert default.weights == "fp16"  # BlinkDL's bf16 weights fit fp16 exactly, scaled
    assert default.weight_bytes() < 0.6 * exact.weight_bytes()
    tokens, logits = _greedy(default, [1, 2, 3], 16)
    expected_tokens, expected = _greedy(exact, [1, 2, 3], 16)
    assert tokens == expected_tokens
    torch.testing.assert_close(torch.stack(logits), torch.stack(expected), rtol=0, atol=1e-5)


# The tolerances precision.py states: (largest |logit - fp32 logit| over 128 greedy tokens,
# the least greedy agreement with fp32), per kind of checkpoint and precision.
STATED = {
    ("bf16 weights", "fp16"): (1e-4, 1.0), ("bf16 weights", "bf16"): (1e-4, 1.0),
    ("bf16 weights", "int8"): (0.25, 0.9),
    ("fp32 weights", "fp16"): (5e-3, 0.98), ("fp32 weights", "bf16"): (5e-2, 0.98),
    ("fp32 weights", "int8"): (0.25, 0.9),
}


def _against_fp32(lm: LocalLM, reference: LocalLM, prompt: list[int], steps: int) -> tuple[float, float]:
    """(largest |logit difference|, greedy agreement) over `steps` tokens, both models fed
    the reference's greedy picks."""
    tokens, expected = _greedy(reference, prompt, steps)
    logits, state = lm.forward(prompt)
    worst, agree = 0.0, 0
    for token, reference_logits in zip(tokens, expected):
        worst = max(worst, float((logits - reference_logits).abs().max()))
        agree += int(logits.argmax()) == int(reference_logits.argmax())
        logits, state = lm.forward([token], state)
    return worst, agree / steps


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
@pytest.mark.parametrize("kind", ["bf16 weights", "fp32 weights"])
def test_each_precision_stays_within_its_stated_tolerance_of_fp32(kind, precision, request):
    checkpoint = request.getfixturevalue("tiny_checkpoint" if kind == "bf16 weights" else "tiny_fp32_checkpoint")
    lm = LocalLM.load(checkpoint.path, weights=precision)
    assert lm.weights == precision
    worst, agreement = _against_fp32(lm, LocalLM.load(checkpoint.path, weights="fp32"), [1, 2, 3], 128)
    tolerance, least_agreement = STATED[kind, precision]
    assert worst <= tolerance and agreement >= least_agreement, (worst, agreement)


def test_int8_at_the_01b_layout_stays_within_its_stated_tolerance(checkpoint_01b_layout):
    # 32 tokens keep it to seconds; the benchmark measures 128 at the full 0.1B shape.
    path = checkpoint_01b_layout.path
    worst, agreement = _against_fp32(LocalLM.load(path, weights="int8"), LocalLM.load(path, weights="fp32"), [1, 2, 3], 32)
    assert worst <= STATED["bf16 weights", "int8"][0] and agreement >= 0.9, (worst, agreement)


def test_a_decoding_loop_may_hand_its_state_over_and_gets_the_same_logits(tiny_checkpoint):
    lm = LocalLM.load(tiny_checkpoint.path)
    logits, state = lm.forward([1, 2, 3])
    owned, kept = state.clone(), state.clone()
    for token in (4, 5, 6):
        logits, state = lm.forward([token], state)
        in_place, owned_after = lm.forward([token], owned, in_place=True)
        assert owned_after is owned  # written over: no state allocated per token
        torch.testing.assert_close(in_place, logits, rtol=0, atol=0)
    torch.testing.assert_close(owned.wkv, state.wkv, rtol=0, atol=0)
    snapshot = kept.clone()
    lm.forward([4], kept)
    assert torch.equal(kept.wkv, snapshot.wkv)  # without in_place the state given is kept


def test_int8_loads_generates_and_mostly_agrees_with_fp32(tiny_checkpoint):
    int8 = LocalLM.load(tiny_checkpoint.path, weights="int8")
    exact = LocalLM.load(tiny_checkpoint.path, weights="fp32")
    assert int8.weights == "int8"
    assert int8.weight_bytes() < 0.4 * exact.weight_bytes()
    tokens, _ = _greedy(int8, [4, 5, 6], 8)
    assert len(tokens) == 8 and all(0 <= t < tiny_checkpoint.vocab_size for t in tokens)
    assert _agreement(int8, exact, [4, 5, 6], 64) >= 0.9


def test_bf16_weights_beyond_what_fp16_holds_are_kept_in_bf16(tmp_path):
    state_dict = random_rwkv7_state_dict(2, 64, 100, head_size=32, seed=7, dtype=torch.bfloat16)
    value = state_dict["blocks.1.ffn.value.weight"]
    # 1e6 overflows fp16; scaled into its range, the 1e-4s would fall below fp16's smallest values.
    value[0, 0], value[1, :8] = 1e6, 1e-4
    path = tmp_path / "wide.pth"
    torch.save(state_dict, path)
    default = LocalLM.load(path)
    exact = LocalLM.load(path, weights="fp32")
    assert default.weights == "bf16"
    logits, _ = default.forward([1, 2, 3, 4])
    expected, _ = exact.forward([1, 2, 3, 4])
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


def test_fp32_trained_weights_default_to_fp16_and_stay_close(tiny_fp32_checkpoint):
    default = LocalLM.load(tiny_fp32_checkpoint.path)
    exact = LocalLM.load(tiny_fp32_checkpoint.path, weights="fp32")
    assert default.weights == "fp16"
    assert _agreement(default, exact, [7, 8], 32) == 1.0


def test_a_precision_that_does_not_exist_is_refused_before_loading(tiny_checkpoint):
    with pytest.raises(InvalidInput, match="weights='int4'.*nothing was loaded.*fp32, fp16, bf16, int8"):
        LocalLM.load(tiny_checkpoint.path, weights="int4")


def test_compiled_decoding_gives_the_eager_logits_and_state(tiny_checkpoint, monkeypatch):
    # The one test that compiles (a few seconds at this size): one block graph per layer kind.
    monkeypatch.setenv("LONGYARN_COMPILE_DECODE", "1")
    compiled = LocalLM.load(tiny_checkpoint.path)
    eager = LocalLM.load(tiny_checkpoint.path)
    eager.compile_decode = False
    assert compiled.compile_decode
    logits, state = compiled.forward([1, 2, 3])
    expected, expected_state = eager.forward([1, 2, 3])
    for token in (4, 5, 6, 7):
        given = state
        logits, state = compiled.forward([token], state, in_place=token > 5)  # its state written over
        assert (state is given) == (token > 5)
        expected, expected_state = eager.forward([token], expected_state)
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert compiled.compile_decode_error is None
    for ours, theirs in zip(
        (state.time_mix_shift, state.wkv, state.channel_mix_shift),
        (expected_state.time_mix_shift, expected_state.wkv, expected_state.channel_mix_shift),
    ):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("weights", ["fp16", "int8"])
def test_compiled_versions_at_once_each_decode_as_they_would_alone(monkeypatch, weights):
    # Versions sampled as a batch read a matrix too big for the cache (here the head) once for
    # every row (FBGEMM inside the compiled graph), the small ones row by row; each row must
    # still be its own sequence.
    monkeypatch.setenv("LONGYARN_COMPILE_DECODE", "1")
    state_dict = random_rwkv7_state_dict(n_layer=2, n_embd=64, head_size=32, vocab_size=8192, seed=4)
    compiled = LocalLM.from_state_dict(state_dict, weights=weights)
    eager = LocalLM.from_state_dict(state_dict, weights=weights)
    eager.compile_decode = False
    assert compiled._head._rows_kernel == "fbgemm" and compiled._layers[0].key._rows_kernel == "widened"
    _, prompt_state = eager.forward([1, 2, 3])
    rows = [[4, 9], [5, 9], [6, 10]]
    state = prompt_state.repeated(len(rows))
    for position in range(2):
        logits, state = compiled.forward(torch.tensor([[row[position]] for row in rows]), state, in_place=True)
    assert compiled.compile_decode_error is None
    for index, row in enumerate(rows):
        alone, alone_state = eager.forward(row, prompt_state)
        torch.testing.assert_close(logits[index], alone, rtol=0, atol=1e-4)
        torch.testing.assert_close(state.rows([index]).wkv, alone_state.wkv, rtol=0, atol=1e-4)


@needs_row_kernel
def test_compiled_decoding_of_a_wide_model_runs_our_kernel_within_the_stated_tolerance(monkeypatch):
    # 512 wide: its matrices stream from memory, so the compiled step calls our kernel for them
    # (where several sequences decode at once, or the one-call step is off: see native_step.py).
    monkeypatch.setenv("LONGYARN_COMPILE_DECODE", "1")
    state_dict = random_rwkv7_state_dict(n_layer=2, n_embd=512, head_size=64, vocab_size=1024, seed=8, dtype=torch.bfloat16)
    compiled = LocalLM.from_state_dict(state_dict)
    compiled.native_decode = False
    assert compiled.weights == "fp16" and compiled._layers[1].receptance._one_row_kernel and compiled._head._one_row_kernel
    worst, agreement = _against_fp32(compiled, LocalLM.from_state_dict(state_dict, weights="fp32"), [1, 2, 3], 24)
    assert compiled.compile_decode and compiled.compile_decode_error is None
    tolerance, least_agreement = STATED["bf16 weights", "fp16"]
    assert worst <= tolerance and agreement >= least_agreement, (worst, agreement)


def test_without_a_compiler_decoding_warns_once_and_goes_on_eagerly(tiny_checkpoint, monkeypatch, tmp_path):
    import torch._dynamo
    import torch._inductor.config

    monkeypatch.setenv("LONGYARN_COMPILE_DECODE", "1")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # nothing cached to fall back on
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("no-such-c++-compiler",))
    torch._dynamo.reset()
    lm = LocalLM.load(tiny_checkpoint.path)
    eager = LocalLM.load(tiny_checkpoint.path)
    eager.compile_decode = False
    _, state = lm.forward([1, 2, 3])
    with pytest.warns(RuntimeWarning, match="decoding goes on with PyTorch ops") as caught:
        for token in (4, 5):
            logits, state = lm.forward([token], state)
    assert len(caught) == 1 and lm.compile_decode_error and not lm.compile_decode
    expected, _ = eager.forward([1, 2, 3, 4, 5])
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    torch._dynamo.reset()

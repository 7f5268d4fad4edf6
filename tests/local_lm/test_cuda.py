"""On a CUDA GPU (skipped elsewhere): the same logits as the CPU in fp32, close ones in bf16/fp16."""

from __future__ import annotations

import pytest
import torch

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.local_lm import LocalLM, load_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def exact_fp32_matmuls():
    # TF32 would round fp32 products to 10-bit mantissas (the reference module turns it on).
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


def _tokens(vocab_size: int, count: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (count,), generator=generator).tolist()


@pytest.mark.parametrize("name", ["tiny_checkpoint", "checkpoint_01b_layout"])
def test_cuda_fp32_matches_cpu(name, request, exact_fp32_matmuls):
    checkpoint = request.getfixturevalue(name)
    cpu = LocalLM.load(checkpoint.path)
    gpu = LocalLM.load(checkpoint.path, device="cuda", dtype="fp32")
    # 100 tokens: longer than the GPU's token loop, so the chunked Triton kernel runs.
    prompt, continuation = _tokens(checkpoint.vocab_size, 100, 0), _tokens(checkpoint.vocab_size, 3, 1)
    expected, cpu_state = cpu.forward(prompt)
    logits, state = gpu.forward(prompt)
    assert logits.device.type == "cuda" and logits.dtype == torch.float32
    assert float((logits.cpu() - expected).abs().max()) < 1e-3
    for token in continuation:
        expected, cpu_state = cpu.forward([token], cpu_state)
        logits, state = gpu.forward([token], state)
    assert float((logits.cpu() - expected).abs().max()) < 1e-3
    torch.testing.assert_close(state.wkv.cpu(), cpu_state.wkv, atol=1e-3, rtol=1e-3)
    assert gpu.fused_decode_error is None  # the fused kernels decoded, not the fallback


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_cuda_half_precision_is_close_to_fp32(dtype, checkpoint_01b_layout):
    checkpoint = checkpoint_01b_layout
    cpu = LocalLM.load(checkpoint.path)
    gpu = LocalLM.load(checkpoint.path, device="cuda", dtype=dtype)
    prompt = _tokens(checkpoint.vocab_size, 100, 2)
    expected, _ = cpu.forward(prompt)
    logits, state = gpu.forward(prompt)
    assert logits.dtype == torch.float32 and state.wkv.dtype == torch.float32
    logits = logits.cpu()
    # Half precision drifts over 12 layers; the distribution over the vocabulary must not.
    assert torch.nn.functional.cosine_similarity(logits, expected, dim=0) > 0.99
    assert float((logits - expected).abs().max()) < 0.25 * float(expected.std())


def test_cuda_bf16_sequence_equals_token_by_token(checkpoint_01b_layout):
    gpu = LocalLM.load(checkpoint_01b_layout.path, device="cuda")
    assert gpu.dtype == torch.bfloat16
    tokens = _tokens(checkpoint_01b_layout.vocab_size, 80, 3)
    at_once, state_at_once = gpu.forward(tokens)
    state = None
    for token in tokens:
        one_by_one, state = gpu.forward([token], state)
    assert torch.nn.functional.cosine_similarity(at_once, one_by_one, dim=0) > 0.999
    parent = state.clone()
    gpu.forward([1, 2, 3], state)
    assert torch.equal(parent.wkv, state.wkv)  # forward never changes the state it is given


def test_a_cpu_state_on_a_gpu_model_is_refused(tiny_checkpoint):
    gpu = LocalLM.load(tiny_checkpoint.path, device="cuda")
    _, cpu_state = LocalLM.load(tiny_checkpoint.path).forward([1, 2])
    with pytest.raises(InvalidInput, match="state.to\\('cuda"):
        gpu.forward([3], cpu_state)
    logits, _ = gpu.forward([3], cpu_state.to("cuda"))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("batch", [1, 2])
def test_cuda_graph_decoding_equals_eager_decoding_and_never_changes_a_state(batch, checkpoint_01b_layout):
    graphed = LocalLM.load(checkpoint_01b_layout.path, device="cuda")
    loaded = load_checkpoint(checkpoint_01b_layout.path)
    eager = LocalLM(loaded.state_dict, loaded.config, torch.device("cuda"), torch.bfloat16)
    eager.cuda_graphs = False
    vocab = checkpoint_01b_layout.vocab_size
    prompt = torch.tensor([_tokens(vocab, 20, 10 + row) for row in range(batch)], device="cuda")
    _, graphed_state = graphed.forward(prompt)
    _, eager_state = eager.forward(prompt)
    for step in range(6):
        tokens = torch.tensor([_tokens(vocab, 1, 20 + step + 7 * row) for row in range(batch)], device="cuda")
        parent, snapshot = graphed_state, graphed_state.clone()
        logits, graphed_state = graphed.forward(tokens, parent)
        expected, eager_state = eager.forward(tokens, eager_state)
        torch.testing.assert_close(logits, expected, atol=1e-3, rtol=1e-3)
        assert torch.equal(parent.wkv, snapshot.wkv)  # the state given is never changed
    torch.testing.assert_close(graphed_state.wkv, eager_state.wkv, atol=1e-3, rtol=1e-3)
    assert graphed.cuda_graph_error is None and graphed._decode_graphs  # replayed, not the fallback


def test_cuda_graph_decoding_branches_from_one_state_independently(checkpoint_01b_layout):
    gpu = LocalLM.load(checkpoint_01b_layout.path, device="cuda")
    _, state = gpu.forward(_tokens(checkpoint_01b_layout.vocab_size, 30, 4))
    snapshot = state.clone()
    first, first_state = gpu.forward([5], state)
    gpu.forward([6], state)  # another branch from the same parent
    again, again_state = gpu.forward([5], state)
    assert torch.equal(state.wkv, snapshot.wkv) and torch.equal(state.time_mix_shift, snapshot.time_mix_shift)
    assert torch.equal(first, again) and torch.equal(first_state.wkv, again_state.wkv)
    assert first_state.wkv.data_ptr() != again_state.wkv.data_ptr()  # states are never shared buffers
    assert gpu.cuda_graph_error is None

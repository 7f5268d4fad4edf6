"""One token on a GPU: the fused decode path, and its replay as a CUDA graph.

At batch 1 a decoding step's time goes to launching kernels, not to reading weights, so
`forward_token_fused` computes what `LocalLM._forward_token` does regrouped: the r/k/v
projections are one batched product over stacked weights (`weights.DecodeWeights`), the four
LoRAs two (zero-padded to one width), and the elementwise work around them is
`longyarn.kernels.rwkv7_fused`: 11 kernels a layer instead of about 50.

From the second single token on, `LocalLM` replays that step as a CUDA graph (`DecodeGraphs`,
one launch for the whole model), because launching ~260 kernels from Python costs more than
the GPU takes to run them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from longyarn.kernels.rwkv7_fused import lora_activation, relu_square, time_mix_decode, token_shift_mix

from .config import RWKV7Config
from .state import RecurrentState
from .weights import LayerWeights

# Captured decode steps kept per model (one per batch size seen; writers decode at batch 1).
MAX_DECODE_GRAPHS = 4

# One token per sequence: (tokens (B,), state, new_state to write) -> logits (B, vocab).
TokenStep = Callable[[torch.Tensor, RecurrentState, RecurrentState], torch.Tensor]


def forward_token_fused(
    layers: Sequence[LayerWeights],
    embedding: torch.Tensor,
    config: RWKV7Config,
    tokens: torch.Tensor,
    state: RecurrentState,
    new_state: RecurrentState,
    use_triton: bool | None,
) -> torch.Tensor:
    """`LocalLM._forward_token` in 11 kernels a layer: the same arithmetic, regrouped for a GPU.

    Per layer: the token shift (with the residual add and the layer norm), the r/k/v
    product, the LoRA down product, its activations, the LoRA up product, the time mix
    from there to the output projection's input (wkv step included), the output
    projection, the channel mix's token shift, its two products and the activation
    between them. Each layer's last residual add happens in the next one's first kernel.
    Writes `new_state`; returns the last hidden (B, C). `use_triton` as in `rwkv7_fused`.
    """
    C, H = config.n_embd, config.n_head
    x = embedding[tokens]
    channel_mix_out = None
    v_first = None
    for i, layer in enumerate(layers):
        stacked = layer.decode
        mixed, x, _ = token_shift_mix(
            x, state.time_mix_shift[i], layer.token_shift_mix.view(6, C), layer.ln1_weight,
            layer.ln1_bias, residual=channel_mix_out, shift_out=new_state.time_mix_shift[i],
            use_triton=use_triton,
        )
        rkv = torch.bmm(mixed[:3], stacked.rkv)
        # Token-shift rows 2..5 (x_v, x_w, x_a, x_g) feed the LoRAs in LORA_ROWS order.
        lora_hidden = lora_activation(torch.bmm(mixed[2:], stacked.lora_down), use_triton=use_triton)
        lora = torch.bmm(lora_hidden, stacked.lora_up)
        out, _ = time_mix_decode(
            rkv, lora, v_first, stacked.time_mix_vectors, state.wkv[i], H,
            state_out=new_state.wkv[i], use_triton=use_triton,
        )
        if v_first is None:
            v_first = rkv[2]

        shifted, x, _ = token_shift_mix(
            x, state.channel_mix_shift[i], layer.channel_mix_x_k.view(1, C), layer.ln2_weight,
            layer.ln2_bias, residual=layer.output(out), shift_out=new_state.channel_mix_shift[i],
            use_triton=use_triton,
        )
        channel_mix_out = layer.ffn_value(relu_square(layer.ffn_key(shifted[0]), use_triton=use_triton))
    return x + channel_mix_out


class DecodeGraphError(RuntimeError):
    """Capturing a decoding step as a CUDA graph failed; the message says why."""


@dataclass
class _DecodeGraph:
    """One captured single-token step at a fixed batch size: its static inputs and outputs."""

    graph: Any  # torch.cuda.CUDAGraph
    tokens: torch.Tensor  # (B,) int64
    state: RecurrentState  # read by the graph
    new_state: RecurrentState  # written by the graph
    logits: torch.Tensor  # (B, vocab) float32, written by the graph


class DecodeGraphs:
    """A model's single-token steps captured as CUDA graphs, one per batch size, replayed.

    The inputs are copied into a graph's static tensors and the outputs cloned out of them,
    so a state given is never modified and every returned state is independent. The static
    buffers are shared, so one replay runs at a time (callers may use threads).
    """

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._graphs: dict[int, _DecodeGraph] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._graphs)

    def replay(self, tokens: torch.Tensor, state: RecurrentState) -> tuple[torch.Tensor, RecurrentState] | None:
        """One token per sequence through the graph for its batch size: (logits, new state),
        or None if none is captured for that batch size yet."""
        # Normal tensors even under a caller's inference_mode: the static buffers outlive it.
        with self._lock, torch.inference_mode(False), torch.no_grad():
            decode = self._graphs.get(tokens.shape[0])
            return None if decode is None else _replay(decode, tokens, state)

    def capture_and_replay(
        self, tokens: torch.Tensor, state: RecurrentState, step: TokenStep
    ) -> tuple[torch.Tensor, RecurrentState] | None:
        """Capture `step` for this batch size if need be, then `replay`; None when
        MAX_DECODE_GRAPHS batch sizes have graphs already.

        The first replay is checked against an eager step on the same inputs, so a graph that
        computes anything else is never used. Raises `DecodeGraphError` if capturing fails (and
        drops every graph: the caller decodes eagerly from then on).
        """
        with self._lock, torch.inference_mode(False), torch.no_grad():
            batch_size = tokens.shape[0]
            decode = self._graphs.get(batch_size)
            if decode is None:
                if len(self._graphs) >= MAX_DECODE_GRAPHS:
                    return None
                try:
                    decode = self._capture(tokens, state, step)
                except Exception as failure:
                    self._graphs.clear()
                    raise DecodeGraphError(f"{type(failure).__name__}: {str(failure)[:200]}") from failure
                self._graphs[batch_size] = decode
            return _replay(decode, tokens, state)

    def _capture(self, tokens: torch.Tensor, state: RecurrentState, step: TokenStep) -> _DecodeGraph:
        static_tokens = tokens.clone()
        static_state = state.clone()
        static_new_state = state.empty_like()
        # Warm up on a side stream, as CUDA graphs need (allocator, cuBLAS workspaces).
        side_stream = torch.cuda.Stream(self._device)
        side_stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side_stream):
            for _ in range(2):
                step(static_tokens, static_state, static_new_state)
        torch.cuda.current_stream(self._device).wait_stream(side_stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_logits = step(static_tokens, static_state, static_new_state)
        decode = _DecodeGraph(graph, static_tokens, static_state, static_new_state, static_logits)

        # The outputs start as NaN, so a graph that skipped a write cannot pass as correct.
        for output in (decode.logits, *_state_tensors(decode.new_state)):
            output.fill_(math.nan)
        decode.graph.replay()
        eager_state = state.empty_like()
        eager_logits = step(tokens, state, eager_state)
        error = max(
            _relative_error(replayed, eager)
            for replayed, eager in zip(
                (decode.logits, *_state_tensors(decode.new_state)),
                (eager_logits, *_state_tensors(eager_state)),
            )
        )
        # Bitwise equal in practice; a library may pick another algorithm inside a capture.
        if not error <= 1e-2:  # also catches NaN
            raise RuntimeError(f"the replayed step differs from the eager one by {error:.1e} of scale")
        return decode


def _replay(decode: _DecodeGraph, tokens: torch.Tensor, state: RecurrentState) -> tuple[torch.Tensor, RecurrentState]:
    decode.tokens.copy_(tokens)
    for target, source in zip(_state_tensors(decode.state), _state_tensors(state)):
        target.copy_(source)
    decode.graph.replay()
    return decode.logits.clone(), decode.new_state.clone()


def _state_tensors(state: RecurrentState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return state.time_mix_shift, state.wkv, state.channel_mix_shift


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest |actual - expected| as a fraction of expected's scale (at least 1); NaN stays NaN."""
    scale = max(float(expected.float().abs().max()), 1.0)
    return float((actual.float() - expected.float()).abs().max()) / scale

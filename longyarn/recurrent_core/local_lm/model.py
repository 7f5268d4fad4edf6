"""The local RWKV-7 ("x070") language model: load a checkpoint, run tokens, get logits.

The arithmetic is the reference `rwkv.model.RWKV_x070` in fp32, reorganised for speed: the
big weight matrices are `Projection`s (exact fp16 copies read by FBGEMM where the weights
allow, see projection.py), the six token-shift lerps are one fused op, each LoRA is one
`addmm`, and the first layer norm (ln0) is folded into the embedding table as the reference
does. A single token takes the decode path, with the one-token wkv step written out; longer
inputs run as whole sequences through `longyarn.kernels.wkv7` (chunked on a CPU, Triton on a GPU),
split into segments to bound memory.

On a GPU a single token takes the fused decode path instead (`_forward_token_fused`): at batch 1
its time goes to launching kernels, not to reading weights, so the r/k/v projections are one
batched product over stacked weights, the four LoRAs two (zero-padded to one width), and the
elementwise work around them is `longyarn.kernels.rwkv7_fused`: 11 kernels a layer instead of about 50.
From the second single token on, that step is replayed as a CUDA graph (one launch for the whole
model), because launching ~260 kernels from Python costs more than the GPU takes to run them.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from longyarn.kernels.rwkv7_fused import (
    LORA_ROWS,
    lora_activation,
    relu_square,
    stack_time_mix_vectors,
    time_mix_decode,
    token_shift_mix,
)
from longyarn.kernels.wkv7 import wkv7

from ..errors import InvalidInput
from .checkpoint import load_checkpoint
from .config import RWKV7Config
from .projection import Projection
from .state import RecurrentState, StateSignature

# RWKV-7 decays: log_w = -exp(-softplus(-z) - 0.5) = -exp(-0.5) * sigmoid(z); the second
# form needs one transcendental instead of three.
_DECAY_SCALE = math.exp(-0.5)
_GROUP_NORM_EPS = 64e-5  # as in the reference (and RWKV-LM's training code)

# Longer inputs run in segments of this many tokens: exact (the state carries over) and it
# keeps the sequence intermediates to a few hundred MB at the 0.1B size.
PREFILL_SEGMENT_TOKENS = 1024

# Below this width a CPU decodes faster on one core: each of a token's ~20 small products
# per layer is then shorter than waking a second core for it, and a second core that is
# busy elsewhere (the embedder, another program) stalls every one of them.
ONE_THREAD_DECODE_BELOW_WIDTH = 512

# Captured decode steps kept per model (one per batch size seen; writers decode at batch 1).
MAX_DECODE_GRAPHS = 4


@dataclass
class _DecodeGraph:
    """One captured single-token step at a fixed batch size: its static inputs and outputs."""

    graph: Any  # torch.cuda.CUDAGraph
    tokens: torch.Tensor  # (B,) int64
    state: RecurrentState  # read by the graph
    new_state: RecurrentState  # written by the graph
    logits: torch.Tensor  # (B, vocab) float32, written by the graph


@dataclass(frozen=True)
class _DecodeWeights:
    """One block's weights stacked for the fused single-token path (batched products)."""

    rkv: torch.Tensor  # (3, C, C): receptance, key, value, each laid out for x @ W
    lora_down: torch.Tensor  # (4, C, R): the LoRAs in LORA_ROWS order (v, w, a, g), zero-padded to R
    lora_up: torch.Tensor  # (4, R, C)
    lora_widths: tuple[int, ...]  # each LoRA's own width; 0 for layer 0's value LoRA
    time_mix_vectors: torch.Tensor  # (8, C): see longyarn.kernels.rwkv7_fused.stack_time_mix_vectors

    def lora(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """LoRA `name`'s (down, up) matrices: views of the stacks, trimmed to its width."""
        row = LORA_ROWS.index(name)
        width = self.lora_widths[row]
        return (self.lora_down[row, :, :width], self.lora_up[row, :width]) if width else None


@dataclass(frozen=True)
class _LayerWeights:
    """One block's weights: big matrices as `Projection`s, small ones laid out for `x @ W`."""

    ln1_weight: torch.Tensor
    ln1_bias: torch.Tensor
    ln2_weight: torch.Tensor
    ln2_bias: torch.Tensor
    token_shift_mix: torch.Tensor  # (6, 1, C): lerp weights for r, k, v, w, a, g (this order)
    receptance: Projection
    key: Projection
    value: Projection
    w0: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor
    a0: torch.Tensor
    a1: torch.Tensor
    a2: torch.Tensor
    v0: torch.Tensor | None  # None in layer 0, whose values are v_first
    v1: torch.Tensor | None
    v2: torch.Tensor | None
    g1: torch.Tensor
    g2: torch.Tensor
    k_k: torch.Tensor
    k_a: torch.Tensor
    one_minus_k_a: torch.Tensor  # precomputed: k * (1 + (iclr - 1) k_a) = k * ((1 - k_a) + iclr k_a)
    r_k: torch.Tensor  # (C,), flattened from (H, N)
    output: Projection
    ln_x_weight: torch.Tensor
    ln_x_bias: torch.Tensor
    channel_mix_x_k: torch.Tensor
    ffn_key: Projection
    ffn_value: Projection
    decode: _DecodeWeights | None  # only where the fused decode path runs


def _stack_decode_weights(
    raw: Mapping[str, torch.Tensor], layer: int, device: torch.device, dtype: torch.dtype
) -> _DecodeWeights:
    att = f"blocks.{layer}.att."
    has_value_residual = layer > 0  # layer 0's values are v_first: its value LoRA rows stay zero

    def on_device(key: str) -> torch.Tensor:
        return raw[key].to(device=device, dtype=dtype)

    rkv = torch.stack([on_device(att + f"{name}.weight").t() for name in ("receptance", "key", "value")])
    widths = tuple(
        raw[att + f"{name}1"].shape[1] if name != "v" or has_value_residual else 0 for name in LORA_ROWS
    )
    channels = rkv.shape[-1]
    lora_down = torch.zeros(len(LORA_ROWS), channels, max(widths), device=device, dtype=dtype)
    lora_up = torch.zeros(len(LORA_ROWS), max(widths), channels, device=device, dtype=dtype)
    for row, (name, width) in enumerate(zip(LORA_ROWS, widths)):
        if width:
            lora_down[row, :, :width] = on_device(att + f"{name}1")
            lora_up[row, :width] = on_device(att + f"{name}2")
    vectors = stack_time_mix_vectors(
        **{name: on_device(att + name) for name in ("w0", "a0", "k_k", "k_a", "r_k")},
        v0=on_device(att + "v0") if has_value_residual else None,
        ln_x_weight=on_device(att + "ln_x.weight"),
        ln_x_bias=on_device(att + "ln_x.bias"),
    )
    return _DecodeWeights(rkv.contiguous(), lora_down, lora_up, widths, vectors)


def _prepare_layers(
    raw: Mapping[str, torch.Tensor],
    config: RWKV7Config,
    device: torch.device,
    dtype: torch.dtype,
    stack_for_decode: bool = False,
) -> list[_LayerWeights]:
    """Each block's weights; with `stack_for_decode` also stacked for the fused decode path.

    The stacked tensors hold the r/k/v and LoRA matrices once: on a GPU the per-matrix weights
    used by the sequence path are views of them.
    """

    def vector(key: str) -> torch.Tensor:
        return raw[key].reshape(-1).to(device=device, dtype=dtype)

    def matrix(key: str) -> torch.Tensor:
        return raw[key].to(device=device, dtype=dtype).contiguous()

    def projection(key: str) -> Projection:
        return Projection(raw[key], device, dtype)

    layers = []
    for i in range(config.n_layer):
        att, ffn = f"blocks.{i}.att.", f"blocks.{i}.ffn."
        mix = [vector(att + f"x_{name}") for name in ("r", "k", "v", "w", "a", "g")]
        has_value_residual = i > 0
        decode = _stack_decode_weights(raw, i, device, dtype) if stack_for_decode else None
        if decode is None:
            receptance, key, value = (projection(att + f"{name}.weight") for name in ("receptance", "key", "value"))
            lora = {name: matrix(att + name) for name in ("w1", "w2", "a1", "a2", "g1", "g2")}
            if has_value_residual:
                lora.update(v1=matrix(att + "v1"), v2=matrix(att + "v2"))
        else:
            receptance, key, value = (Projection.of_weight_in_out(weight) for weight in decode.rkv)
            lora = {}
            for name in LORA_ROWS:
                if (matrices := decode.lora(name)) is not None:
                    lora[f"{name}1"], lora[f"{name}2"] = matrices
        layers.append(
            _LayerWeights(
                ln1_weight=vector(f"blocks.{i}.ln1.weight"),
                ln1_bias=vector(f"blocks.{i}.ln1.bias"),
                ln2_weight=vector(f"blocks.{i}.ln2.weight"),
                ln2_bias=vector(f"blocks.{i}.ln2.bias"),
                token_shift_mix=torch.stack(mix).unsqueeze(1),
                receptance=receptance,
                key=key,
                value=value,
                w0=vector(att + "w0"),
                w1=lora["w1"],
                w2=lora["w2"],
                a0=vector(att + "a0"),
                a1=lora["a1"],
                a2=lora["a2"],
                v0=vector(att + "v0") if has_value_residual else None,
                v1=lora.get("v1"),
                v2=lora.get("v2"),
                g1=lora["g1"],
                g2=lora["g2"],
                k_k=vector(att + "k_k"),
                k_a=vector(att + "k_a"),
                one_minus_k_a=1 - vector(att + "k_a"),
                r_k=vector(att + "r_k"),
                output=projection(att + "output.weight"),
                ln_x_weight=vector(att + "ln_x.weight"),
                ln_x_bias=vector(att + "ln_x.bias"),
                channel_mix_x_k=vector(ffn + "x_k"),
                ffn_key=projection(ffn + "key.weight"),
                ffn_value=projection(ffn + "value.weight"),
                decode=decode,
            )
        )
    return layers


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidInput(
            f"'{device}' is not a device name; nothing was loaded, so use 'cpu' or 'cuda'."
        ) from error
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise InvalidInput(
            f"The local model runs on 'cpu' or 'cuda', not '{device}'; nothing was loaded, "
            "so pick one of those."
        )
    if not torch.cuda.is_available():
        raise InvalidInput(
            f"Device '{device}' was asked for but this machine has no usable CUDA GPU; "
            "nothing was loaded, so use device='cpu'."
        )
    if resolved.index is None:
        # Tensors report "cuda:0", never "cuda"; name the device the same way.
        return torch.device("cuda", torch.cuda.current_device())
    if resolved.index >= torch.cuda.device_count():
        raise InvalidInput(
            f"Device '{device}' does not exist (this machine has {torch.cuda.device_count()} "
            "CUDA GPUs); nothing was loaded, so pick an index below that."
        )
    return resolved


_DTYPE_NAMES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    resolved = _DTYPE_NAMES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise InvalidInput(
            f"dtype {dtype!r} is not supported; nothing was loaded, so use float32 "
            "(the CPU default), bfloat16 or float16."
        )
    if device.type == "cpu" and resolved != torch.float32:
        raise InvalidInput(
            f"dtype {dtype!r} is for GPUs; nothing was loaded, so use float32 on the CPU."
        )
    return resolved


def _wkv7_one_token_cpu(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kk: torch.Tensor,
    iclr: torch.Tensor,
    state: torch.Tensor,
    state_out: torch.Tensor,
    head_size: int,
) -> torch.Tensor:
    """One step of the wkv7 recurrence for (B, C) inputs; writes the new state to `state_out`.

    The T = 1 case of `longyarn.kernels.wkv7.wkv7` with a = -kk, b = kk * iclr, written out because at
    one token the general kernels' reshaping costs more than this arithmetic does:
        S' = S diag(w) + (S a) b^T + v k^T = S diag(w) + (S kk)(-kk * iclr)^T + v k^T
    Returns o = S' r as (B*H, N, 1) float32.
    """
    N = head_size
    heads = r.numel() // N  # batch x heads
    state = state.view(heads, N, N)
    state_kk = torch.bmm(state, kk.view(heads, N, 1))
    new_state = torch.baddbmm(
        state * torch.exp(log_w).view(heads, 1, N),
        torch.cat([state_kk, v.view(heads, N, 1)], dim=2),
        torch.stack([(kk * iclr).neg_().view(heads, N), k.view(heads, N)], dim=1),
        out=state_out.view(heads, N, N),
    )
    return torch.bmm(new_state, r.view(heads, N, 1))


@contextlib.contextmanager
def _intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for this thread, set for a block and then restored."""
    previous = torch.get_num_threads()
    if not threads or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LocalLM:
    """An RWKV-7 model in memory: `forward(token_ids, state)` returns last-position logits.

    Build one with `LocalLM.load(path)` (a BlinkDL .pth or a longyarn model directory) or
    `LocalLM.from_state_dict(...)`.
    """

    def __init__(
        self,
        state_dict: Mapping[str, torch.Tensor],
        config: RWKV7Config,
        device: torch.device,
        dtype: torch.dtype,
        tokenizer: Any | None = None,
        extra_config: Mapping[str, Any] | None = None,
        fused_decode: bool | None = None,
        cuda_graphs: bool | None = None,
    ) -> None:
        """Use `load` or `from_state_dict`; this expects an already validated state dict.

        fused_decode: run single tokens through `_forward_token_fused` (default: on CUDA). On a
        CPU it runs the kernels' PyTorch references, which is how tests check that path.
        cuda_graphs: replay single-token steps as CUDA graphs (default: on CUDA).
        """
        self.config = config
        self.device = device
        self.dtype = dtype
        self.tokenizer = tokenizer
        self.extra_config = dict(extra_config or {})
        self._signature = StateSignature.of_config(config)
        # Inputs longer than this run in segments (same results, bounded memory).
        self.prefill_segment_tokens = PREFILL_SEGMENT_TOKENS
        self._fused_decode = device.type == "cuda" if fused_decode is None else fused_decode
        self._fused_decode_ran = False
        # Why the fused decode path was given up, if it failed on its first call.
        self.fused_decode_error: str | None = None
        # Replay single tokens as CUDA graphs; False decodes eagerly (set it any time).
        self.cuda_graphs = device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self._decode_graphs: dict[int, _DecodeGraph] = {}
        # The graphs' static buffers are shared: one replay at a time (callers may use threads).
        self._decode_graph_lock = threading.Lock()
        self._eager_decodes = 0
        # Why single tokens stopped being replayed as CUDA graphs, if capturing one failed.
        self.cuda_graph_error: str | None = None
        # None: Triton on CUDA, PyTorch elsewhere; tests set True to run Triton's interpreter.
        self._fused_kernels_use_triton: bool | None = None
        # Threads for one-token steps on a CPU (None: torch's current setting); see above.
        self.decode_threads: int | None = (
            1 if device.type == "cpu" and config.n_embd < ONE_THREAD_DECODE_BELOW_WIDTH else None
        )
        with torch.no_grad():
            # The reference folds ln0 into the table: emb rows are only ever used normalised.
            self._embedding = F.layer_norm(
                state_dict["emb.weight"].float(),
                (config.n_embd,),
                state_dict["blocks.0.ln0.weight"].float(),
                state_dict["blocks.0.ln0.bias"].float(),
            ).to(device=device, dtype=dtype)
            self._layers = _prepare_layers(state_dict, config, device, dtype, stack_for_decode=self._fused_decode)
            self._ln_out_weight = state_dict["ln_out.weight"].to(device=device, dtype=dtype)
            self._ln_out_bias = state_dict["ln_out.bias"].to(device=device, dtype=dtype)
            self._head = Projection(state_dict["head.weight"], device, dtype)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
    ) -> LocalLM:
        """Load a BlinkDL RWKV-7 .pth file or a longyarn model directory.

        dtype defaults to float32 on the CPU and bfloat16 on CUDA. Raises `CheckpointError`
        for a missing or foreign file and `InvalidInput` for a device that is not there.
        """
        resolved_device = _resolve_device(device)
        resolved_dtype = _resolve_dtype(dtype, resolved_device)
        loaded = load_checkpoint(path)
        return cls(
            loaded.state_dict,
            loaded.config,
            resolved_device,
            resolved_dtype,
            tokenizer=loaded.tokenizer,
            extra_config=loaded.extra_config,
        )

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        tokenizer: Any | None = None,
    ) -> LocalLM:
        """A model from in-memory weights with BlinkDL key names (e.g. during training)."""
        from .checkpoint import _infer_rwkv7_config

        resolved_device = _resolve_device(device)
        resolved_dtype = _resolve_dtype(dtype, resolved_device)
        config = _infer_rwkv7_config(state_dict, "The given state dict")
        cpu_weights = {k: v.detach().to("cpu") for k, v in state_dict.items()}
        return cls(cpu_weights, config, resolved_device, resolved_dtype, tokenizer=tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def zero_state(self, batch_size: int = 1) -> RecurrentState:
        """The state before any token, on this model's device."""
        return RecurrentState.zeros(self.config, batch_size, self.device, self.dtype)

    def forward(
        self,
        token_ids: Sequence[int] | torch.Tensor,
        state: RecurrentState | None = None,
    ) -> tuple[torch.Tensor, RecurrentState]:
        """Run tokens after `state` (None: the start of a text); return (logits, new state).

        token_ids: a sequence of ints or a 1-D tensor (logits of shape (vocab,)), or a 2-D
        (batch, time) tensor (logits (batch, vocab)). The logits are the last position's,
        float32, on the model's device. `state` is never modified. Running a sequence at once
        or token by token gives the same logits and state (up to float rounding).
        """
        tokens, batched = self._validated_tokens(token_ids)
        batch_size, seq_len = tokens.shape
        if state is None:
            state = self.zero_state(batch_size)
        else:
            self._check_state(state, batch_size)
            if state.time_mix_shift.dtype != self.dtype:
                # E.g. a state saved by an fp32 CPU model, continued by a bf16 GPU model.
                state = RecurrentState(
                    state.time_mix_shift.to(self.dtype),
                    state.wkv,
                    state.channel_mix_shift.to(self.dtype),
                )
        if seq_len == 1 and self.cuda_graphs and self._eager_decodes > 0:
            replayed = self._replay_decode_graph(tokens[:, 0], state)
            if replayed is not None:
                logits, new_state = replayed
                return (logits if batched else logits[0]), new_state
        new_state = _empty_like_state(state)
        with torch.no_grad():
            if seq_len == 1:
                logits = self._token_logits(tokens[:, 0], state, new_state)
                self._eager_decodes += 1
            else:
                source = state
                step = max(1, self.prefill_segment_tokens)
                for start in range(0, seq_len, step):
                    segment = tokens[:, start : start + step]
                    last = self._forward_sequence(segment, source, new_state)
                    source = new_state
                logits = self._logits(last)
        return (logits if batched else logits[0]), new_state

    __call__ = forward

    # -- validation -------------------------------------------------------------------------

    def _validated_tokens(self, token_ids: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(batch, time) int64 tensor on the model's device, and whether the input was batched."""
        if isinstance(token_ids, torch.Tensor):
            if token_ids.dtype.is_floating_point or token_ids.dtype.is_complex or token_ids.dtype == torch.bool:
                raise InvalidInput(
                    f"Token ids must be integers, not {token_ids.dtype}; nothing was computed, "
                    "so pass the ids from the tokenizer."
                )
            if token_ids.dim() not in (1, 2):
                raise InvalidInput(
                    f"Token ids must be 1-D (time) or 2-D (batch, time), not shape "
                    f"{tuple(token_ids.shape)}; nothing was computed."
                )
            batched = token_ids.dim() == 2
            tokens = token_ids.to(torch.int64)
            if not batched:
                tokens = tokens.unsqueeze(0)
        else:
            if isinstance(token_ids, (str, bytes)) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in token_ids
            ):
                raise InvalidInput(
                    "Token ids must be a list of integers; nothing was computed, so encode "
                    "the text with the model's tokenizer first."
                )
            batched = False
            tokens = torch.tensor([list(token_ids)], dtype=torch.int64)
        if tokens.numel() == 0:
            raise InvalidInput(
                "No token ids were given; nothing was computed, so pass at least one token."
            )
        lowest, highest = int(tokens.min()), int(tokens.max())
        if lowest < 0 or highest >= self.vocab_size:
            bad = lowest if lowest < 0 else highest
            raise InvalidInput(
                f"Token id {bad} is outside this model's vocabulary (0 to {self.vocab_size - 1}); "
                "nothing was computed, so encode the text with this model's own tokenizer."
            )
        return tokens.to(self.device), batched

    def _check_state(self, state: RecurrentState, batch_size: int) -> None:
        if not isinstance(state, RecurrentState):
            raise InvalidInput(
                f"state must be a RecurrentState or None, not {type(state).__name__}; "
                "nothing was computed."
            )
        state.check_signature(self._signature)
        if state.batch_size != batch_size:
            raise InvalidInput(
                f"The state holds {state.batch_size} sequences but {batch_size} were given; "
                "nothing was computed, so pass one token row per sequence in the state."
            )
        if state.device != self.device:
            raise InvalidInput(
                f"The state is on {state.device} but the model is on {self.device}; nothing was "
                f"computed, so move it first with state.to('{self.device}')."
            )

    # -- single tokens as CUDA graphs -----------------------------------------------------------

    def _replay_decode_graph(
        self, tokens: torch.Tensor, state: RecurrentState
    ) -> tuple[torch.Tensor, RecurrentState] | None:
        """One token through a captured graph: (logits, new state), or None to decode eagerly.

        The inputs are copied into the graph's static tensors and the outputs cloned out of
        them, so `state` is never modified and every returned state is independent.
        """
        # Normal tensors even under a caller's inference_mode: the static buffers outlive it.
        with self._decode_graph_lock, torch.inference_mode(False), torch.no_grad():
            batch_size = tokens.shape[0]
            decode = self._decode_graphs.get(batch_size)
            if decode is None:
                if len(self._decode_graphs) >= MAX_DECODE_GRAPHS:
                    return None
                decode = self._capture_decode_graph(tokens, state)
                if decode is None:
                    return None
                self._decode_graphs[batch_size] = decode
            decode.tokens.copy_(tokens)
            _copy_state(decode.state, state)
            decode.graph.replay()
            return decode.logits.clone(), decode.new_state.clone()

    def _capture_decode_graph(self, tokens: torch.Tensor, state: RecurrentState) -> _DecodeGraph | None:
        """Capture the single-token step for this batch size; None (and a warning) if that fails.

        The first replay is checked against an eager step on the same inputs, so a graph that
        computes anything else is never used.
        """
        try:
            static_tokens = tokens.clone()
            static_state = state.clone()
            static_new_state = _empty_like_state(state)
            # Warm up on a side stream, as CUDA graphs need (allocator, cuBLAS workspaces).
            side_stream = torch.cuda.Stream(self.device)
            side_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side_stream):
                for _ in range(2):
                    self._token_logits(static_tokens, static_state, static_new_state)
            torch.cuda.current_stream(self.device).wait_stream(side_stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_logits = self._token_logits(static_tokens, static_state, static_new_state)
            decode = _DecodeGraph(graph, static_tokens, static_state, static_new_state, static_logits)

            # The outputs start as NaN, so a graph that skipped a write cannot pass as correct.
            for output in (decode.logits, *_state_tensors(decode.new_state)):
                output.fill_(math.nan)
            decode.graph.replay()
            eager_state = _empty_like_state(state)
            eager_logits = self._token_logits(tokens, state, eager_state)
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
        except Exception as failure:
            self.cuda_graphs = False
            self._decode_graphs.clear()
            self.cuda_graph_error = f"{type(failure).__name__}: {str(failure)[:200]}"
            warnings.warn(
                f"Replaying decoding steps as CUDA graphs failed on {self.device} ({self.cuda_graph_error}); "
                "decoding goes on without them, which is slower.",
                RuntimeWarning,
                stacklevel=4,
            )
            return None

    # -- the network --------------------------------------------------------------------------

    def _token_logits(
        self, tokens: torch.Tensor, state: RecurrentState, new_state: RecurrentState
    ) -> torch.Tensor:
        """Float32 logits (B, vocab) after one token per sequence; writes `new_state`."""
        with _intra_op_threads(self.decode_threads):
            return self._logits(self._forward_token(tokens, state, new_state))

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        last = F.layer_norm(last, (self.config.n_embd,), self._ln_out_weight, self._ln_out_bias)
        return self._head(last).float()

    def _forward_token(
        self, tokens: torch.Tensor, state: RecurrentState, new_state: RecurrentState
    ) -> torch.Tensor:
        """One token per sequence: x is (B, C). Writes `new_state`; returns the last hidden."""
        if self._fused_decode:
            try:
                last = self._forward_token_fused(tokens, state, new_state)
            except Exception as error:
                if self._fused_decode_ran:
                    raise
                # The first call compiles the kernels; a GPU that Triton cannot build them
                # for still decodes, by PyTorch ops (`state` is untouched, so run it again).
                self.fused_decode_error = f"{type(error).__name__}: {str(error)[:200]}"
                self._fused_decode = False
                warnings.warn(
                    f"The fused decoding kernels failed on {self.device} ({self.fused_decode_error}); "
                    "decoding goes on with PyTorch ops, which is slower.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            else:
                self._fused_decode_ran = True
                return last
        C = self.config.n_embd
        x = self._embedding[tokens]
        v_first = None
        for i, layer in enumerate(self._layers):
            normed = torch.layer_norm(x, (C,), layer.ln1_weight, layer.ln1_bias)
            mixed = torch.addcmul(normed, state.time_mix_shift[i] - normed, layer.token_shift_mix)
            out, v_first = self._time_mix(layer, mixed, v_first, state.wkv[i], new_state.wkv[i])
            new_state.time_mix_shift[i].copy_(normed)
            x = x + out

            normed = torch.layer_norm(x, (C,), layer.ln2_weight, layer.ln2_bias)
            shifted = torch.addcmul(normed, state.channel_mix_shift[i] - normed, layer.channel_mix_x_k)
            new_state.channel_mix_shift[i].copy_(normed)
            x = x + self._channel_mix(layer, shifted)
        return x

    def _forward_token_fused(
        self, tokens: torch.Tensor, state: RecurrentState, new_state: RecurrentState
    ) -> torch.Tensor:
        """`_forward_token` in 11 kernels a layer: the same arithmetic, regrouped for a GPU.

        Per layer: the token shift (with the residual add and the layer norm), the r/k/v
        product, the LoRA down product, its activations, the LoRA up product, the time mix
        from there to the output projection's input (wkv step included), the output
        projection, the channel mix's token shift, its two products and the activation
        between them. Each layer's last residual add happens in the next one's first kernel.
        """
        C, H = self.config.n_embd, self.config.n_head
        use_triton = self._fused_kernels_use_triton
        x = self._embedding[tokens]
        channel_mix_out = None
        v_first = None
        for i, layer in enumerate(self._layers):
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

    def _forward_sequence(
        self, tokens: torch.Tensor, state: RecurrentState, new_state: RecurrentState
    ) -> torch.Tensor:
        """A (B, T) block of tokens at once. Writes `new_state`; returns the last hidden (B, C).

        `state` may be `new_state` itself (the segments after the first): every layer reads
        its slice of the state before writing it.
        """
        C = self.config.n_embd
        x = self._embedding[tokens]  # (B, T, C)
        v_first = None
        for i, layer in enumerate(self._layers):
            normed = F.layer_norm(x, (C,), layer.ln1_weight, layer.ln1_bias)
            previous = torch.cat([state.time_mix_shift[i].unsqueeze(1), normed[:, :-1]], dim=1)
            mixed = torch.addcmul(normed, previous - normed, layer.token_shift_mix.unsqueeze(1))
            out, v_first = self._time_mix(layer, mixed, v_first, state.wkv[i], new_state.wkv[i])
            new_state.time_mix_shift[i].copy_(normed[:, -1])
            x = x + out

            normed = F.layer_norm(x, (C,), layer.ln2_weight, layer.ln2_bias)
            previous = torch.cat([state.channel_mix_shift[i].unsqueeze(1), normed[:, :-1]], dim=1)
            shifted = torch.addcmul(normed, previous - normed, layer.channel_mix_x_k)
            new_state.channel_mix_shift[i].copy_(normed[:, -1])
            x = x + self._channel_mix(layer, shifted)
        return x[:, -1]

    def _time_mix(
        self,
        layer: _LayerWeights,
        mixed: torch.Tensor,
        v_first: torch.Tensor | None,
        wkv_state: torch.Tensor,
        wkv_out: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RWKV-7 time-mix on token-shift-mixed inputs `mixed` (6, *batch_dims, C).

        batch_dims is (B,) for one token per sequence or (B, T) for sequences. Writes the
        layer's new wkv state into `wkv_out`; returns (output, v_first).
        """
        H, N = self.config.n_head, self.config.head_size
        batch_dims = mixed.shape[1:-1]
        x_r, x_k, x_v, x_w, x_a, x_g = mixed.unbind(0)
        r, k, v = layer.receptance(x_r), layer.key(x_k), layer.value(x_v)

        # LoRAs: x0 + (x @ down) @ up as one addmm each (B*T rows).
        rows = (-1, x_w.shape[-1])
        decay_logit = torch.addmm(layer.w0, torch.tanh(x_w.reshape(rows) @ layer.w1), layer.w2)
        iclr = torch.sigmoid(torch.addmm(layer.a0, x_a.reshape(rows) @ layer.a1, layer.a2)).view_as(r)
        gate = torch.sigmoid(x_g @ layer.g1) @ layer.g2

        heads = (*batch_dims, H, N)
        kk = (k * layer.k_k).view(heads)
        kk = (kk / torch.linalg.vector_norm(kk, dim=-1, keepdim=True).clamp_min(1e-12)).view_as(k)
        k = k * torch.addcmul(layer.one_minus_k_a, iclr, layer.k_a)
        if v_first is None:
            v_first = v
        else:  # the value residual: mix in layer 0's values, gated per channel
            v_gate = torch.addmm(layer.v0, x_v.reshape(rows) @ layer.v1, layer.v2).view_as(v)
            v = torch.lerp(v, v_first, torch.sigmoid_(v_gate))
        log_w = torch.sigmoid_(decay_logit.float()).mul_(-_DECAY_SCALE).view_as(r)

        if len(batch_dims) == 1 and not mixed.is_cuda:
            out = _wkv7_one_token_cpu(r, log_w, k, v, kk, iclr, wkv_state, wkv_out, N)
        else:
            # The kernel takes (B, T, H, N) and a = -kk, b = kk * iclr (its delta-rule form).
            seq_shape = (batch_dims[0], batch_dims[1] if len(batch_dims) == 2 else 1, H, N)
            out, final_state = wkv7(
                *(t.reshape(seq_shape) for t in (r, log_w, k, v, -kk, kk * iclr)), wkv_state
            )
            wkv_out.copy_(final_state)
        out = torch.group_norm(
            out.to(mixed.dtype).reshape(-1, H * N), H, layer.ln_x_weight, layer.ln_x_bias,
            _GROUP_NORM_EPS, False,
        ).view_as(r)
        bonus = (r * k * layer.r_k).view(heads).sum(dim=-1, keepdim=True) * v.view(heads)
        out = out + bonus.view_as(r)
        return layer.output(out * gate), v_first

    @staticmethod
    def _channel_mix(layer: _LayerWeights, shifted: torch.Tensor) -> torch.Tensor:
        return layer.ffn_value(torch.relu(layer.ffn_key(shifted)).square_())


def _empty_like_state(state: RecurrentState) -> RecurrentState:
    return RecurrentState(
        torch.empty_like(state.time_mix_shift),
        torch.empty_like(state.wkv),
        torch.empty_like(state.channel_mix_shift),
    )


def _copy_state(target: RecurrentState, source: RecurrentState) -> None:
    for target_tensor, source_tensor in zip(_state_tensors(target), _state_tensors(source)):
        target_tensor.copy_(source_tensor)


def _state_tensors(state: RecurrentState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return state.time_mix_shift, state.wkv, state.channel_mix_shift


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest |actual - expected| as a fraction of expected's scale (at least 1); NaN stays NaN."""
    scale = max(float(expected.float().abs().max()), 1.0)
    return float((actual.float() - expected.float()).abs().max()) / scale

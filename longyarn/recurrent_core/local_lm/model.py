"""The local RWKV-7 ("x070") language model: load a checkpoint, run tokens, get logits.

The arithmetic is the reference `rwkv.model.RWKV_x070` in fp32 (see block.py), with the first
layer norm (ln0) folded into the embedding table as the reference does. On a CPU the weight
matrices are stored at the precision the user chooses (`weights=`, see precision.py: half
precision by default) while the arithmetic stays fp32. Longer inputs run as whole sequences
through `longyarn.kernels.wkv7` (chunked on a CPU, Triton on a GPU), split into segments to
bound memory. A single token takes the decode path: on a CPU, for one sequence whose matrices
all stream through our kernel, one C++ call for every block (`native_step`); otherwise
compiled blocks (`compiled_decode`, eager ops where compiling is off or fails); on a GPU
through fused kernels, replayed as a CUDA graph (`cuda_decode`).

This file reads top to bottom: loading, the public `forward`, its input checks, the choice
of decode path for a single token, and the network itself (sequence, token).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import InvalidInput
from .block import channel_mix, time_mix, token_block
from .checkpoint import load_checkpoint
from .compiled_decode import CompiledDecode, compiled_decode_wanted, head_logits
from .config import RWKV7Config, without_unused_tensors
from .cpu_decode import decode_threads, intra_op_threads
from .cuda_decode import DecodeGraphError, DecodeGraphs, forward_token_fused
from .native_step import block_operands, token_blocks
from .precision import HALF, HugePageArena, choose_half_precision, resolve_weights
from .projection import Projection
from .state import RecurrentState, StateSignature
from .weights import prepare_layers

# Longer inputs run in segments of this many tokens: exact (the state carries over) and it
# keeps the sequence intermediates to a few hundred MB at the 0.1B size.
PREFILL_SEGMENT_TOKENS = 1024
# The matrices whose storage precision `weights=` sets (the LoRAs follow, see weights.py).
_PROJECTED = ("att.receptance.weight", "att.key.weight", "att.value.weight", "att.output.weight",
              "ffn.key.weight", "ffn.value.weight")


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
        weights: str | None = None,
    ) -> None:
        """Use `load` or `from_state_dict`; this expects an already validated state dict.

        weights: how a CPU model computing in float32 stores its weight matrices: "fp32",
        "fp16", "bf16", "int8", or None/"half" for fp16 or bf16, whichever holds them (see
        precision.py). Other models keep them in `dtype`.

        fused_decode: run single tokens through `cuda_decode.forward_token_fused` (default: on
        CUDA). On a CPU it runs the kernels' PyTorch references, which is how tests check it.
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
        self._decode_graphs = DecodeGraphs(device)
        self._eager_decodes = 0
        # Why single tokens stopped being replayed as CUDA graphs, if capturing one failed.
        self.cuda_graph_error: str | None = None
        # None: Triton on CUDA, PyTorch elsewhere; tests set True to run Triton's interpreter.
        self._fused_kernels_use_triton: bool | None = None
        # Threads for one-token steps on a CPU (None: torch's current setting); see cpu_decode.
        self.decode_threads: int | None = decode_threads(config, device)
        cpu_storage = device.type == "cpu" and dtype == torch.float32
        # The storage precision of the weight matrices: fp32/fp16/bf16/int8, or the dtype's name.
        self.weights = _storage_precision(state_dict, config, resolve_weights(weights)) if cpu_storage else str(dtype)
        # One token on a CPU runs compiled (see compiled_decode); set False to decode eagerly.
        self._compiled_decode = CompiledDecode(cpu_storage and not self._fused_decode and compiled_decode_wanted())
        # One token of one sequence as one C++ call where every matrix streams through our
        # kernel (see native_step); set False to decode it as compiled or eager PyTorch.
        self.native_decode = cpu_storage and not self._fused_decode
        self._native_operands: list[torch.Tensor] | None = None
        self._native_operands_built = False
        with torch.no_grad():
            # The reference folds ln0 into the table: emb rows are only ever used normalised.
            self._embedding = F.layer_norm(
                state_dict["emb.weight"].float(),
                (config.n_embd,),
                state_dict["blocks.0.ln0.weight"].float(),
                state_dict["blocks.0.ln0.bias"].float(),
            ).to(device=device, dtype=dtype)
            storage = self.weights if cpu_storage else "fp32"
            with HugePageArena():  # the matrices share huge pages (see precision.py)
                self._layers = prepare_layers(
                    state_dict, config, device, dtype, stack_for_decode=self._fused_decode, precision=storage
                )
                self._head = Projection(state_dict["head.weight"], device, dtype, storage)
            self._ln_out_weight = state_dict["ln_out.weight"].to(device=device, dtype=dtype)
            self._ln_out_bias = state_dict["ln_out.bias"].to(device=device, dtype=dtype)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        weights: str | None = None,
    ) -> LocalLM:
        """Load a BlinkDL RWKV-7 .pth file or a longyarn model directory.

        dtype defaults to float32 on the CPU and bfloat16 on CUDA. weights (CPU): "fp32",
        "fp16", "bf16", "int8", or None for half precision (fp16 or bf16, whichever holds the
        checkpoint; see precision.py). Raises `CheckpointError` for a missing or foreign file
        and `InvalidInput` for a device or precision that is not there.
        """
        resolved_device = _resolve_device(device)
        resolved_dtype = _resolve_dtype(dtype, resolved_device)
        resolve_weights(weights)  # refuse a bad name before reading the file
        loaded = load_checkpoint(path)
        return cls(
            loaded.state_dict,
            loaded.config,
            resolved_device,
            resolved_dtype,
            tokenizer=loaded.tokenizer,
            extra_config=loaded.extra_config,
            weights=weights,
        )

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        tokenizer: Any | None = None,
        weights: str | None = None,
    ) -> LocalLM:
        """A model from in-memory weights with BlinkDL key names (e.g. during training)."""
        from .checkpoint import _infer_rwkv7_config

        resolved_device = _resolve_device(device)
        resolved_dtype = _resolve_dtype(dtype, resolved_device)
        resolve_weights(weights)
        cpu_weights = without_unused_tensors({k: v.detach().to("cpu") for k, v in state_dict.items()})
        config = _infer_rwkv7_config(cpu_weights, "The given state dict")
        return cls(cpu_weights, config, resolved_device, resolved_dtype, tokenizer=tokenizer, weights=weights)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def compile_decode(self) -> bool:
        """Whether single tokens on a CPU run as compiled code (see compiled_decode)."""
        return self._compiled_decode.active

    @compile_decode.setter
    def compile_decode(self, enabled: bool) -> None:
        self._compiled_decode.enabled = bool(enabled)

    @property
    def compile_decode_error(self) -> str | None:
        """Why compiling the CPU decoding step failed, if it did (decoding then runs eagerly)."""
        return self._compiled_decode.error

    def weight_bytes(self) -> int:
        """Bytes of weight matrices one decoded token reads (all blocks and the head)."""
        matrices = [self._head]
        for layer in self._layers:
            matrices += [layer.receptance, layer.key, layer.value, layer.output, layer.ffn_key, layer.ffn_value]
        total = sum(matrix.nbytes for matrix in matrices)
        for layer in self._layers:
            for lora in (layer.w1, layer.w2, layer.a1, layer.a2, layer.v1, layer.v2, layer.g1, layer.g2):
                total += 0 if lora is None else lora.numel() * lora.element_size()
        return total

    def zero_state(self, batch_size: int = 1) -> RecurrentState:
        """The state before any token, on this model's device."""
        return RecurrentState.zeros(self.config, batch_size, self.device, self.dtype)

    def forward(
        self,
        token_ids: Sequence[int] | torch.Tensor,
        state: RecurrentState | None = None,
        *,
        in_place: bool = False,
    ) -> tuple[torch.Tensor, RecurrentState]:
        """Run tokens after `state` (None: the start of a text); return (logits, new state).

        token_ids: a sequence of ints or a 1-D tensor (logits of shape (vocab,)), or a 2-D
        (batch, time) tensor (logits (batch, vocab)). The logits are the last position's,
        float32, on the model's device. `state` is never modified, unless `in_place`: then
        the caller gives `state` up and a CPU model writes the new state into its tensors
        (no state allocated per token, as a decoding loop wants); use the returned state
        either way. Running a sequence at once or token by token gives the same logits and
        state (up to float rounding).
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
            replayed = self._decode_graphs.replay(tokens[:, 0], state)
            if replayed is None:
                replayed = self._capture_decode_graph(tokens[:, 0], state)
            if replayed is not None:
                logits, new_state = replayed
                return (logits if batched else logits[0]), new_state
        # Every layer reads its slice of the state before writing it, so the new state may be
        # written over the old one (the fused GPU path keeps two).
        # Not before the compiled step has run once: a first run that fails to compile
        # reruns eagerly from the old state (see CompiledDecode.run).
        overwrite = (in_place and self.device.type == "cpu" and not self._fused_decode
                     and (self._compiled_decode.ready or not self._compiled_decode.active
                          or (seq_len == 1 and self._native_step_for(state) is not None)))
        new_state = state if overwrite else state.empty_like()
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
                logits = self._last_logits(last)
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

    def _capture_decode_graph(
        self, tokens: torch.Tensor, state: RecurrentState
    ) -> tuple[torch.Tensor, RecurrentState] | None:
        """Capture the single-token step for this batch size and replay it: (logits, new
        state), or None to decode eagerly; if capturing fails, with a warning, from now on."""
        try:
            return self._decode_graphs.capture_and_replay(tokens, state, self._token_logits)
        except DecodeGraphError as failure:
            self.cuda_graphs = False
            self.cuda_graph_error = str(failure)
            warnings.warn(
                f"Replaying decoding steps as CUDA graphs failed on {self.device} ({self.cuda_graph_error}); "
                "decoding goes on without them, which is slower.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    # -- the network --------------------------------------------------------------------------

    def _token_logits(
        self, tokens: torch.Tensor, state: RecurrentState, new_state: RecurrentState
    ) -> torch.Tensor:
        """Float32 logits (B, vocab) after one token per sequence; writes `new_state`."""
        with intra_op_threads(self.decode_threads):
            if self._fused_decode or self.device.type != "cpu":
                return self._logits(self._forward_token(tokens, state, new_state))

            native = self._native_step_for(new_state)
            if native is not None:
                if new_state is not state:
                    for target, source in zip(new_state.tensors(), state.tensors()):
                        target.copy_(source)
                last = token_blocks(self._embedding[tokens[0]], new_state.time_mix_shift,
                                    new_state.channel_mix_shift, new_state.wkv, native)
                return self._logits(last)

            def step(block, head) -> torch.Tensor:
                # The blocks update `new_state` in place (see token_block): from a copy of
                # `state` unless it is `state` itself, which `forward(in_place=True)` allows.
                if new_state is not state:
                    for target, source in zip(new_state.tensors(), state.tensors()):
                        target.copy_(source)
                last = self._blocks_one_token(block, tokens, new_state)
                return head(last, self._ln_out_weight, self._ln_out_bias, self._head)

            return self._compiled_decode.run(step)

    @property
    def decodes_natively(self) -> bool:
        """Whether one sequence's next token runs as one C++ call (see native_step)."""
        return self._native_operands_if_on() is not None

    def _native_operands_if_on(self) -> list[torch.Tensor] | None:
        if not self.native_decode:
            return None
        if not self._native_operands_built:
            self._native_operands = block_operands(self._layers, self.config.head_size)
            self._native_operands_built = True
        return self._native_operands

    def _native_step_for(self, state: RecurrentState) -> list[torch.Tensor] | None:
        """The C++ step's operands where it runs this state's next token (see native_step)."""
        if state.batch_size != 1 or not all(t.is_contiguous() for t in state.tensors()):
            return None
        return self._native_operands_if_on()

    def _last_logits(self, last: torch.Tensor) -> torch.Tensor:
        """Logits of a sequence's last position: the compiled head where decoding is compiled
        (an eager product of a few rows would pack a second copy of the head, see projection.py)."""
        if self._compiled_decode.ready:
            with intra_op_threads(self.decode_threads):  # as decoding runs it: the same graph
                return self._compiled_decode.run(
                    lambda block, head: head(last, self._ln_out_weight, self._ln_out_bias, self._head)
                )
        return self._logits(last)

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        return head_logits(last, self._ln_out_weight, self._ln_out_bias, self._head)

    def _blocks_one_token(
        self, block, tokens: torch.Tensor, state: RecurrentState, new_state: RecurrentState | None = None
    ) -> torch.Tensor:
        """One token per sequence through every block (`block`: compiled or eager
        `token_block`); writes `new_state` (None: `state`, in place), returns the last hidden
        state (B, C)."""
        x = self._embedding[tokens]
        v_first = None
        for i, layer in enumerate(self._layers):
            new_slices = () if new_state is None else (
                new_state.time_mix_shift[i], new_state.channel_mix_shift[i], new_state.wkv[i])
            x, v_first = block(
                layer, x, v_first, state.time_mix_shift[i], state.channel_mix_shift[i], state.wkv[i], *new_slices
            )
        return x

    def _forward_token(
        self, tokens: torch.Tensor, state: RecurrentState, new_state: RecurrentState
    ) -> torch.Tensor:
        """One token per sequence: x is (B, C). Writes `new_state`; returns the last hidden."""
        if self._fused_decode:
            try:
                last = forward_token_fused(
                    self._layers, self._embedding, self.config, tokens, state, new_state,
                    self._fused_kernels_use_triton,
                )
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
        return self._blocks_one_token(token_block, tokens, state, new_state)

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
            out, v_first = time_mix(
                layer, mixed, v_first, state.wkv[i], new_state.wkv[i], self.config.n_head, self.config.head_size
            )
            new_state.time_mix_shift[i].copy_(normed[:, -1])
            x = x + out

            normed = F.layer_norm(x, (C,), layer.ln2_weight, layer.ln2_bias)
            previous = torch.cat([state.channel_mix_shift[i].unsqueeze(1), normed[:, :-1]], dim=1)
            shifted = torch.addcmul(normed, previous - normed, layer.channel_mix_x_k)
            new_state.channel_mix_shift[i].copy_(normed[:, -1])
            x = x + channel_mix(layer, shifted)
        return x[:, -1]


def _storage_precision(state_dict: Mapping[str, torch.Tensor], config: RWKV7Config, weights: str) -> str:
    """The precision the weight matrices are stored at: `weights`, with "half" resolved."""
    if weights != HALF:
        return weights
    keys = ["head.weight"] + [f"blocks.{i}.{name}" for i in range(config.n_layer) for name in _PROJECTED]
    return choose_half_precision(state_dict[key] for key in keys)

"""The recurrent state of an RWKV-7 model: everything it remembers about the text so far.

Per layer it holds the previous token's normalised input to the time-mix and to the
channel-mix (their "token shift") and the wkv matrix state of each head. The tensors are
stacked over layers so that copying, moving and saving a state are single operations.
`LocalLM.forward` never changes a state in place; it returns a new one, so a story can
branch from any saved state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..errors import InvalidInput
from .config import RWKV7Config

_BYTES_FORMAT = "longyarn-rwkv7-state"
_BYTES_VERSION = 1


@dataclass(frozen=True)
class StateSignature:
    """The sizes a state must share with a model to be used with it."""

    n_layer: int
    n_embd: int
    head_size: int

    def describe(self) -> str:
        return f"{self.n_layer} layers x {self.n_embd} wide, head size {self.head_size}"

    @classmethod
    def of_config(cls, config: RWKV7Config) -> StateSignature:
        return cls(config.n_layer, config.n_embd, config.head_size)


@dataclass(frozen=True)
class RecurrentState:
    """An RWKV-7 state for a batch of B sequences.

    time_mix_shift:    (n_layer, B, n_embd), the model's dtype
    wkv:               (n_layer, B, n_head, head_size, head_size) float32, indexed
                       [layer, batch, head, value channel, key channel] as in the reference
    channel_mix_shift: (n_layer, B, n_embd), the model's dtype
    """

    time_mix_shift: torch.Tensor
    wkv: torch.Tensor
    channel_mix_shift: torch.Tensor

    @classmethod
    def zeros(
        cls,
        config: RWKV7Config,
        batch_size: int = 1,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> RecurrentState:
        """The state before any token: all zeros."""
        L, C, H, N = config.n_layer, config.n_embd, config.n_head, config.head_size
        return cls(
            time_mix_shift=torch.zeros(L, batch_size, C, device=device, dtype=dtype),
            wkv=torch.zeros(L, batch_size, H, N, N, device=device, dtype=torch.float32),
            channel_mix_shift=torch.zeros(L, batch_size, C, device=device, dtype=dtype),
        )

    @property
    def signature(self) -> StateSignature:
        n_layer, _, n_embd = self.time_mix_shift.shape
        return StateSignature(n_layer, n_embd, self.wkv.shape[-1])

    @property
    def batch_size(self) -> int:
        return self.time_mix_shift.shape[1]

    @property
    def device(self) -> torch.device:
        return self.wkv.device

    def clone(self) -> RecurrentState:
        """An independent copy."""
        return RecurrentState(
            self.time_mix_shift.clone(), self.wkv.clone(), self.channel_mix_shift.clone()
        )

    def repeated(self, copies: int) -> RecurrentState:
        """A batch of `copies` sequences, each starting from this one-sequence state (for several
        continuations of one prompt, read once)."""
        return RecurrentState(
            self.time_mix_shift.repeat(1, copies, 1),
            self.wkv.repeat(1, copies, 1, 1, 1),
            self.channel_mix_shift.repeat(1, copies, 1),
        )

    def rows(self, indices: list[int]) -> RecurrentState:
        """The sequences at `indices` of the batch, in that order (a copy)."""
        index = torch.tensor(indices, device=self.device)
        return RecurrentState(
            self.time_mix_shift.index_select(1, index),
            self.wkv.index_select(1, index),
            self.channel_mix_shift.index_select(1, index),
        )

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(time_mix_shift, wkv, channel_mix_shift)."""
        return self.time_mix_shift, self.wkv, self.channel_mix_shift

    def empty_like(self) -> RecurrentState:
        """A state of the same shapes, dtypes and device, its values unset (for a step to write)."""
        return RecurrentState(
            torch.empty_like(self.time_mix_shift),
            torch.empty_like(self.wkv),
            torch.empty_like(self.channel_mix_shift),
        )

    def to(self, device: str | torch.device) -> RecurrentState:
        """The same state on `device` (a copy unless it is already there)."""
        return RecurrentState(
            self.time_mix_shift.to(device), self.wkv.to(device), self.channel_mix_shift.to(device)
        )

    def check_signature(self, expected: StateSignature) -> None:
        """Raise `InvalidInput` unless this state belongs to a model with `expected` sizes."""
        if not self._is_well_formed() or self.signature != expected:
            raise InvalidInput(
                f"This state belongs to a model of {self._describe_own_shape()}, not to this "
                f"model ({expected.describe()}); nothing was computed, so pass a state made by "
                "this model or None to start fresh."
            )

    def _is_well_formed(self) -> bool:
        shift, wkv, cshift = self.time_mix_shift, self.wkv, self.channel_mix_shift
        if shift.dim() != 3 or wkv.dim() != 5 or cshift.shape != shift.shape:
            return False
        n_layer, batch, n_embd = shift.shape
        n_head, head_size = wkv.shape[2], wkv.shape[3]
        return (
            wkv.shape[:2] == (n_layer, batch)
            and wkv.shape[4] == head_size
            and n_head * head_size == n_embd
            and wkv.dtype == torch.float32
            and shift.is_floating_point()
            and cshift.dtype == shift.dtype
        )

    def _describe_own_shape(self) -> str:
        if self._is_well_formed():
            return self.signature.describe()
        return (
            f"malformed tensors {tuple(self.time_mix_shift.shape)}, {tuple(self.wkv.shape)}, "
            f"{tuple(self.channel_mix_shift.shape)}"
        )

    def to_bytes(self) -> bytes:
        """Serialise to bytes (safetensors), e.g. to store a story's state beside its step."""
        from safetensors.torch import save

        metadata = {
            "format": _BYTES_FORMAT,
            "format_version": str(_BYTES_VERSION),
            "signature": json.dumps(self.signature.__dict__),
        }
        tensors = {
            "time_mix_shift": self.time_mix_shift.detach().cpu().contiguous(),
            "wkv": self.wkv.detach().cpu().contiguous(),
            "channel_mix_shift": self.channel_mix_shift.detach().cpu().contiguous(),
        }
        return save(tensors, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes, device: str | torch.device = "cpu") -> RecurrentState:
        """Read a state written by `to_bytes`; raise `InvalidInput` if `data` is not one."""
        from safetensors.torch import load

        try:
            tensors = load(bytes(data))
            state = cls(
                tensors["time_mix_shift"], tensors["wkv"], tensors["channel_mix_shift"]
            )
        except Exception as error:  # safetensors raises several kinds for foreign bytes
            raise InvalidInput(
                f"These bytes are not a saved RWKV-7 state ({type(error).__name__}); nothing "
                "was loaded, so pass bytes made by RecurrentState.to_bytes."
            ) from error
        if not state._is_well_formed():
            raise InvalidInput(
                f"These bytes hold a state of {state._describe_own_shape()}; nothing was "
                "loaded, so pass bytes made by RecurrentState.to_bytes."
            )
        return state.to(device)

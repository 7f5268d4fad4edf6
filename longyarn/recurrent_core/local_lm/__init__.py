"""The local recurrent language model (RWKV-7), run by longyarn's own code on its kernels.

    from longyarn.recurrent_core.local_lm import LocalLM
    lm = LocalLM.load(path, device="cpu")       # a BlinkDL RWKV-7 .pth, or a longyarn model dir
    logits, state = lm.forward(token_ids, state=None)

Importing this package does not import torch: the names below load their modules (and torch)
on first use, so that the engine reads the chat format (`chat_format`) without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import load_checkpoint, save_own_format
    from .config import RWKV7Config
    from .model import LocalLM
    from .state import RecurrentState, StateSignature

_HOMES = {
    "LocalLM": "model",
    "RWKV7Config": "config",
    "RecurrentState": "state",
    "StateSignature": "state",
    "load_checkpoint": "checkpoint",
    "save_own_format": "checkpoint",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


__all__ = [
    "LocalLM",
    "RWKV7Config",
    "RecurrentState",
    "StateSignature",
    "load_checkpoint",
    "save_own_format",
]

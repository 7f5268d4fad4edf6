"""The local recurrent language model (RWKV-7), run by longyarn's own code on its kernels.

    from longyarn.recurrent_core.local_lm import LocalLM
    lm = LocalLM.load(path, device="cpu")       # a BlinkDL RWKV-7 .pth, or a longyarn model dir
    logits, state = lm.forward(token_ids, state=None)

Importing this package imports torch; the rest of `recurrent_core` imports it lazily.
"""

from .checkpoint import load_checkpoint, save_own_format
from .config import RWKV7Config
from .model import LocalLM
from .state import RecurrentState, StateSignature

__all__ = [
    "LocalLM",
    "RWKV7Config",
    "RecurrentState",
    "StateSignature",
    "load_checkpoint",
    "save_own_format",
]

"""One token on a CPU as compiled code: each block, and the head, fused by torch.compile.

Eagerly, one token is ~60 small PyTorch ops per block, each paying dispatch and a pass over
its inputs. Compiled by inductor (C++ through the system compiler, OpenMP threads), a block
becomes a handful of loops: the layer norms, lerps and LoRAs fuse with the products, and
each weight matrix is read once, in the precision it is stored at, widened to fp32 in
registers (see projection.py). The wkv step is two fused passes over the state.

One compiled function serves every block after the first (their weights are its inputs), so
compiling costs two block graphs and one head graph per batch size. Inductor keeps what it
built in its on-disk cache (here under the user's cache directory unless
TORCHINDUCTOR_CACHE_DIR says otherwise), so a later start pays only for tracing.

One sequence whose matrices all stream through our kernel (half precision or int8, 512 wide or
more) decodes by one C++ call instead (native_step.py); this step serves the rest: several
sequences at once (versions sampled as a batch), fp32 weights, narrow models.

Turn it off with LONGYARN_COMPILE_DECODE=0 or `LocalLM.compile_decode = False`. If compiling
fails (no C++ compiler, an unsupported platform) decoding goes on eagerly, with a warning.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from .block import token_block
from .inductor_cache import use_persistent_cache
from .projection import Projection

COMPILE_ENVIRONMENT_VARIABLE = "LONGYARN_COMPILE_DECODE"
RECOMPILE_LIMIT = 64
# Each call would check the sizes and strides of every input and buffer again (some 550
# checks a token at the 0.1B shape): dynamo's guards have checked the inputs, and the shapes
# of the extern products' outputs (projection.py) are checked by the compiled-decoding tests.
INDUCTOR_OPTIONS = {"size_asserts": False, "alignment_asserts": False}


def compiled_decode_wanted() -> bool:
    """Whether single tokens on a CPU should run compiled (LONGYARN_COMPILE_DECODE, default on)."""
    return os.environ.get(COMPILE_ENVIRONMENT_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


def head_logits(
    x: torch.Tensor, ln_out_weight: torch.Tensor, ln_out_bias: torch.Tensor, head: Projection
) -> torch.Tensor:
    """Float32 logits (B, vocab) of the last hidden state x (B, C)."""
    x = F.layer_norm(x, (x.shape[-1],), ln_out_weight, ln_out_bias)
    return head(x).float()


class CompiledDecode:
    """The compiled block and head functions of one model, built on first use.

    `block` and `head` return the compiled functions, or the eager ones once compiling has
    failed (`error` then says why). Safe to call from several threads.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.error: str | None = None
        self._lock = threading.Lock()
        self._block: Callable | None = None
        self._head: Callable | None = None
        self._ran = False

    @property
    def active(self) -> bool:
        return self.enabled and self.error is None

    @property
    def ready(self) -> bool:
        """Active and compiled (its first step ran)."""
        return self.active and self._ran

    def _compiled(self) -> tuple[Callable, Callable]:
        with self._lock:
            if self._block is None:
                use_persistent_cache()
                # Each precision, batch size and thread count is its own graph (several models
                # may share a process); past the limit a call runs eagerly, never wrongly.
                torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
                self._block = torch.compile(token_block, dynamic=False, options=INDUCTOR_OPTIONS)
                self._head = torch.compile(head_logits, dynamic=False, options=INDUCTOR_OPTIONS)
        return self._block, self._head

    def run(self, eager: Callable[[Callable, Callable], torch.Tensor]) -> torch.Tensor:
        """`eager(block, head)` with the compiled functions, or with the eager ones when
        compiling is off or failed. A failure on the first compiled step falls back (the step
        reruns eagerly: it only writes the new state); later failures are raised."""
        if not self.active:
            return eager(token_block, head_logits)
        block, head = self._compiled()
        try:
            result = eager(block, head)
        except Exception as error:
            if self._ran:
                raise
            self.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}"
            warnings.warn(
                f"Compiling the CPU decoding step failed ({self.error}); decoding goes on with "
                "PyTorch ops, which is slower. Install a C++ compiler (gcc or clang) to get it back.",
                RuntimeWarning,
                stacklevel=4,
            )
            return eager(token_block, head_logits)
        self._ran = True
        return result

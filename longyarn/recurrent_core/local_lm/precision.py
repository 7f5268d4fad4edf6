"""The precision a CPU model keeps its weight matrices at: fp32, fp16, bf16 or int8.

On a CPU the arithmetic is always fp32 (activations, sums, the state); what a user chooses
is how the weight matrices are stored, which sets how many bytes each token reads:

- "fp32": the checkpoint's values widened to fp32; the exactness reference.
- "fp16" / "bf16": half the bytes. A matrix is scaled by a power of two (exact) so that its
  largest magnitude sits just below fp16's maximum, so no value overflows fp16.
- "int8": a quarter of the bytes, weight-only: each output row gets one fp32 scale
  (its largest magnitude / 127). The small LoRA matrices stay at half precision.

The default ("half") is fp16 or bf16, whichever holds the checkpoint:
1. fp16 when every matrix round-trips exactly through (scaled) fp16: BlinkDL's bf16 releases;
2. else bf16 when every matrix round-trips exactly through bf16: bf16 weights whose range is
   too wide for fp16 (values below fp16's smallest after scaling);
3. else (weights trained and saved in fp32, exact in neither) fp16 when every value lands in
   fp16's normal range after scaling, so each weight keeps a relative error under 2^-11,
   and bf16 (relative error under 2^-8) when some would not.

What each costs in quality, as tests/local_lm/test_weight_precision.py holds it on the test
checkpoints (largest |logit - fp32 logit| over 128 greedy tokens; greedy agreement with fp32):
- fp16 / bf16 of bf16 weights (BlinkDL's releases): exact storage, so 1e-4 (sums in another
  order) and 100%; of fp32-trained weights: 5e-3 (fp16) and 5e-2 (bf16), at least 98%.
- int8: 0.25 (0.05 to 0.12 measured, on logits of magnitude up to about 5), at least 90%
  (96 to 99% measured). benchmarks/cpu_peers.py prints the same figures for random bf16
  weights of a real shape (0.1B: 0.13 and 94.5%; 0.4B: 0.36 and 91.4%) and, with
  --demo-corpus, the demo model's held-out bits per byte (fp32 1.5600, int8 1.5601).
"""

from __future__ import annotations

import contextvars
import math
import mmap
import sys
from dataclasses import dataclass
from typing import Iterable, Literal

import torch

from ..errors import InvalidInput

WeightPrecision = Literal["fp32", "fp16", "bf16", "int8"]
WEIGHT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
HALF = "half"  # the default: fp16 or bf16, as the weights allow (see the module docstring)
WEIGHT_CHOICES: tuple[str, ...] = (HALF, *WEIGHT_PRECISIONS)

_STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8}
_FP16_TOP_EXPONENT = 14  # scale the largest magnitude into [2^14, 2^15), below fp16's max
_FP16_SMALLEST_NORMAL = 2.0**-14
INT8_LEVELS = 127


def resolve_weights(weights: str | None) -> str:
    """The user's choice checked and normalised: one of WEIGHT_CHOICES ("half" for None)."""
    if weights is None:
        return HALF
    name = str(weights).strip().lower()
    aliases = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "auto": HALF, "default": HALF}
    name = aliases.get(name, name)
    if name not in WEIGHT_CHOICES:
        raise InvalidInput(
            f"weights={weights!r} is not a precision this model keeps its weights at; nothing "
            f"was loaded, so use one of {', '.join(WEIGHT_CHOICES)} (half: fp16 or bf16, as the "
            "checkpoint allows)."
        )
    return name


def fp16_scale(weight: torch.Tensor) -> float:
    """The power of two that puts `weight`'s largest magnitude in [2^14, 2^15) (1 if all zero)."""
    largest = float(weight.abs().max()) if weight.numel() else 0.0
    if largest == 0.0 or not math.isfinite(largest):
        return 1.0
    return 2.0 ** (_FP16_TOP_EXPONENT - math.floor(math.log2(largest)))


def _fp16_fit(weight: torch.Tensor) -> tuple[bool, bool]:
    """(exact in scaled fp16, every nonzero value within fp16's normal range after scaling)."""
    scaled = weight.float() * fp16_scale(weight)
    exact = torch.equal(scaled.to(torch.float16).float(), scaled)
    nonzero = scaled.abs()[scaled != 0]
    normal = nonzero.numel() == 0 or float(nonzero.min()) >= _FP16_SMALLEST_NORMAL
    return exact and bool(torch.isfinite(scaled).all()), normal


def choose_half_precision(matrices: Iterable[torch.Tensor]) -> str:
    """"fp16" or "bf16" for these weight matrices, by the rules in the module docstring."""
    fp16_exact = bf16_exact = fp16_normal = True
    for weight in matrices:
        exact, normal = _fp16_fit(weight)
        fp16_exact &= exact
        fp16_normal &= normal
        if bf16_exact:
            wide = weight.float()
            bf16_exact = torch.equal(wide.to(torch.bfloat16).float(), wide)
    if fp16_exact:
        return "fp16"
    if bf16_exact:
        return "bf16"
    return "fp16" if fp16_normal else "bf16"


@dataclass(frozen=True)
class StoredMatrix:
    """A weight matrix (out, in) at a storage precision: W = values * scale[:, None].

    scale is None for fp32 and otherwise an fp32 vector, one entry per output row: a power
    of two for fp16 (the same in every row), 1 for bf16, the row's step for int8.
    """

    values: torch.Tensor
    scale: torch.Tensor | None

    @property
    def precision(self) -> str:
        return next(name for name, dtype in _STORAGE_DTYPES.items() if dtype == self.values.dtype)

    def dequantized(self) -> torch.Tensor:
        """The fp32 matrix these values stand for."""
        wide = self.values.float()
        return wide if self.scale is None else wide * self.scale.unsqueeze(1)


def store_matrix(weight_out_in: torch.Tensor, precision: str) -> StoredMatrix:
    """`weight_out_in` (out, in) at `precision` (one of WEIGHT_PRECISIONS), on its device."""
    weight = weight_out_in.float()
    rows = weight.shape[0]
    if precision == "fp32":
        return StoredMatrix(in_huge_pages(weight.contiguous()), None)
    if precision == "fp16":
        scale = fp16_scale(weight)
        values = (weight * scale).to(torch.float16)
        return StoredMatrix(
            in_huge_pages(values), torch.full((rows,), 1.0 / scale, dtype=torch.float32, device=weight.device)
        )
    if precision == "bf16":
        return StoredMatrix(
            in_huge_pages(weight.to(torch.bfloat16)), torch.ones(rows, dtype=torch.float32, device=weight.device)
        )
    if precision == "int8":
        step = weight.abs().amax(dim=1).clamp_min(1e-30) / INT8_LEVELS
        values = torch.round(weight / step.unsqueeze(1)).clamp_(-INT8_LEVELS, INT8_LEVELS).to(torch.int8)
        return StoredMatrix(in_huge_pages(values), step)
    raise ValueError(f"unknown weight precision {precision!r}")


HUGE_PAGE_BYTES = 2 << 20
# The mappings a loading model's matrices share (see `HugePageArena`).
ARENA_CHUNK_BYTES = 64 << 20
_ALIGNMENT = 64  # a cache line: each matrix starts on one


def _huge_page_memory(nbytes: int) -> torch.Tensor | None:
    """`nbytes` of fresh anonymous memory (bytes) that starts on a 2 MB boundary and that Linux
    backs with huge pages where it gives them; None elsewhere, or if the memory is refused."""
    if not sys.platform.startswith("linux"):
        return None
    size = -(-nbytes // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
    try:
        # One huge page more, to start on a 2 MB boundary (Linux before 6.7 does not align
        # large mappings), so that every page of it can be a huge one.
        memory = mmap.mmap(-1, size + HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        memory.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError, AttributeError):  # no memory left, or no madvise here
        return None
    # The tensor holds a reference to the mapping, which lives until its last view is gone.
    whole = torch.frombuffer(memory, dtype=torch.uint8)
    start = -whole.data_ptr() % HUGE_PAGE_BYTES
    return whole[start : start + size]


def _copied_into(memory: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return memory[: values.nbytes].view(values.dtype).view(values.shape).copy_(values)


class HugePageArena:
    """Memory backed by huge pages that one model's weight matrices are copied into, one after
    another, as it loads (`with HugePageArena():`). Decoding streams every weight once a token,
    and with 4 KB pages the address translations slow that stream: measured on a 2-core EPYC,
    a 0.1B model at fp16 decodes 2 to 9% faster with its matrices in huge pages. Matrices
    share pages, so one under 2 MB (the 0.1B shape's 768 x 768 ones, the LoRAs) gets them too,
    and none rounds its memory up to whole huge pages (3 MB of 2 MB pages for a 4.7 MB matrix).
    A mapping lives until the last matrix in it is gone."""

    def __init__(self) -> None:
        self._free: torch.Tensor | None = None  # the rest of the newest mapping
        self._entered: list[contextvars.Token] = []

    def __enter__(self) -> HugePageArena:
        self._entered.append(_LOADING_ARENA.set(self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _LOADING_ARENA.reset(self._entered.pop())
        self._free = None

    def place(self, values: torch.Tensor) -> torch.Tensor | None:
        """A contiguous copy of a CPU tensor in this arena, or None where it cannot be made."""
        needed = -(-values.nbytes // _ALIGNMENT) * _ALIGNMENT
        if needed > ARENA_CHUNK_BYTES // 2:
            memory = _huge_page_memory(values.nbytes)  # a mapping of its own
            return None if memory is None else _copied_into(memory, values)
        if self._free is None or self._free.numel() < needed:
            self._free = _huge_page_memory(ARENA_CHUNK_BYTES)
            if self._free is None:
                return None
        placed = _copied_into(self._free, values)
        self._free = self._free[needed:]
        return placed


# The arena of the model loading in this thread or task, if any.
_LOADING_ARENA: contextvars.ContextVar[HugePageArena | None] = contextvars.ContextVar("loading_arena", default=None)


def in_huge_pages(values: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of a CPU matrix in memory backed by huge pages, where Linux gives them:
    in the loading model's `HugePageArena` if there is one, else, for a matrix of 2 MB or more,
    in a mapping of its own. Otherwise, or if the memory is refused, the matrix itself,
    contiguous."""
    values = values.contiguous()
    if values.device.type != "cpu" or values.numel() == 0:
        return values
    arena = _LOADING_ARENA.get()
    if arena is not None:
        placed = arena.place(values)
    elif values.nbytes >= HUGE_PAGE_BYTES:
        memory = _huge_page_memory(values.nbytes)
        placed = None if memory is None else _copied_into(memory, values)
    else:
        placed = None
    return values if placed is None else placed

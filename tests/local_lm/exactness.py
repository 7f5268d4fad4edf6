"""Exactness that holds on any CPU: float32 results measured against a float64 truth.

fp32 sums run in an order that differs between CPUs and BLAS kernels, so two float32
implementations of a 12-layer model differ by an amount no fixed bound covers on every machine.
What does hold: our float32 error against the same model computed in float64 (the training
model, `RWKV7`, in float64) is at most a small factor of a trusted float32 implementation's
error against it (the `rwkv` package's, or our own other path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longyarn.training.training_model import RWKV7

# Ours is 2-3x the rwkv package's error on the 0.1B layout on the CPUs measured; 8 leaves room
# for other summation orders without letting a real mistake (errors of 1e-2 and up) through.
ERROR_FACTOR = 8.0
# Where the trusted error is near zero (tiny models), a float32 rounding or two more is fine.
ABSOLUTE_SLACK = 2e-6


@dataclass
class Float64Truth:
    model: RWKV7

    @classmethod
    def of(cls, state_dict: dict[str, torch.Tensor]) -> "Float64Truth":
        return cls(RWKV7.from_state_dict(state_dict).double().eval())

    def run(self, tokens: list[int]) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
        """Logits at every position (T, vocab) and each layer's (shift, wkv, shift) state."""
        with torch.no_grad():
            logits, state = self.model(torch.tensor([tokens]))
        return logits[0], [tuple(part[0] for part in layer) for layer in state]


def error(actual: torch.Tensor, truth: torch.Tensor) -> float:
    return float((actual.double() - truth.double()).abs().max())


def assert_as_exact_as(ours: torch.Tensor, trusted: torch.Tensor, truth: torch.Tensor, what: str) -> None:
    """Our error against the truth is within ERROR_FACTOR of the trusted result's error."""
    ours_error, trusted_error = error(ours, truth), error(trusted, truth)
    assert ours_error <= ERROR_FACTOR * trusted_error + ABSOLUTE_SLACK, (
        f"{what}: our float32 error {ours_error:.3g} against float64 is over {ERROR_FACTOR:g}x "
        f"the trusted float32 error {trusted_error:.3g}"
    )

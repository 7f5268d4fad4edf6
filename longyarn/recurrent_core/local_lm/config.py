"""The shape of an RWKV-7 ("x070") model, read from its weights.

BlinkDL's .pth files carry no config, so every size is inferred from tensor shapes, the way
the reference `rwkv.model.RWKV_x070` does: heads and head size from `att.r_k`, vocabulary and
width from `emb.weight`, layers from the `blocks.N.` prefixes, and the four LoRA widths from
their down-projections. Layer 0 has no value-residual LoRA (v0/v1/v2): its values are the
"v_first" that later layers mix back in. BlinkDL's training code (RWKV-LM, `RWKV_Tmix_x070`)
still creates v0/v1/v2 in layer 0 and never uses them, so checkpoints saved from it carry
them, while converted ones often do not: both layouts load, and layer 0's are ignored, as the
reference does.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Mapping

import torch

from ..errors import CheckpointError

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")
# Created by RWKV-LM's training code in every layer but used only from layer 1 on.
UNUSED_LAYER_0_TENSORS = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")


def without_unused_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` without layer 0's value-residual tensors, which no forward pass reads."""
    return {key: tensor for key, tensor in state_dict.items() if key not in UNUSED_LAYER_0_TENSORS}


@dataclass(frozen=True)
class RWKV7Config:
    """Sizes of an RWKV-7 model; two models with equal configs accept each other's states."""

    n_layer: int
    n_embd: int
    head_size: int
    vocab_size: int
    dim_ffn: int
    lora_w: int  # decay LoRA width
    lora_a: int  # in-context learning rate ("a", "iclr") LoRA width
    lora_v: int  # value-residual gate LoRA width (0 when there is a single layer)
    lora_g: int  # output gate LoRA width

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], source: str) -> RWKV7Config:
        """Infer the sizes from BlinkDL key names and shapes; `source` names the file in errors."""
        for key in ("emb.weight", "blocks.0.att.r_k", "blocks.0.att.w1", "blocks.0.att.a1",
                    "blocks.0.att.g1", "blocks.0.ffn.key.weight"):
            if key not in state_dict:
                raise CheckpointError(
                    f"{source} has no '{key}' tensor, so it is not a complete RWKV-7 checkpoint; "
                    "nothing was loaded, so check that the file was saved from an RWKV-7 model."
                )
        vocab_size, n_embd = state_dict["emb.weight"].shape
        r_k = state_dict["blocks.0.att.r_k"]
        if r_k.dim() != 2:
            raise CheckpointError(
                f"{source} stores 'blocks.0.att.r_k' with shape {tuple(r_k.shape)} instead of "
                "(heads, head size); nothing was loaded, so save the weights in BlinkDL's layout."
            )
        n_head, head_size = r_k.shape
        n_layer = 1 + max(int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)))
        lora_v = state_dict["blocks.1.att.v1"].shape[1] if "blocks.1.att.v1" in state_dict else 0
        config = cls(
            n_layer=n_layer,
            n_embd=n_embd,
            head_size=head_size,
            vocab_size=vocab_size,
            dim_ffn=state_dict["blocks.0.ffn.key.weight"].shape[0],
            lora_w=state_dict["blocks.0.att.w1"].shape[1],
            lora_a=state_dict["blocks.0.att.a1"].shape[1],
            lora_v=lora_v,
            lora_g=state_dict["blocks.0.att.g1"].shape[1],
        )
        if n_head * head_size != n_embd:
            raise CheckpointError(
                f"{source} has {n_head} heads of size {head_size} but a width of {n_embd}; "
                "nothing was loaded, so the file is damaged or not an RWKV-7 checkpoint."
            )
        return config

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor a BlinkDL RWKV-7 checkpoint of this config holds, with its shape."""
        C, F = self.n_embd, self.dim_ffn
        shapes: dict[str, tuple[int, ...]] = {
            "emb.weight": (self.vocab_size, C),
            "blocks.0.ln0.weight": (C,),
            "blocks.0.ln0.bias": (C,),
            "ln_out.weight": (C,),
            "ln_out.bias": (C,),
            "head.weight": (self.vocab_size, C),
        }
        per_channel = (1, 1, C)
        for i in range(self.n_layer):
            p = f"blocks.{i}."
            for name in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias",
                         "att.ln_x.weight", "att.ln_x.bias"):
                shapes[p + name] = (C,)
            for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "k_k", "k_a"):
                shapes[p + "att." + name] = per_channel
            for name, width in (("w", self.lora_w), ("a", self.lora_a), ("g", self.lora_g)):
                shapes[f"{p}att.{name}1"] = (C, width)
                shapes[f"{p}att.{name}2"] = (width, C)
            if i > 0:
                shapes[p + "att.v0"] = per_channel
                shapes[p + "att.v1"] = (C, self.lora_v)
                shapes[p + "att.v2"] = (self.lora_v, C)
            shapes[p + "att.r_k"] = (self.n_head, self.head_size)
            for name in ("receptance", "key", "value", "output"):
                shapes[f"{p}att.{name}.weight"] = (C, C)
            shapes[p + "ffn.x_k"] = per_channel
            shapes[p + "ffn.key.weight"] = (F, C)
            shapes[p + "ffn.value.weight"] = (C, F)
        return shapes


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def validate_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: RWKV7Config, source: str
) -> None:
    """Raise `CheckpointError` unless the keys and shapes are exactly those of `config`.

    Per-channel parameters are accepted as (1, 1, C) (BlinkDL) or (C,), as the reference
    squeezes them either way.
    """
    expected = config.expected_shapes()
    missing = [k for k in expected if k not in state_dict]
    if missing:
        shown = ", ".join(f"'{k}'" for k in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(
            f"{source} lacks the RWKV-7 tensors {shown}{more}; nothing was loaded, "
            "so check that the file is a complete RWKV-7 checkpoint."
        )
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        shown = ", ".join(f"'{k}'" for k in unexpected[:3])
        more = f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""
        raise CheckpointError(
            f"{source} holds tensors a plain RWKV-7 model does not have ({shown}{more}); "
            "nothing was loaded, so use a standard RWKV-7 checkpoint (DeepEmbed and other "
            "variants are not supported)."
        )
    for key, shape in expected.items():
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise CheckpointError(
                f"{source} stores '{key}' as something other than a floating-point tensor; "
                "nothing was loaded, so check that the file is an RWKV-7 checkpoint."
            )
        if _squeezed(tuple(tensor.shape)) != _squeezed(shape):
            raise CheckpointError(
                f"{source} stores '{key}' with shape {tuple(tensor.shape)} where this model "
                f"needs {shape}; nothing was loaded, so the file is damaged or mixes two models."
            )

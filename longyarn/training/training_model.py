"""RWKV-7 ("Goose") as a trainable nn.Module, parallel over the sequence.

The parameter names and shapes are exactly those of BlinkDL's RWKV-7 checkpoints, so
`model.state_dict()` loads in the reference `rwkv` package (`RWKV_x070`) and in our own
inference engine, and a BlinkDL .pth loads here (`RWKV7.from_state_dict`). The forward pass
computes what `RWKV_x070.forward_seq` computes; only the state recurrence differs in how it
is evaluated: `longyarn.kernels.wkv7.chunk_torch` runs it chunk by chunk and is differentiable.

One layer, with x the normalised input and x_prev the input one token earlier:
    time mix:    token-shifted mixes of x give r, k, v, decay w, in-context rate a, gate g;
                 the state S (per head, N x N) follows
                 S_t = S_{t-1} diag(w_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T, o_t = S_t r_t
                 with a = -kk, b = kk * iclr (kk is k normalised per head);
                 layer 0's values are mixed into every later layer's values ("v_first").
    channel mix: relu(W_k x)^2 projected back, on a token-shifted input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from longyarn.kernels.rwkv7_fused import DECAY_SCALE, GROUP_NORM_EPS
from longyarn.kernels.wkv7.chunk_torch import wkv7_chunk_torch
from longyarn.recurrent_core.local_lm.config import RWKV7Config, without_unused_tensors

# Per layer: (time-mix x_prev (B, C), wkv state (B, H, N, N) float32, channel-mix x_prev (B, C)).
LayerState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _lora_dim(n_embd: int, factor: float, power: float) -> int:
    """BlinkDL's low-rank sizes: factor * C**power rounded to a multiple of 32, at least 32."""
    return max(32, int(round(factor * n_embd**power / 32) * 32))


def blinkdl_config(vocab_size: int, n_embd: int, n_layer: int, head_size: int = 64) -> RWKV7Config:
    """The sizes BlinkDL's training code derives from width and depth (FFN 4C, its LoRA widths)."""
    if n_embd % head_size:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of head_size ({head_size})")
    return RWKV7Config(
        n_layer=n_layer,
        n_embd=n_embd,
        head_size=head_size,
        vocab_size=vocab_size,
        dim_ffn=4 * n_embd,
        lora_w=_lora_dim(n_embd, 1.8, 0.5),
        lora_a=_lora_dim(n_embd, 1.8, 0.5),
        lora_v=_lora_dim(n_embd, 1.3, 0.5) if n_layer > 1 else 0,
        lora_g=_lora_dim(n_embd, 0.6, 0.8),
    )


def _channel_vector(n_embd: int, fill: float = 0.0) -> nn.Parameter:
    """A per-channel parameter in BlinkDL's (1, 1, C) shape."""
    return nn.Parameter(torch.full((1, 1, n_embd), fill))


def _token_shift(x: torch.Tensor, x_prev: torch.Tensor | None) -> torch.Tensor:
    """x one position earlier along T; position 0 sees x_prev (zeros at the start of a text)."""
    if x_prev is None:
        return F.pad(x, (0, 0, 1, -1))
    return torch.cat([x_prev[:, None].to(x.dtype), x[:, :-1]], dim=1)


class TimeMix(nn.Module):
    """RWKV-7's attention replacement (BlinkDL's `att`)."""

    def __init__(self, config: RWKV7Config, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.n_head, self.head_size = config.n_head, config.head_size
        C = config.n_embd
        self.x_r, self.x_w, self.x_k = _channel_vector(C), _channel_vector(C), _channel_vector(C)
        self.x_v, self.x_a, self.x_g = _channel_vector(C), _channel_vector(C), _channel_vector(C)
        self.w0 = _channel_vector(C)
        self.w1 = nn.Parameter(torch.zeros(C, config.lora_w))
        self.w2 = nn.Parameter(torch.zeros(config.lora_w, C))
        self.a0 = _channel_vector(C)
        self.a1 = nn.Parameter(torch.zeros(C, config.lora_a))
        self.a2 = nn.Parameter(torch.zeros(config.lora_a, C))
        if layer_id > 0:  # layer 0 defines v_first and has no value residual
            self.v0 = _channel_vector(C, 1.0)
            self.v1 = nn.Parameter(torch.zeros(C, config.lora_v))
            self.v2 = nn.Parameter(torch.zeros(config.lora_v, C))
        self.g1 = nn.Parameter(torch.zeros(C, config.lora_g))
        self.g2 = nn.Parameter(torch.zeros(config.lora_g, C))
        self.k_k = _channel_vector(C, 0.85)
        self.k_a = _channel_vector(C, 1.0)
        self.r_k = nn.Parameter(torch.zeros(self.n_head, self.head_size))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, C, eps=GROUP_NORM_EPS)

    def forward(
        self,
        x: torch.Tensor,
        v_first: torch.Tensor | None,
        x_prev: torch.Tensor | None,
        wkv_state: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, T, C). Returns (output, v_first, new wkv state)."""
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        xx = _token_shift(x, x_prev) - x
        xr, xw, xk = x + xx * self.x_r, x + xx * self.x_w, x + xx * self.x_k
        xv, xa, xg = x + xx * self.x_v, x + xx * self.x_a, x + xx * self.x_g

        r = self.receptance(xr)
        w = torch.tanh(xw @ self.w1) @ self.w2
        k = self.key(xk)
        v = self.value(xv)
        iclr = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)  # in-context learning rate
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0).view(B, T, C)
        k = k * (1 + (iclr - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        # The recurrence runs in float32 even under bf16 autocast (it sums over many tokens),
        # and in float64 in a float64 model, the truth that exactness tests compare against.
        compute = torch.float64 if self.w0.dtype == torch.float64 else torch.float32
        log_w = -DECAY_SCALE * torch.sigmoid((self.w0 + w).to(compute))
        r_, w_, k_, v_, a_, b_ = (
            t.to(compute).reshape(B, T, H, N) for t in (r, log_w, k, v, -kk, kk * iclr)
        )
        o, wkv_state = wkv7_chunk_torch(r_, w_, k_, v_, a_, b_, wkv_state)
        o = self.ln_x(o.reshape(B * T, C)).view(B, T, C)
        bonus = (r * k * self.r_k.view(1, 1, C)).view(B, T, H, N).sum(dim=-1, keepdim=True)
        o = o + (bonus * v.view(B, T, H, N)).view(B, T, C)
        return self.output(o * g), v_first, wkv_state


class ChannelMix(nn.Module):
    """RWKV-7's feed-forward (BlinkDL's `ffn`)."""

    def __init__(self, config: RWKV7Config):
        super().__init__()
        self.x_k = _channel_vector(config.n_embd)
        self.key = nn.Linear(config.n_embd, config.dim_ffn, bias=False)
        self.value = nn.Linear(config.dim_ffn, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None) -> torch.Tensor:
        xk = x + (_token_shift(x, x_prev) - x) * self.x_k
        return self.value(torch.relu(self.key(xk)) ** 2)


class Block(nn.Module):
    """One layer's parameters; `RWKV7.forward` runs them, threading v_first and the states."""

    def __init__(self, config: RWKV7Config, layer_id: int):
        super().__init__()
        if layer_id == 0:  # normalises the embeddings; the reference folds it into emb at load
            self.ln0 = nn.LayerNorm(config.n_embd)
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.att = TimeMix(config, layer_id)
        self.ffn = ChannelMix(config)


class RWKV7(nn.Module):
    """A trainable RWKV-7 language model with BlinkDL's parameter names."""

    def __init__(self, config: RWKV7Config):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> RWKV7:
        """Build a model whose sizes are read off a BlinkDL-named state dict, and load it."""
        state_dict = without_unused_tensors(state_dict)
        model = cls(RWKV7Config.from_state_dict(state_dict, "The state dict"))
        model.load_state_dict({key: value.float() for key, value in state_dict.items()})
        return model

    def forward(
        self, idx: torch.Tensor, state: list[LayerState] | None = None
    ) -> tuple[torch.Tensor, list[LayerState]]:
        """idx: (B, T) token ids. Returns (logits (B, T, vocab), state after idx); logits are
        float32, or float64 in a float64 model."""
        x = self.blocks[0].ln0(self.emb(idx))
        v_first = None
        new_state: list[LayerState] = []
        for i, block in enumerate(self.blocks):
            att_prev, wkv_state, ffn_prev = state[i] if state is not None else (None, None, None)
            h = block.ln1(x)
            out, v_first, wkv_state = block.att(h, v_first, att_prev, wkv_state)
            x = x + out
            f = block.ln2(x)
            x = x + block.ffn(f, ffn_prev)
            new_state.append((h[:, -1].detach(), wkv_state.detach(), f[:, -1].detach()))
        logits = self.head(self.ln_out(x))
        return (logits if logits.dtype == torch.float64 else logits.float()), new_state

    def initialise(self, seed: int | None = None) -> RWKV7:
        """RWKV-7's own initialisation: learns fast from tiny embeddings and zero outputs.

        Mixing coefficients and decays vary smoothly across channels and layers, so some heads
        remember for a few tokens and others for thousands; output projections start at zero,
        so at first each block passes its input through unchanged.
        """
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        C, L = self.config.n_embd, self.config.n_layer
        channel = torch.arange(C, dtype=torch.float32) / C  # 0 .. (C-1)/C

        def uniform_(tensor: torch.Tensor, bound: float) -> None:
            tensor.copy_(torch.rand(tensor.shape, generator=generator) * 2 * bound - bound)

        def orthogonal_(tensor: torch.Tensor, gain: float) -> None:
            rows, cols = tensor.shape
            q, r = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=generator))
            q = q * torch.sign(torch.diagonal(r))  # a uniformly random orthogonal matrix
            tensor.copy_((q if rows >= cols else q.T) * gain)

        with torch.no_grad():
            uniform_(self.emb.weight, 1e-4)
            scale = 0.5 * math.sqrt(self.config.vocab_size / C) if self.config.vocab_size > C else 0.5
            orthogonal_(self.head.weight, scale)
            for layer_id, block in enumerate(self.blocks):
                depth = layer_id / max(1, L - 1)  # 0 at the first layer, 1 at the last
                shallowness = 1.0 - layer_id / L  # 1 at the first layer, almost 0 at the last
                att, ffn = block.att, block.ffn
                mix_powers = {"x_r": 0.2, "x_w": 0.9, "x_k": 0.7, "x_v": 0.7, "x_a": 0.9, "x_g": 0.2}
                for name, power in mix_powers.items():
                    getattr(att, name).copy_((1.0 - channel.pow(power * shallowness)).view(1, 1, C))
                decay_speed = -7 + 5 * (torch.arange(C) / max(1, C - 1)).pow(0.85 + depth**0.5)
                att.w0.copy_((decay_speed + 0.5).view(1, 1, C))
                att.a0.zero_()
                low_rank = [(att.w1, att.w2), (att.a1, att.a2), (att.g1, att.g2)]
                if layer_id > 0:
                    att.v0.fill_(1.0)
                    low_rank.append((att.v1, att.v2))
                for down, up in low_rank:  # zero down-projections: each LoRA starts as a constant
                    down.zero_()
                    orthogonal_(up, 0.1)
                att.k_k.fill_(0.85)
                att.k_a.fill_(1.0)
                att.r_k.fill_(-0.04)
                uniform_(att.receptance.weight, 0.5 / math.sqrt(C))
                uniform_(att.key.weight, 0.05 / math.sqrt(C))
                uniform_(att.value.weight, 0.5 / math.sqrt(C))
                att.output.weight.zero_()
                att.ln_x.weight.fill_(((1 + layer_id) / L) ** 0.7)
                att.ln_x.bias.zero_()
                ffn.x_k.copy_((1.0 - channel.pow(shallowness**4)).view(1, 1, C))
                uniform_(ffn.key.weight, 0.5 / math.sqrt(C))
                ffn.value.weight.zero_()
        return self

    def decayed_parameter_names(self) -> set[str]:
        """Weight matrices (BlinkDL decays these only; low-rank factors and vectors are exempt)."""
        return {name for name, p in self.named_parameters() if name.endswith(".weight") and p.ndim >= 2}

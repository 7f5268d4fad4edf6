"""Evaluating the demo model in training: held-out bits per byte, mean loss, and a sample."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from longyarn.training.tokenizer_training import END_OF_TEXT
from longyarn.training.training_model import RWKV7


def document_stream(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """All texts as one token stream, each preceded by END_OF_TEXT (as in training)."""
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        ids.append(end_of_text)
        ids.extend(encoding.ids)
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def mean_loss(model: RWKV7, windows: torch.Tensor, batch_size: int, autocast) -> float:
    """Mean next-token loss (nats) over (n, T + 1) windows, each from a zero state."""
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size]
        with autocast():
            logits, _ = model(batch[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
        count += batch[:, 1:].numel()
    return total / max(1, count)


@torch.no_grad()
def bits_per_byte(model: RWKV7, tokenizer, texts: Sequence[str], ctx_len: int, streams: int,
                  device: str, autocast, carry_state: bool = True) -> dict[str, float]:
    """Held-out bits per UTF-8 byte: the summed NLL of every text token, in bits, over the bytes.

    The texts form one stream (each preceded by END_OF_TEXT), cut into `streams` contiguous
    pieces read in parallel; each piece is read in ctx_len windows, with the recurrent state
    carried across them (the way the model reads a long prompt) or, with carry_state=False,
    from a zero state each time (as in training). Every text token is predicted exactly once;
    END_OF_TEXT targets (and padding) are not counted, as they stand for no bytes.
    """
    stream = document_stream(tokenizer, texts)
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    n_targets = stream.numel() - 1
    streams = max(1, min(streams, n_targets))
    piece = math.ceil(n_targets / streams)
    padded = F.pad(stream, (0, streams * piece + 1 - stream.numel()), value=end_of_text)
    inputs = padded[:-1].view(streams, piece).to(device)
    targets = padded[1:].view(streams, piece).to(device)

    total_nll, counted, state = 0.0, 0, None
    for start in range(0, piece, ctx_len):
        window_targets = targets[:, start : start + ctx_len]
        with autocast():
            logits, state = model(inputs[:, start : start + ctx_len], state if carry_state else None)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), window_targets.flatten(), reduction="none")
        keep = window_targets.flatten() != end_of_text
        total_nll += nll[keep].sum().item()
        counted += int(keep.sum())
    n_bytes = sum(len(text.encode("utf-8")) for text in texts)
    return {
        "bits_per_byte": total_nll / math.log(2) / n_bytes,
        "nll_per_token": total_nll / max(1, counted),
        "tokens": counted,
        "bytes": n_bytes,
    }


@torch.no_grad()
def sample_text(model: RWKV7, tokenizer, prompt: str, n_tokens: int, device: str, seed: int,
                temperature: float = 0.8, top_p: float = 0.9) -> str:
    """Continue `prompt` for n_tokens with nucleus sampling (seeded), reading one token at a time."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    ids = [end_of_text, *tokenizer.encode(prompt, add_special_tokens=False).ids]
    logits, state = model(torch.tensor([ids], device=device))
    generated: list[int] = []
    for _ in range(n_tokens):
        probs = torch.softmax(logits[0, -1].float().cpu() / temperature, dim=-1)
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
        sorted_probs[outside] = 0.0
        token = int(order[torch.multinomial(sorted_probs, 1, generator=generator)])
        if token == end_of_text:
            break
        generated.append(token)
        logits, state = model(torch.tensor([[token]], device=device), state)
    return prompt + tokenizer.decode(generated)

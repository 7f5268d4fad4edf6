"""What a training step reads: random windows of the books, and rows of recall episodes."""

from __future__ import annotations

import numpy as np
import torch

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.training.recall_episodes import Filler, RecallRows


class BatchSampler:
    """Random (ctx_len + 1)-token windows of the training stream, in an order fixed by the seed."""

    def __init__(self, tokens: np.ndarray, batch_size: int, ctx_len: int, seed: int, device: str):
        if tokens.size <= ctx_len + 1:
            raise InvalidInput(
                f"The training data has {tokens.size} tokens, too few for windows of {ctx_len + 1}; "
                "nothing was trained, so lower --ctx-len or prepare more text."
            )
        self.tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(device)
        self.batch_size, self.ctx_len = batch_size, ctx_len
        self.rng = np.random.default_rng(seed)
        self.offsets = torch.arange(ctx_len + 1, device=device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self.rng.integers(0, self.tokens.numel() - self.ctx_len - 1, size=self.batch_size)
        windows = self.tokens[torch.from_numpy(starts).to(self.offsets.device)[:, None] + self.offsets]
        return windows[:, :-1], windows[:, 1:]


def book_texts(tokens: np.ndarray, tokenizer, end_of_text_id: int) -> list[str]:
    """The books of a training stream (each preceded by END_OF_TEXT) as text again."""
    starts = np.flatnonzero(np.asarray(tokens) == end_of_text_id).tolist() + [len(tokens)]
    return [tokenizer.decode(np.asarray(tokens[a + 1 : b]).tolist()) for a, b in zip(starts, starts[1:]) if b > a + 1]


class RecallBatches:
    """Rows of recall episodes cut from the training books, as (inputs, targets, loss weights).

    Every token weighs 1 in the loss except answer tokens, which weigh `answer_weight`;
    `answers` marks them, so training can report how many it gets right.
    """

    def __init__(self, tokens: np.ndarray, tokenizer, end_of_text_id: int, rows: int, length: int,
                 seed: int, answer_weight: float, device: str):
        filler = Filler(book_texts(tokens, tokenizer, end_of_text_id), tokenizer, min_sentences=20)
        self.episodes = RecallRows(tokenizer, filler, length, seed, end_of_text_id)
        self.rows, self.answer_weight, self.device = rows, answer_weight, device

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, weight of each target, whether each target is an answer token)."""
        built = [self.episodes.row() for _ in range(self.rows)]
        windows = torch.tensor([ids for ids, _ in built], dtype=torch.long, device=self.device)
        answers = torch.tensor([flags[1:] for _, flags in built], dtype=torch.bool, device=self.device)
        weights = 1.0 + (self.answer_weight - 1.0) * answers.float()
        return windows[:, :-1], windows[:, 1:], weights, answers

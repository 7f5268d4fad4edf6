"""Choosing the local model's next token, and a loop that turns a model into a text stream.

    config = SamplerConfig.from_sampling(request.sampling, stop=request.stop)
    generation = generate(step_fn, first_logits, tokenizer, config, should_stop=cancelled.is_set)
    for piece in generation:          # text, never half a character, never a stop string
        ...
    generation.finish_reason          # "stop", "length", "eos" or "cancelled"

The sampler follows the rwkv package's `PIPELINE` (rwkv/utils.py) so that the RWKV
community's settings mean here what they mean there:
- presence and frequency penalties are subtracted from the logits of tokens generated so
  far: `logit -= presence + frequency * occurrence`; after every token all occurrences are
  multiplied by `penalty_decay`, so the frequency part fades while the presence part stays;
  tokens made only of spaces, tabs and digits add nothing to their occurrence;
- a repetition penalty above 1 (llama.cpp's and Hugging Face's) divides the positive logits
  of tokens generated so far by it, and multiplies the negative ones;
- top-p, top-k and min-p choose the candidates from the penalised distribution at temperature
  1 (min-p keeps the tokens at least min_p times as likely as the likeliest), and the
  temperature then reshapes the choice among those candidates (probabilities to the power
  1/temperature), so a high temperature never lets an unlikely token in;
- temperature 0 or top_k 1 is greedy.

Randomness comes from a `torch.Generator` per sampler, seeded from the config (or from the
operating system, with the seed kept in `Sampler.seed`), never from global RNG state: the
same seed, logits and settings give the same tokens.
"""

from __future__ import annotations

import functools
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Literal

import numpy as np
import torch

from ..types import Sampling
from ..errors import InvalidInput, ModelError
from .tokenizer import StreamingDetokenizer, Tokenizer

FinishReason = Literal["stop", "length", "eos", "cancelled"]

# The RWKV community's settings for free story writing: ChatRWKV's `+gen` mode (continue a
# text, e.g. with its novel models), BlinkDL/ChatRWKV v2/chat.py: GEN_TEMP = 1.2,
# GEN_TOP_P = 0.5, GEN_alpha_presence = 0.4, GEN_alpha_frequency = 0.4,
# GEN_penalty_decay = 0.996. (ChatRWKV's API_DEMO_CHAT.py uses 1.0 / 0.3 / 0.5 / 0.5 / 0.996
# for chat and Q&A, where accuracy matters more than variety.)
STORY_WRITING_SAMPLING = Sampling(
    temperature=1.2,
    top_p=0.5,
    top_k=0,
    presence_penalty=0.4,
    frequency_penalty=0.4,
    penalty_decay=0.996,
)

_FREQUENCY_EXEMPT_TOKEN = re.compile(rb"[ \t0-9]+")


def _never() -> bool:
    return False


@dataclass(frozen=True)
class SamplerConfig:
    """How to pick tokens and when to stop; validated on creation (`InvalidInput`).

    temperature: 0 is greedy; otherwise candidates' probabilities are raised to 1/temperature.
    top_p: keep the fewest most likely tokens whose probabilities sum to at least top_p
        (tokens tied with the last one kept stay too); 1 keeps all.
    top_k: keep at most this many most likely tokens; 0 is off, 1 is greedy.
    min_p: keep tokens at least min_p times as likely as the likeliest; 0 is off.
    presence_penalty, frequency_penalty, penalty_decay: RWKV-style penalties (module doc).
    repetition_penalty: divides repeated tokens' positive logits (multiplies negative); 1 is off.
    max_tokens: the most tokens one generation produces.
    stop: strings that end generation; they and anything after them are not emitted.
    seed: makes a generation reproducible; None draws a fresh seed (kept in `Sampler.seed`).
    banned_token_ids: tokens never produced (e.g. end of text, to force a full length).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    penalty_decay: float = 0.996
    max_tokens: int = 600
    stop: tuple[str, ...] = ()
    seed: int | None = None
    banned_token_ids: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "banned_token_ids", tuple(int(i) for i in self.banned_token_ids))
        problems = []
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            problems.append(f"temperature must be 0 or more, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be above 0 and at most 1, not {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be 0 (off) or more, not {self.top_k}")
        if not (math.isfinite(self.presence_penalty) and math.isfinite(self.frequency_penalty)):
            problems.append("the penalties must be finite numbers")
        if not 0 <= self.min_p < 1:
            problems.append(f"min_p must be at least 0 and below 1, not {self.min_p}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty >= 1):
            problems.append(f"repetition_penalty must be 1 (off) or more, not {self.repetition_penalty}")
        if not 0 <= self.penalty_decay <= 1:
            problems.append(f"penalty_decay must be between 0 and 1, not {self.penalty_decay}")
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be at least 1, not {self.max_tokens}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append("every stop string must be non-empty text")
        if problems:
            raise InvalidInput(
                f"The sampling settings are not valid ({'; '.join(problems)}); nothing was "
                "generated, so correct them and try again."
            )

    @classmethod
    def from_sampling(cls, sampling: Sampling, stop: Iterable[str] = ()) -> SamplerConfig:
        """The settings of a backend `Sampling` (which rejects unknown options) plus stop strings."""
        return cls(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            repetition_penalty=sampling.repetition_penalty,
            penalty_decay=sampling.penalty_decay,
            max_tokens=sampling.max_tokens,
            stop=tuple(dict.fromkeys((*sampling.stop, *stop))),
            seed=sampling.seed,
        )

    @property
    def greedy(self) -> bool:
        """Whether the most likely token is always taken (temperature 0 or top_k 1)."""
        return self.temperature == 0 or self.top_k == 1


STORY_WRITING_DEFAULTS = SamplerConfig.from_sampling(STORY_WRITING_SAMPLING)


@functools.lru_cache(maxsize=8)
def frequency_exempt_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """Tokens made only of spaces, tabs and digits: numbers and indentation repeat for good reason.

    The rwkv package's PIPELINE lets these build no frequency penalty (presence still applies).
    """
    exempt = set()
    for token_id in range(tokenizer.vocab_size):
        token = tokenizer.decode_bytes([token_id])
        if token and _FREQUENCY_EXEMPT_TOKEN.fullmatch(token):
            exempt.add(token_id)
    return frozenset(exempt)


class Sampler:
    """Picks tokens from 1-D logits and remembers what it picked, for the penalties.

    One sampler serves one generation: its penalties and random stream start fresh.
    """

    def __init__(self, config: SamplerConfig, frequency_exempt: Iterable[int] = ()):
        self.config = config
        self.seed = config.seed if config.seed is not None else secrets.randbits(63)
        # Draws happen on the CPU whatever the logits' device, so a seed means the same
        # random numbers everywhere.
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(self.seed)
        self._frequency_exempt = frozenset(frequency_exempt)
        # Per-token state, made when the first logits show the vocabulary's size and device.
        self._occurrence: torch.Tensor | None = None  # float32, decayed counts
        self._seen: torch.Tensor | None = None  # bool, generated at least once
        self._recorded_early: list[int] = []  # tokens recorded before any logits were seen

    def sample(self, logits: torch.Tensor) -> int:
        """Choose the next token from `logits` (vocab,) and record it for the penalties."""
        token_ids, weights = self._candidates(logits)
        if len(token_ids) == 1:
            token = int(token_ids[0])
        else:
            cumulative = torch.cumsum(weights, dim=0)
            draw = torch.rand((), generator=self._generator).item() * cumulative[-1]
            index = torch.searchsorted(cumulative, draw.reshape(1), right=True)
            token = int(token_ids[index.clamp(max=len(token_ids) - 1)].item())
        self.record(token)
        return token

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The probabilities that `sample` would draw the next token from, without drawing."""
        token_ids, weights = self._candidates(logits)
        probabilities = torch.zeros(logits.shape[-1], dtype=torch.float32, device=logits.device)
        probabilities[token_ids] = weights / weights.sum()
        return probabilities

    def penalised(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` as float32 after banned tokens and the presence and frequency penalties."""
        if logits.dim() != 1:
            raise InvalidInput(
                f"The sampler takes the logits of one position, shape (vocab,), not "
                f"{tuple(logits.shape)}; nothing was sampled, so pass logits[-1] or one row."
            )
        scores = logits.detach().to(torch.float32).clone()
        self._ensure_state(scores)
        if self.config.banned_token_ids:
            scores[list(self.config.banned_token_ids)] = -math.inf
        config = self.config
        scores -= config.presence_penalty * self._seen + config.frequency_penalty * self._occurrence
        if config.repetition_penalty != 1.0:
            factor = torch.where(scores > 0, 1.0 / config.repetition_penalty, config.repetition_penalty)
            scores = torch.where(self._seen, scores * factor, scores)
        return scores

    def record(self, token_id: int) -> None:
        """Count `token_id` as generated: decay every occurrence, then add this one."""
        if self._occurrence is None:
            self._recorded_early.append(token_id)
            return
        self._occurrence *= self.config.penalty_decay
        if token_id not in self._frequency_exempt:
            self._occurrence[token_id] += 1.0
        self._seen[token_id] = True

    def _candidates(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens that may be drawn and their weights (not necessarily summing to 1)."""
        scores = self.penalised(logits)
        best_score, best_token = scores.max(dim=0)
        if not math.isfinite(best_score.item()):
            raise ModelError(
                "The model gave no finite score to any allowed next token (NaN, or every token "
                "banned); the text so far was kept, so check the checkpoint or the banned tokens."
            )
        config = self.config
        if config.greedy:
            return best_token.reshape(1), torch.ones(1, device=scores.device)
        probabilities = torch.softmax(scores, dim=0)
        kept, kept_probabilities = _most_likely(probabilities, config.top_k, config.top_p)
        if config.min_p > 0:
            floor = config.min_p * kept_probabilities.max()
            chosen = kept_probabilities >= floor  # the likeliest token always stays
            kept, kept_probabilities = kept[chosen], kept_probabilities[chosen]
        if config.temperature == 1.0:
            return kept, kept_probabilities
        return kept, torch.softmax(scores[kept] / config.temperature, dim=0)

    def _ensure_state(self, scores: torch.Tensor) -> None:
        if self._occurrence is not None:
            if self._occurrence.shape != scores.shape:
                raise InvalidInput(
                    f"These logits have {scores.shape[0]} entries but this sampler began with "
                    f"{self._occurrence.shape[0]}; nothing was sampled, so use one sampler per model."
                )
            return
        self._occurrence = torch.zeros_like(scores)
        self._seen = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        for token_id in self._recorded_early:
            self.record(token_id)
        self._recorded_early.clear()


# A nucleus is usually a few dozen tokens: look among the top 64 first, then 8 times more.
_FIRST_NUCLEUS_GUESS = 64


def _most_likely(
    probabilities: torch.Tensor, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens that top-k and top-p keep, and their probabilities.

    Avoids sorting the whole vocabulary (slow on a CPU): `topk` with a growing k finds the
    nucleus, and a token tied with the nucleus's least likely one is kept as well.
    """
    vocab = probabilities.shape[0]
    limit = min(top_k, vocab) if top_k > 0 else vocab
    if top_p >= 1.0:
        if limit == vocab:
            return torch.arange(vocab, device=probabilities.device), probabilities
        values, ids = torch.topk(probabilities, limit)
        return ids, values
    k = min(limit, _FIRST_NUCLEUS_GUESS)
    while True:
        values, ids = _largest(probabilities, k)
        cumulative = torch.cumsum(values, dim=0)
        covered = cumulative[-1].item()
        if k == limit or covered >= top_p:
            break
        # The tail is flatter than the head, so this guess of the nucleus's size is low. A flat
        # distribution (a high temperature, an untrained model) has a nucleus of most of the
        # vocabulary: past a quarter of it, one full sort costs less than another topk.
        guess = max(k * 8, int(k * top_p / covered) if covered > 0 else limit)
        k = guess if guess * 4 <= limit else limit
    target = torch.tensor([top_p], dtype=cumulative.dtype, device=cumulative.device)
    last = min(int(torch.searchsorted(cumulative, target).item()), k - 1)
    keep = min(limit, int((probabilities >= values[last]).sum().item()))
    if keep > k:  # ties with the cutoff reach past what topk returned
        values, ids = _largest(probabilities, keep)
    return ids[:keep], values[:keep]


class _StopStringFilter:
    """Passes text through until a stop string appears; the stop string is never let out.

    Text that could be the start of a stop string is held back until the next piece shows
    whether it is, so a stop string split across tokens is still caught.
    """

    def __init__(self, stops: tuple[str, ...]):
        self._stops = stops
        self._longest = max((len(s) for s in stops), default=0)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was reached)."""
        held = self._held + text
        if not self._stops:
            self._held = ""
            return held, False
        starts = [i for i in (held.find(s) for s in self._stops) if i >= 0]
        if starts:
            self._held = ""
            return held[: min(starts)], True
        keep = 0
        for length in range(min(len(held), self._longest - 1), 0, -1):
            tail = held[-length:]
            if any(stop.startswith(tail) for stop in self._stops):
                keep = length
                break
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """What was held back, once no more text will come."""
        held, self._held = self._held, ""
        return held


class SequenceSampling:
    """One sequence's sampling: its sampler, its text so far, and how it ended.

    `take(logits)` picks the next token from the logits after the text so far, and returns the
    token to feed the model next (None once the sequence has ended: the last token is never
    fed) and the text that token completed. `Generation` runs one of these; the local runtime
    runs several in lockstep on one batch (`LocalRuntime.generate_many`).
    """

    def __init__(self, config: SamplerConfig, tokenizer: Tokenizer):
        self.config = config
        self.sampler = Sampler(config, frequency_exempt_ids(tokenizer))
        self.token_ids: list[int] = []
        self.finish_reason: FinishReason | None = None
        self._eos_id = tokenizer.eos_id
        self._detokenizer = StreamingDetokenizer(tokenizer)
        self._stop_filter = _StopStringFilter(config.stop)

    @property
    def seed(self) -> int:
        return self.sampler.seed

    def take(self, logits: torch.Tensor) -> tuple[int | None, str]:
        """(token to feed next, or None once ended; the text it completed)."""
        if self.finish_reason is not None:
            return None, ""
        if len(self.token_ids) >= self.config.max_tokens:
            return None, self._end("length")
        token = self.sampler.sample(logits)
        if self._eos_id is not None and token == self._eos_id:
            return None, self._end("eos")
        self.token_ids.append(token)
        text, stopped = self._stop_filter.feed(self._detokenizer.push(token))
        if stopped:
            self.finish_reason = "stop"
            return None, text
        if len(self.token_ids) >= self.config.max_tokens:
            return None, text + self._end("length")
        return token, text

    def cancel(self) -> None:
        if self.finish_reason is None:
            self.finish_reason = "cancelled"

    def _end(self, reason: FinishReason) -> str:
        """What was held back, now that no more text will come."""
        text, stopped = self._stop_filter.feed(self._detokenizer.flush())
        if stopped:
            self.finish_reason = "stop"
            return text
        self.finish_reason = reason
        return text + self._stop_filter.flush()


class Generation:
    """A running generation: iterate it for text pieces; afterwards it tells how it ended.

    Made by `generate`. `token_ids` are the tokens produced so far (end of text excluded);
    `finish_reason` is None until the iteration ends.
    """

    def __init__(
        self,
        step_fn: Callable[[int], torch.Tensor],
        first_logits: torch.Tensor,
        tokenizer: Tokenizer,
        config: SamplerConfig,
        should_stop: Callable[[], bool],
    ):
        self.config = config
        self.sequence = SequenceSampling(config, tokenizer)
        self.sampler = self.sequence.sampler
        self.token_ids = self.sequence.token_ids
        self._pieces = self._run(step_fn, first_logits, should_stop)

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.sequence.finish_reason

    @property
    def seed(self) -> int:
        """The seed in use: pass it back in `SamplerConfig.seed` to reproduce this generation."""
        return self.sampler.seed

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop early; no more model steps are taken."""
        self._pieces.close()
        self.sequence.cancel()

    def _run(
        self, step_fn: Callable[[int], torch.Tensor], logits: torch.Tensor, should_stop: Callable[[], bool]
    ) -> Iterator[str]:
        while True:
            if should_stop():
                self.sequence.cancel()
                return
            token, text = self.sequence.take(logits)
            if text:
                yield text
            if token is None:
                return
            if should_stop():  # checked again: the consumer may have asked while the text was shown
                self.sequence.cancel()
                return
            # The model reads a token only when another one is wanted, so the last token of a
            # generation is never fed (as in the rwkv package's PIPELINE).
            logits = step_fn(token)


def generate(
    step_fn: Callable[[int], torch.Tensor],
    first_logits: torch.Tensor,
    tokenizer: Tokenizer,
    config: SamplerConfig,
    should_stop: Callable[[], bool] = _never,
) -> Generation:
    """Stream text from a model, one token at a time.

    step_fn(token_id) feeds one token to the model and returns the next logits, shape (vocab,);
    first_logits are the logits after the prompt. Pieces of text are yielded as soon as they
    are whole characters and cannot be part of a stop string. Generation ends at a stop string
    (not emitted), at the tokenizer's end of text, after `config.max_tokens` tokens, or when
    `should_stop()` returns True; it is checked before every token, so cancelling costs at
    most the model step under way. The last token produced is not fed to `step_fn`.
    """
    return Generation(step_fn, first_logits, tokenizer, config, should_stop)


def _largest(probabilities: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest probabilities, largest first, and their token ids."""
    if k == probabilities.shape[0] and probabilities.device.type == "cpu":
        # A whole-vocabulary sort: numpy's vectorised sort is ~5x faster than torch's on a CPU.
        ids = torch.from_numpy(np.argsort(-probabilities.numpy()))
        return probabilities[ids], ids
    return torch.topk(probabilities, k)

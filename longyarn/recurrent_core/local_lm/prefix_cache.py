"""Recurrent states keyed by the token prefix that produced them, bounded in bytes.

A recurrent model carries everything it knows about a text in a fixed-size state, so a
prompt that begins with a prefix read before can start from the state saved after that
prefix instead of reading it again. longyarn's prompts share long heads: every step's
writer prompt opens with the same rules, a retry repeats a prompt exactly, and a repair
prompt repeats the original one's context.

    cache = PrefixStateCache(max_bytes=256 * 2**20)
    matched, state = cache.lookup(prompt_ids)       # longest cached prefix (0, None: none)
    logits, state = lm.forward(prompt_ids[matched:], state)
    cache.store(prompt_ids[:n], state_after_n)      # keeps its own copy

Entries are keyed by (length, hash of the prefix) and checked token by token on a hit, so a
hash collision can never hand back the wrong state. Least recently used entries are evicted
once the states' bytes pass `max_bytes`. `lookup` returns a copy: the caller may do
anything with it without touching the cache.

The cache is safe to share between threads (one lock), though the local backend only ever
uses it from its single model thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .state import RecurrentState

# Polynomial prefix hash modulo a Mersenne prime: one pass gives the hash of every prefix.
_HASH_MODULUS = (1 << 61) - 1
_HASH_BASE = 1_000_003

# How many recent prompts `shared_prefix_length` compares a new prompt with.
RECENT_PROMPTS_KEPT = 16


def state_nbytes(state: RecurrentState) -> int:
    """The bytes a state's tensors occupy."""
    return sum(
        tensor.numel() * tensor.element_size()
        for tensor in (state.time_mix_shift, state.wkv, state.channel_mix_shift)
    )


def _prefix_hashes(tokens: Sequence[int], up_to: int) -> list[int]:
    """hashes[n] is the hash of tokens[:n], for n from 0 to up_to."""
    hashes = [0] * (up_to + 1)
    value = 0
    for index in range(up_to):
        value = (value * _HASH_BASE + int(tokens[index]) + 1) % _HASH_MODULUS
        hashes[index + 1] = value
    return hashes


def _as_token_array(tokens: Sequence[int]) -> np.ndarray:
    return np.asarray(tokens, dtype=np.int64).reshape(-1)


def common_prefix_length(first: Sequence[int] | np.ndarray, second: Sequence[int] | np.ndarray) -> int:
    """How many leading tokens two token sequences share."""
    first, second = _as_token_array(first), _as_token_array(second)
    length = min(len(first), len(second))
    differences = np.flatnonzero(first[:length] != second[:length])
    return int(differences[0]) if differences.size else length


@dataclass(frozen=True)
class PrefixCacheStats:
    """Counters since the cache was made; `tokens_reused` sums the matched lengths of hits."""

    hits: int
    misses: int
    tokens_reused: int
    stores: int
    evictions: int
    entries: int
    bytes_used: int
    max_bytes: int


@dataclass
class _Entry:
    tokens: np.ndarray  # the whole prefix, to rule out hash collisions
    state: RecurrentState
    nbytes: int  # the state's tensors and the prefix's tokens


class PrefixStateCache:
    """An LRU cache of recurrent states keyed by token prefix, holding at most `max_bytes`.

    `max_bytes` 0 turns it off: nothing is stored and every lookup misses.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, not {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._length_counts: dict[int, int] = {}
        self._recent_prompts: deque[np.ndarray] = deque(maxlen=RECENT_PROMPTS_KEPT)
        self._bytes_used = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._tokens_reused = self._stores = self._evictions = 0

    # ---- the two operations ---------------------------------------------------------------

    def lookup(self, tokens: Sequence[int]) -> tuple[int, RecurrentState | None]:
        """(n, a copy of the state after tokens[:n]) for the longest cached prefix; (0, None) if none."""
        with self._lock:
            usable = sorted((n for n in self._length_counts if 0 < n <= len(tokens)), reverse=True)
            if not usable:
                self._misses += 1
                return 0, None
            hashes = _prefix_hashes(tokens, usable[0])
            token_array: np.ndarray | None = None
            for length in usable:
                key = (length, hashes[length])
                entry = self._entries.get(key)
                if entry is None:
                    continue
                if token_array is None:
                    token_array = _as_token_array(tokens)
                if not np.array_equal(entry.tokens, token_array[:length]):
                    continue  # a hash collision
                self._entries.move_to_end(key)
                self._hits += 1
                self._tokens_reused += length
                return length, entry.state.clone()
            self._misses += 1
            return 0, None

    def store(self, tokens: Sequence[int], state: RecurrentState) -> bool:
        """Keep a copy of `state`, the state after exactly `tokens`; False if it cannot fit."""
        length = len(tokens)
        # The prefix itself is kept too (to check hits), so it counts against the bound.
        nbytes = state_nbytes(state) + length * np.dtype(np.int64).itemsize
        if length == 0 or nbytes > self.max_bytes:
            return False
        key = (length, _prefix_hashes(tokens, length)[length])
        copy = state.clone()
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._forget(key, old)
            self._entries[key] = _Entry(_as_token_array(tokens).copy(), copy, nbytes)
            self._length_counts[length] = self._length_counts.get(length, 0) + 1
            self._bytes_used += nbytes
            self._stores += 1
            while self._bytes_used > self.max_bytes:
                oldest_key, oldest = self._entries.popitem(last=False)
                self._forget(oldest_key, oldest)
                self._evictions += 1
        return True

    # ---- planning where to keep states ----------------------------------------------------

    def note_prompt(self, tokens: Sequence[int]) -> None:
        """Remember a prompt's tokens, so later prompts can find where they part from it."""
        with self._lock:
            self._recent_prompts.append(_as_token_array(tokens).copy())

    def shared_prefix_length(self, tokens: Sequence[int]) -> int:
        """The longest prefix `tokens` share with any recently noted prompt.

        Where a new prompt parts from an earlier one is the natural place to keep a state:
        the next prompt of the same kind will likely share exactly that head again.
        """
        token_array = _as_token_array(tokens)
        with self._lock:
            recent = list(self._recent_prompts)
        return max((common_prefix_length(token_array, prompt) for prompt in recent), default=0)

    # ---- housekeeping ---------------------------------------------------------------------

    def clear(self) -> None:
        """Drop every entry and every noted prompt (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self._length_counts.clear()
            self._recent_prompts.clear()
            self._bytes_used = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes_used

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stats(self) -> PrefixCacheStats:
        with self._lock:
            return PrefixCacheStats(
                hits=self._hits,
                misses=self._misses,
                tokens_reused=self._tokens_reused,
                stores=self._stores,
                evictions=self._evictions,
                entries=len(self._entries),
                bytes_used=self._bytes_used,
                max_bytes=self.max_bytes,
            )

    def _forget(self, key: tuple[int, int], entry: _Entry) -> None:
        self._bytes_used -= entry.nbytes
        length = key[0]
        remaining = self._length_counts[length] - 1
        if remaining:
            self._length_counts[length] = remaining
        else:
            del self._length_counts[length]

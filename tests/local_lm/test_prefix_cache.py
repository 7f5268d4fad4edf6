"""The prefix-state cache: exact reuse of a prompt's head, a memory bound, LRU eviction."""

from __future__ import annotations

import torch

from longyarn.recurrent_core.local_lm.prefix_cache import PrefixStateCache, state_nbytes


def _random_state(lm, seed: int):
    """A state of the tiny model's shape filled with recognisable random values."""
    generator = torch.Generator().manual_seed(seed)
    zero = lm.zero_state()
    return type(zero)(
        torch.randn(zero.time_mix_shift.shape, generator=generator),
        torch.randn(zero.wkv.shape, generator=generator),
        torch.randn(zero.channel_mix_shift.shape, generator=generator),
    )


def _same_state(first, second) -> bool:
    return all(
        torch.equal(a, b)
        for a, b in (
            (first.time_mix_shift, second.time_mix_shift),
            (first.wkv, second.wkv),
            (first.channel_mix_shift, second.channel_mix_shift),
        )
    )


def _entry_bytes(lm, prefix_length: int) -> int:
    return state_nbytes(lm.zero_state()) + 8 * prefix_length


def test_continuing_from_a_cached_head_gives_exactly_the_logits_of_reading_it_again(tiny_lm):
    head = [(7 * i + 3) % tiny_lm.vocab_size for i in range(150)]
    tail = [(11 * i + 5) % tiny_lm.vocab_size for i in range(40)]
    _, head_state = tiny_lm.forward(head)
    cache = PrefixStateCache(max_bytes=2**20)
    cache.store(head, head_state)

    matched, cached_state = cache.lookup(head + tail)

    assert matched == len(head)
    from_cache, _ = tiny_lm.forward(tail, cached_state)
    reread, _ = tiny_lm.forward(tail, tiny_lm.forward(head)[1])
    assert torch.equal(from_cache, reread)
    whole, _ = tiny_lm.forward(head + tail)
    torch.testing.assert_close(from_cache, whole, rtol=1e-4, atol=1e-4)


def test_lookup_finds_the_longest_cached_prefix_and_nothing_that_differs(tiny_lm):
    tokens = list(range(1, 40))
    cache = PrefixStateCache(max_bytes=2**20)
    cache.store(tokens[:8], _random_state(tiny_lm, 8))
    cache.store(tokens[:20], _random_state(tiny_lm, 20))

    assert cache.lookup(tokens)[0] == 20
    assert cache.lookup(tokens[:19])[0] == 8
    diverging = tokens[:12] + [0] + tokens[13:]
    assert cache.lookup(diverging)[0] == 8
    assert cache.lookup([0, *tokens]) == (0, None)
    assert _same_state(cache.lookup(tokens)[1], _random_state(tiny_lm, 20))


def test_the_memory_bound_holds_under_many_inserts(tiny_lm):
    per_entry = _entry_bytes(tiny_lm, 10)
    cache = PrefixStateCache(max_bytes=5 * per_entry + per_entry // 2)
    for index in range(60):
        cache.store([index] * 10, _random_state(tiny_lm, index))
        assert cache.bytes_used <= cache.max_bytes

    assert len(cache) == 5
    assert cache.stats.evictions == 55
    # The five newest survive; the oldest are gone.
    assert all(cache.lookup([index] * 10)[0] == 10 for index in range(55, 60))
    assert cache.lookup([0] * 10) == (0, None)


def test_the_least_recently_used_entry_is_evicted_first(tiny_lm):
    per_entry = _entry_bytes(tiny_lm, 4)
    cache = PrefixStateCache(max_bytes=3 * per_entry)
    first, second, third, fourth = ([n] * 4 for n in (1, 2, 3, 4))
    for seed, tokens in enumerate((first, second, third)):
        cache.store(tokens, _random_state(tiny_lm, seed))

    assert cache.lookup(first)[0] == 4  # now the most recently used
    cache.store(fourth, _random_state(tiny_lm, 4))

    assert cache.lookup(second) == (0, None)
    assert [cache.lookup(tokens)[0] for tokens in (first, third, fourth)] == [4, 4, 4]


def test_a_hit_is_a_copy_that_the_caller_may_change(tiny_lm):
    tokens = [5, 6, 7, 8]
    original = _random_state(tiny_lm, 1)
    cache = PrefixStateCache(max_bytes=2**20)
    cache.store(tokens, original)
    original.wkv.add_(1.0)  # the caller's own state changing later does not reach the cache

    _, hit = cache.lookup(tokens)
    hit.wkv.zero_()
    hit.time_mix_shift.zero_()

    _, again = cache.lookup(tokens)
    assert _same_state(again, _random_state(tiny_lm, 1))


def test_a_state_bigger_than_the_bound_is_not_kept_and_zero_turns_the_cache_off(tiny_lm):
    state = _random_state(tiny_lm, 0)
    too_small = PrefixStateCache(max_bytes=state_nbytes(state) - 1)
    off = PrefixStateCache(max_bytes=0)

    assert not too_small.store([1, 2, 3], state)
    assert not off.store([1, 2, 3], state)
    assert too_small.lookup([1, 2, 3]) == (0, None) and len(off) == 0


def test_where_a_prompt_parts_from_recent_prompts_is_known(tiny_lm):
    cache = PrefixStateCache(max_bytes=2**20)
    cache.note_prompt([1, 2, 3, 4, 5, 6])
    cache.note_prompt([1, 2, 9, 9])

    assert cache.shared_prefix_length([1, 2, 3, 4, 7]) == 4
    assert cache.shared_prefix_length([1, 2, 9, 9, 9]) == 4
    assert cache.shared_prefix_length([8]) == 0

"""Sampling the local model: greedy, top-k/top-p, RWKV penalties, seeds, and the generation loop."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from longyarn.recurrent_core.errors import InvalidInput, ModelError
from longyarn.recurrent_core.local_lm.sampling import (
    Sampler,
    SamplerConfig,
    frequency_exempt_ids,
    generate,
)
from longyarn.recurrent_core.local_lm.tokenizer import WorldTokenizer
from longyarn.recurrent_core.types import Sampling

VOCAB = 1000


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Small tensors: more threads would only contend with other work on the machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world() -> WorldTokenizer:
    return WorldTokenizer()


def _logits_from_probabilities(probabilities: list[float], vocab: int = VOCAB) -> torch.Tensor:
    """Logits whose softmax puts `probabilities` on tokens 0.. and a negligible rest elsewhere."""
    logits = torch.full((vocab,), -1e4)
    logits[: len(probabilities)] = torch.log(torch.tensor(probabilities))
    return logits


# --- choosing a token ----------------------------------------------------------------------


def test_temperature_zero_takes_the_most_likely_token():
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        logits = torch.randn(VOCAB, generator=generator) * 3
        assert Sampler(SamplerConfig(temperature=0)).sample(logits) == int(logits.argmax())


def test_top_k_one_is_greedy_at_any_temperature():
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):
        logits = torch.randn(VOCAB, generator=generator)
        sampled = Sampler(SamplerConfig(temperature=1.5, top_k=1, seed=3)).sample(logits)
        assert sampled == Sampler(SamplerConfig(temperature=0)).sample(logits)


def test_top_p_draws_only_from_the_smallest_set_reaching_p():
    # 0.4 alone is under 0.6; 0.4 + 0.3 reaches it, so the nucleus is tokens 0 and 1.
    logits = _logits_from_probabilities([0.4, 0.3, 0.2, 0.1])
    sampler = Sampler(SamplerConfig(top_p=0.6, seed=11))
    draws = [sampler.sample(logits) for _ in range(2000)]
    assert set(draws) == {0, 1}
    # About 4:3 within the nucleus, as the model gave them.
    assert 0.5 < draws.count(0) / len(draws) < 0.64


@pytest.mark.parametrize("spread", [0.02, 1.0, 6.0])
def test_the_nucleus_of_a_large_vocabulary_is_the_sorted_prefix_however_flat(spread):
    # An untrained model or a high temperature gives a nucleus of most of 65,536 tokens; a
    # trained one a few dozen. Either way it is the smallest likeliest set reaching top_p.
    logits = torch.randn(65536, generator=torch.Generator().manual_seed(3)) * spread
    kept = Sampler(SamplerConfig(top_p=0.9)).distribution(logits)
    probabilities, order = torch.sort(torch.softmax(logits, 0), descending=True)
    size = int((torch.cumsum(probabilities.double(), 0) < 0.9).sum()) + 1
    assert abs(int((kept > 0).sum()) - size) <= 1  # float sums may differ by the last token
    assert bool((kept[order[: size - 1]] > 0).all()) and float(kept.sum()) == pytest.approx(1.0)


def test_a_high_temperature_reshapes_the_nucleus_but_never_widens_it():
    logits = _logits_from_probabilities([0.4, 0.3, 0.2, 0.1])
    hot = Sampler(SamplerConfig(top_p=0.6, temperature=4.0)).distribution(logits)
    assert set(torch.nonzero(hot).flatten().tolist()) == {0, 1}
    assert hot[0] / hot[1] == pytest.approx((0.4 / 0.3) ** (1 / 4.0), rel=1e-4)


def test_top_k_keeps_the_k_most_likely_tokens():
    logits = _logits_from_probabilities([0.1, 0.35, 0.05, 0.3, 0.2])
    kept = Sampler(SamplerConfig(top_k=3)).distribution(logits)
    assert set(torch.nonzero(kept).flatten().tolist()) == {1, 3, 4}


def test_a_banned_token_is_never_drawn():
    logits = _logits_from_probabilities([0.9, 0.1])
    sampler = Sampler(SamplerConfig(banned_token_ids=(0,), seed=5))
    assert {sampler.sample(logits) for _ in range(200)} == {1}


def test_non_finite_logits_are_a_model_error():
    with pytest.raises(ModelError, match="no finite score"):
        Sampler(SamplerConfig()).sample(torch.full((VOCAB,), float("nan")))


# --- penalties -------------------------------------------------------------------------------


def test_a_generated_token_becomes_less_likely_each_time_it_repeats():
    logits = _logits_from_probabilities([0.25] * 4)
    sampler = Sampler(SamplerConfig(presence_penalty=0.4, frequency_penalty=0.4, penalty_decay=1.0))
    chances = [float(sampler.distribution(logits)[2])]
    for _ in range(3):
        sampler.record(2)
        chances.append(float(sampler.distribution(logits)[2]))
    assert chances == sorted(chances, reverse=True) and len(set(chances)) == 4
    assert chances[-1] < 0.25 / 2


def test_the_frequency_penalty_fades_with_penalty_decay_and_presence_stays():
    logits = torch.zeros(VOCAB)
    presence, frequency, decay = 0.3, 1.0, 0.5
    config = SamplerConfig(presence_penalty=presence, frequency_penalty=frequency, penalty_decay=decay)
    sampler = Sampler(config)
    sampler.record(7)
    penalties = []
    for _ in range(6):
        penalties.append(float(-sampler.penalised(logits)[7]))
        sampler.record(8)  # other tokens go by
    assert penalties == pytest.approx([presence + frequency * decay**n for n in range(6)])
    assert penalties[-1] == pytest.approx(presence, abs=0.05)


def test_digits_and_spaces_build_no_frequency_penalty(world):
    exempt = frequency_exempt_ids(world)
    seven, word = world.encode("7")[0], world.encode(" dragon")[0]
    assert seven in exempt and word not in exempt
    sampler = Sampler(SamplerConfig(presence_penalty=0.2, frequency_penalty=1.0, penalty_decay=1.0), exempt)
    logits = torch.zeros(world.vocab_size)
    for _ in range(3):
        sampler.record(seven)
        sampler.record(word)
    penalised = sampler.penalised(logits)
    assert float(-penalised[seven]) == pytest.approx(0.2)
    assert float(-penalised[word]) == pytest.approx(0.2 + 3.0)


# --- seeds ----------------------------------------------------------------------------------


def test_the_same_seed_repeats_a_run_and_another_seed_does_not():
    logits = torch.randn(VOCAB, generator=torch.Generator().manual_seed(0))
    config = SamplerConfig(temperature=1.2, top_p=0.9, presence_penalty=0.4, frequency_penalty=0.4)

    def run(seed: int | None) -> tuple[int, list[int]]:
        sampler = Sampler(dataclasses.replace(config, seed=seed))
        return sampler.seed, [sampler.sample(logits) for _ in range(60)]

    assert run(42)[1] == run(42)[1]
    assert run(42)[1] != run(43)[1]
    # An unseeded run reports its seed, and that seed reproduces it.
    seed, tokens = run(None)
    assert run(seed)[1] == tokens


def test_sampling_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    Sampler(SamplerConfig(seed=1)).sample(torch.randn(VOCAB, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.random.get_rng_state(), before)


# --- settings --------------------------------------------------------------------------------


def test_min_p_keeps_only_tokens_near_the_likeliest():
    logits = _logits_from_probabilities([0.5, 0.3, 0.12, 0.08])
    kept = Sampler(SamplerConfig(min_p=0.2)).distribution(logits)
    assert kept[:4].tolist() == pytest.approx([0.5 / 0.92, 0.3 / 0.92, 0.12 / 0.92, 0.0], abs=1e-4)
    assert float(kept[4:].sum()) == 0.0


def test_the_repetition_penalty_divides_a_repeated_tokens_logit_as_llama_cpp_does():
    logits = torch.zeros(VOCAB)
    logits[3], logits[4] = 2.0, -1.0
    sampler = Sampler(SamplerConfig(repetition_penalty=1.25))
    sampler.record(3)
    sampler.record(4)
    penalised = sampler.penalised(logits)
    assert float(penalised[3]) == pytest.approx(2.0 / 1.25) and float(penalised[4]) == pytest.approx(-1.25)
    assert float(penalised[5]) == 0.0, "tokens not generated are untouched"


def test_from_sampling_carries_every_backend_setting_and_the_stop_strings():
    sampling = Sampling(
        temperature=0.7, top_p=0.9, top_k=40, max_tokens=77,
        presence_penalty=0.1, frequency_penalty=0.2, penalty_decay=0.99, seed=9,
    )
    config = SamplerConfig.from_sampling(sampling, stop=["\n\n"])
    with_more = SamplerConfig.from_sampling(
        sampling.model_copy(update={"min_p": 0.05, "repetition_penalty": 1.1, "stop": ("THE END",)}), stop=["\n\n"]
    )
    assert (with_more.min_p, with_more.repetition_penalty, with_more.stop) == (0.05, 1.1, ("THE END", "\n\n"))
    assert (config.temperature, config.top_p, config.top_k, config.max_tokens) == (0.7, 0.9, 40, 77)
    assert (config.presence_penalty, config.frequency_penalty, config.penalty_decay) == (0.1, 0.2, 0.99)
    assert (config.seed, config.stop) == (9, ("\n\n",))


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_k": -1},
        {"max_tokens": 0},
        {"penalty_decay": 1.5},
        {"stop": ("",)},
        {"presence_penalty": math.inf},
        {"min_p": 1.0},
        {"repetition_penalty": 0.5},
    ],
)
def test_invalid_settings_are_refused_in_one_sentence(bad):
    with pytest.raises(InvalidInput, match="nothing was generated"):
        SamplerConfig(**bad)


# --- the generation loop --------------------------------------------------------------------


class ScriptedModel:
    """Stands in for the model's one-token forward: it always favours the next token of a script.

    After the script it favours end of text. It records what it was fed.
    """

    def __init__(self, script: list[int], vocab: int, eos_id: int = 0):
        self.script = script
        self.vocab = vocab
        self.eos_id = eos_id
        self.fed: list[int] = []

    def _logits(self, position: int) -> torch.Tensor:
        logits = torch.zeros(self.vocab)
        logits[self.script[position] if position < len(self.script) else self.eos_id] = 30.0
        return logits

    def first_logits(self) -> torch.Tensor:
        return self._logits(0)

    def step(self, token_id: int) -> torch.Tensor:
        self.fed.append(token_id)
        return self._logits(len(self.fed))


def _run(world, text: str, **config):
    model = ScriptedModel(world.encode(text), world.vocab_size, world.eos_id)
    generation = generate(model.step, model.first_logits(), world, SamplerConfig(temperature=0, **config))
    pieces = list(generation)
    return model, generation, pieces


def test_generation_streams_the_text_and_ends_at_end_of_text(world):
    text = "The lighthouse keeper — Ærøskøbing's last — wrote: «海は静か» 🌊🐋\r\nThe end."
    model, generation, pieces = _run(world, text)
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece and piece for piece in pieces)
    assert generation.finish_reason == "eos"
    assert generation.token_ids == world.encode(text)
    assert model.fed == generation.token_ids  # each token fed once; end of text never


def test_a_stop_string_ends_generation_and_is_not_emitted(world):
    text = "She closed the book. THE END. And then the sequel began."
    model, generation, pieces = _run(world, text, stop=("THE END",))
    assert "".join(pieces) == text[: text.index("THE END")]
    assert generation.finish_reason == "stop"
    assert len(model.fed) < len(world.encode(text))  # the model stopped there too


def test_a_stop_string_split_across_tokens_is_caught(world):
    text = "Chapter one ends here.\n\nChapter two begins with rain."
    stop = "here.\n\nChap"
    ids = world.encode(text)
    # The stop string starts and ends in the middle of tokens, over several tokens.
    assert not any(stop in world.decode([i]) for i in ids)
    _, generation, pieces = _run(world, text, stop=(stop, "never appears"))
    assert "".join(pieces) == text[: text.index(stop)]
    assert generation.finish_reason == "stop"


def test_text_that_only_looks_like_a_stop_string_is_released_in_the_end(world):
    text = "The sign said THE EN"  # a prefix of the stop string, then end of text
    _, generation, pieces = _run(world, text, stop=("THE END",))
    assert "".join(pieces) == text
    assert generation.finish_reason == "eos"


def test_max_tokens_caps_the_generation(world):
    text = "One two three four five six seven eight nine ten eleven twelve."
    model, generation, pieces = _run(world, text, max_tokens=5)
    assert len(generation.token_ids) == 5
    assert "".join(pieces) == world.decode(world.encode(text)[:5])
    assert generation.finish_reason == "length"
    assert len(model.fed) == 4  # the last token is produced, not fed


def test_cancelling_stops_before_the_next_token(world):
    text = "A long tale that would go on and on and on for many, many words indeed."
    model = ScriptedModel(world.encode(text), world.vocab_size)
    cancelled = False
    generation = generate(
        model.step, model.first_logits(), world, SamplerConfig(temperature=0), should_stop=lambda: cancelled
    )
    received = []
    for piece in generation:
        received.append(piece)
        if len(received) == 3:
            cancelled = True  # e.g. the writer pressed Escape while this piece was shown
    assert len(received) == 3
    assert len(generation.token_ids) == 3
    assert len(model.fed) == 2  # no model step after the cancel
    assert generation.finish_reason == "cancelled"


def test_a_seeded_generation_repeats_exactly(world):
    vocab = world.vocab_size
    weights = torch.randn(vocab, generator=torch.Generator().manual_seed(5)) * 4

    def step(token_id: int) -> torch.Tensor:
        return weights.roll(token_id)  # a "model" whose next-token scores depend on the last token

    def once(seed: int) -> str:
        config = SamplerConfig(temperature=1.0, top_p=0.9, top_k=40, max_tokens=40, seed=seed)
        return "".join(generate(step, weights, world, config))

    assert once(7) == once(7)
    assert once(7) != once(8)

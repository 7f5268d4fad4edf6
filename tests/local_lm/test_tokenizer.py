"""The local model's tokenizers: exact World encoding, round trips, streaming, and model matching."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longyarn.recurrent_core.errors import CheckpointError, InvalidInput
from longyarn.recurrent_core.local_lm.tokenizer import (
    HFTokenizer,
    StreamingDetokenizer,
    Tokenizer,
    WorldTokenizer,
    check_matches,
    default_world_vocab_path,
    load_tokenizer_for,
)

CORPUS_DIR = Path(os.environ.get("LONGYARN_CORPUS_DIR", "/work/shared/corpus/gutenberg"))
CORPUS_BOOKS = 12
CORPUS_BYTES_PER_BOOK = 200_000  # 12 books x 200 kB = 2.4 MB of English prose
GENERATED_CHARS = 150_000  # about 0.5 MB of UTF-8 across every script below

# Characters that make tokenizers trip: accents (precomposed and combining), CJK, emoji
# (including ZWJ sequences and skin tones, which World splits into byte tokens), Cyrillic,
# Greek, Arabic, control characters, Windows line ends and the BOM.
_NON_ASCII_POOLS = (
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœŒÆÇÉÈÑ",
    "e\u0301a\u0300o\u0308n\u0303",
    "的一是不了人我在有他这为之大来以个中上"
    "们到说国和地也子时道出而要于就下得可你年生",
    "あいうえおかきくけこアイウエオ漢字한국어",
    "😀😂🥲🤖🎉🔥👍🏽👨‍👩‍👧‍👦🏳️‍🌈🧑🏿‍🚀",
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙ",
    "αβγδεζηθικλμνξοπρστυφχψω",
    "مرحبا بالعالم",
    "".join(map(chr, range(0x00, 0x20))) + "\x7f\u200b\ufeff",
    "\r\n\r\n\t  ",
    "abcdefghij ABC 0123456789 .,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
)


def _generated_text(chars: int, seed: int) -> str:
    rng = random.Random(seed)
    pieces, total = [], 0
    while total < chars:
        pool = rng.choice(_NON_ASCII_POOLS)
        run = "".join(rng.choice(pool) for _ in range(rng.randint(1, 12)))
        # Mix with ordinary words, as real multilingual text does.
        piece = run + rng.choice(("", " ", " the ", ", ", "\n", "\r\n", "."))
        pieces.append(piece)
        total += len(piece)
    return "".join(pieces)


def _corpus_texts() -> list[str]:
    books = sorted(CORPUS_DIR.glob("*.txt"))[:CORPUS_BOOKS]
    texts = []
    for book in books:
        data = book.read_bytes()[:CORPUS_BYTES_PER_BOOK]
        texts.append(data.decode("utf-8", errors="ignore"))  # the cut may split a character
    return texts


@pytest.fixture(scope="module")
def reference():
    tokenizer_module = pytest.importorskip("rwkv.rwkv_tokenizer")
    return tokenizer_module.TRIE_TOKENIZER(str(default_world_vocab_path()))


@pytest.fixture(scope="module")
def world() -> WorldTokenizer:
    return WorldTokenizer()


@pytest.fixture(scope="module", params=["python", "rust"])
def world_encoder(request) -> WorldTokenizer:
    if request.param == "rust":
        pytest.importorskip("pyrwkv_tokenizer", reason="the optional Rust encoder is not installed")
    return WorldTokenizer(encoder=request.param)


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    texts = _corpus_texts()
    texts += [_generated_text(GENERATED_CHARS // 3, seed) for seed in range(3)]
    return texts


def _first_difference(ours: list[int], theirs: list[int]) -> int:
    return next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))


def test_world_encoding_is_token_for_token_the_reference(world_encoder, reference, sample_texts):
    if not CORPUS_DIR.is_dir():
        pytest.skip(f"the Gutenberg corpus is not at {CORPUS_DIR}; set LONGYARN_CORPUS_DIR")
    total_bytes = sum(len(text.encode("utf-8")) for text in sample_texts)
    assert total_bytes > 2_000_000
    for text in sample_texts:
        ours, theirs = world_encoder.encode(text), reference.encode(text)
        if ours != theirs:
            at = _first_difference(ours, theirs)
            pytest.fail(
                f"{world_encoder.encoder_name} differs from TRIE_TOKENIZER at token {at}: "
                f"{ours[at:at + 5]} vs {theirs[at:at + 5]} near {text[:60]!r}"
            )


def test_world_encoding_matches_the_reference_on_generated_non_ascii_text(world_encoder, reference):
    # Runs without the corpus, so the identity is checked everywhere.
    text = _generated_text(40_000, seed=7)
    assert world_encoder.encode(text) == reference.encode(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_world_encoding_matches_the_reference_on_any_text(world_encoder, reference, text):
    assert world_encoder.encode(text) == reference.encode(text)


def test_world_round_trips_every_sample_text(world, sample_texts):
    for text in sample_texts:
        ids = world.encode(text)
        assert world.decode(ids) == text
        assert world.decode_bytes(ids) == text.encode("utf-8")


def test_world_tokenizer_describes_the_world_vocabulary(world):
    assert isinstance(world, Tokenizer)
    assert world.eos_id == 0
    assert world.vocab_size == 65530  # ids 1..65529 in the file, plus end of text
    assert world.decode([0]) == ""  # end of text carries no text
    assert world.name == "rwkv_vocab_v20230424"


def test_world_rejects_an_id_outside_its_vocabulary(world):
    with pytest.raises(InvalidInput, match="65530"):
        world.decode([33155, 65530])


def test_a_broken_vocabulary_file_is_a_checkpoint_error(tmp_path):
    broken = tmp_path / "vocab.txt"
    broken.write_text("1 '\\x00' 1\n2 'ab 3\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not an RWKV World vocabulary"):
        WorldTokenizer(broken)


def test_a_vocabulary_without_every_single_byte_is_refused(tmp_path):
    partial = tmp_path / "vocab.txt"
    partial.write_text("1 'a' 1\n2 'b' 1\n3 'ab' 2\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="single-byte tokens"):
        WorldTokenizer(partial)


# --- tokenizer.json ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A longyarn-style model directory whose tokenizer.json is a small byte-level BPE."""
    from tokenizers import Tokenizer as TokenizersTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = TokenizersTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(
        ["Once upon a time there was a small fox who lived by the river. " * 20], trainer=trainer
    )
    directory = tmp_path_factory.mktemp("model")
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(scope="module")
def own(model_dir) -> HFTokenizer:
    return HFTokenizer(model_dir / "tokenizer.json")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_tokenizer_json_round_trips_any_text(own, text):
    ids = own.encode(text)
    assert own.decode(ids) == text
    assert own.decode_bytes(ids) == text.encode("utf-8")


def test_tokenizer_json_knows_its_end_of_text_and_leaves_it_out_of_text(own):
    assert isinstance(own, Tokenizer)
    assert own.eos_id == own.backing.token_to_id("<|endoftext|>")
    ids = own.encode("the fox")
    assert own.decode([*ids, own.eos_id]) == "the fox"
    assert own.vocab_size == own.backing.get_vocab_size()


def test_an_unreadable_tokenizer_json_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        HFTokenizer(bad)


# --- choosing and checking --------------------------------------------------------------


def test_load_tokenizer_for_picks_the_kind_from_the_model_path(model_dir, tmp_path):
    assert isinstance(load_tokenizer_for(model_dir), HFTokenizer)
    blinkdl = tmp_path / "RWKV-x070-World-0.1B.pth"
    blinkdl.write_bytes(b"")
    assert isinstance(load_tokenizer_for(blinkdl), WorldTokenizer)
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        load_tokenizer_for(tmp_path)
    with pytest.raises(CheckpointError, match="neither"):
        load_tokenizer_for(tmp_path / "weights.bin")


def test_check_matches_accepts_a_padded_embedding_and_refuses_another_models(world, own):
    check_matches(world, 65536)  # BlinkDL World models pad 65,530 ids to 65,536 rows
    check_matches(own, own.vocab_size)
    with pytest.raises(CheckpointError) as refused:
        check_matches(world, 50304)  # a Pile model's embedding
    message = str(refused.value)
    assert "65,530" in message and "50,304" in message and message.count(". ") == 0
    with pytest.raises(CheckpointError):
        check_matches(own, 65536)  # our small tokenizer against a World model
    with pytest.raises(CheckpointError):
        check_matches(world, 65000)  # ids past the last row would crash the model


# --- streaming ----------------------------------------------------------------------------


def _streamed(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    detokenizer = StreamingDetokenizer(tokenizer)
    pieces = [detokenizer.push(token_id) for token_id in ids]
    pieces.append(detokenizer.flush())
    return pieces


def test_emoji_and_cjk_split_over_byte_tokens_stream_as_whole_characters(world):
    text = "龘 says 🧑🏿‍🚀 and 👨‍👩‍👧‍👦 at 𝄞"
    ids = world.encode(text)
    # The case under test: some of these tokens are fragments of a character.
    fragments = [i for i in ids if _is_partial_utf8(world.decode_bytes([i]))]
    assert fragments, "expected the World vocabulary to split some characters into byte tokens"
    pieces = _streamed(world, ids)
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def _is_partial_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=120))
def test_streamed_pieces_are_whole_characters_that_join_to_the_text(world, own, text):
    for tokenizer in (world, own):
        pieces = _streamed(tokenizer, tokenizer.encode(text))
        assert "".join(pieces) == text
        for piece in pieces:
            piece.encode("utf-8")  # a lone surrogate or half a pair would raise here
            assert piece.count("\ufffd") <= text.count("\ufffd")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.integers(min_value=0, max_value=65529), max_size=60))
def test_streaming_any_ids_gives_exactly_the_decoded_text(world, ids):
    # Random ids include lone continuation bytes and cut-off sequences: those become U+FFFD
    # exactly where a whole-text decode puts them, never earlier than they are certain.
    assert "".join(_streamed(world, ids)) == world.decode(ids)


def test_an_unfinished_character_is_held_back_then_replaced_at_the_end(world):
    snowman = "☃".encode("utf-8")  # three bytes
    single_byte_ids = {world.decode_bytes([i]): i for i in range(1, 257)}
    first_two = [single_byte_ids[bytes([b])] for b in snowman[:2]]
    detokenizer = StreamingDetokenizer(world)
    assert [detokenizer.push(i) for i in first_two] == ["", ""]
    assert detokenizer.holding
    assert detokenizer.flush() == "\ufffd"


def test_text_that_spells_a_special_token_stays_text(own):
    text = "She wrote <|endoftext|> on the last page."
    ids = own.encode(text)
    assert own.eos_id not in ids
    assert "".join(_streamed(own, ids)) == text

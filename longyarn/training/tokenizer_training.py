"""Prepare the demo model's training data on the CPU: a byte-level BPE and token arrays.

    python -m longyarn.training.tokenizer_training \
        --corpus /work/shared/corpus/gutenberg --out .device/data --vocab-size 4096

Whole books are held out for evaluation (`HELDOUT_BOOKS`); the tokenizer never sees them.
The output folder is everything `train.py` needs, so it can travel to a GPU machine alone:

    tokenizer.json      byte-level BPE; token 0 is END_OF_TEXT
    train.npy           uint16 tokens of the training books, each book preceded by END_OF_TEXT
    heldout/<book>.txt  the held-out books as plain text (after `normalise_book`)
    meta.json           which books went where, token and byte counts, and compressors'
                        bits per byte on the default evaluation slice (zstandard may be
                        missing where training runs)

Books are hard-wrapped at about 70 columns in the corpus; `normalise_book` joins the lines
of each paragraph, so the model learns to write paragraphs rather than line breaks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from longyarn.recurrent_core.errors import InvalidInput

END_OF_TEXT = "<|endoftext|>"

# Four books of different kinds, none of which the tokenizer or the model sees in training:
# a children's fantasy, fables, a fairy-tale collection and an adult detective novel.
HELDOUT_BOOKS = (
    "55-wonderful-wizard-of-oz.txt",
    "2781-just-so-stories.txt",
    "641-violet-fairy-book.txt",
    "1661-adventures-of-sherlock-holmes.txt",
)

# Each held-out book's opening paragraphs up to this many bytes form the evaluation slice.
DEFAULT_EVAL_BYTES_PER_BOOK = 262_144

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")


def normalise_book(text: str) -> str:
    """Join the hard-wrapped lines of each paragraph; paragraphs stay apart by one blank line."""
    paragraphs = []
    for block in _PARAGRAPH_BREAK.split(text):
        lines = [line.strip() for line in block.split("\n")]
        paragraph = " ".join(line for line in lines if line)
        if paragraph:
            paragraphs.append(paragraph)
    return "\n\n".join(paragraphs) + "\n"


def list_books(corpus_dir: Path) -> list[Path]:
    """The corpus's book files in a fixed (sorted) order."""
    books = sorted(corpus_dir.glob("*.txt"))
    if not books:
        raise InvalidInput(
            f"No .txt books were found in {corpus_dir}, so nothing was prepared; "
            "point --corpus at a folder of UTF-8 text files."
        )
    return books


def split_books(books: Sequence[Path], heldout_names: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """Split books into (training, held-out) by file name; every held-out name must exist."""
    heldout_names = list(heldout_names)
    by_name = {book.name: book for book in books}
    missing = [name for name in heldout_names if name not in by_name]
    if missing:
        raise InvalidInput(
            f"The held-out books {missing} are not in the corpus, so nothing was prepared; "
            "pass --heldout with names of files that exist."
        )
    heldout = [by_name[name] for name in heldout_names]
    training = [book for book in books if book.name not in set(heldout_names)]
    return training, heldout


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """Train a byte-level BPE on `texts` (deterministic for the same texts and size).

    Byte-level means every UTF-8 string round-trips exactly through encode and decode.
    Returns a `tokenizers.Tokenizer` whose token 0 is END_OF_TEXT.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def encode_documents(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Tokens of `texts` as one uint16 array, each text preceded by END_OF_TEXT."""
    if tokenizer.get_vocab_size() > np.iinfo(np.uint16).max + 1:
        raise InvalidInput(
            f"A vocabulary of {tokenizer.get_vocab_size()} tokens does not fit in uint16, so nothing "
            "was written; choose --vocab-size 65536 or less."
        )
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    pieces = []
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        pieces.append(np.asarray([end_of_text, *encoding.ids], dtype=np.uint16))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def prepare_data(
    corpus_dir: Path,
    out_dir: Path,
    vocab_size: int = 4096,
    heldout_names: Sequence[str] = HELDOUT_BOOKS,
) -> dict:
    """Write tokenizer.json, train.npy, heldout/*.txt and meta.json to `out_dir`; return the meta."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    training_books, heldout_books = split_books(list_books(corpus_dir), heldout_names)
    training_texts = [normalise_book(book.read_text(encoding="utf-8")) for book in training_books]

    tokenizer = train_tokenizer(training_texts, vocab_size)
    train_tokens = encode_documents(tokenizer, training_texts)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "heldout").mkdir(exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    np.save(out_dir / "train.npy", train_tokens)
    heldout_texts = []
    for book in heldout_books:
        text = normalise_book(book.read_text(encoding="utf-8"))
        (out_dir / "heldout" / book.name).write_text(text, encoding="utf-8")
        heldout_texts.append(text)
    # zstandard may be missing where training runs, so the default slice's figures are kept here.
    eval_text = "".join(split_heldout_text(text, DEFAULT_EVAL_BYTES_PER_BOOK)[0] for text in heldout_texts)

    training_bytes = sum(len(text.encode("utf-8")) for text in training_texts)
    meta = {
        "vocab_size": tokenizer.get_vocab_size(),
        "end_of_text": END_OF_TEXT,
        "end_of_text_id": tokenizer.token_to_id(END_OF_TEXT),
        "training_books": [book.name for book in training_books],
        "heldout_books": [book.name for book in heldout_books],
        "training_bytes": training_bytes,
        "training_tokens": int(train_tokens.size),
        "bytes_per_token": round(training_bytes / max(1, train_tokens.size - len(training_books)), 4),
        "heldout_bytes": sum(len(text.encode("utf-8")) for text in heldout_texts),
        "eval_slice": {
            "bytes_per_book": DEFAULT_EVAL_BYTES_PER_BOOK,
            "sha256": hashlib.sha256(eval_text.encode("utf-8")).hexdigest(),
            "bytes": len(eval_text.encode("utf-8")),
            "compression_bits_per_byte": compression_baselines(eval_text),
        },
        "tokenizer_sha256": hashlib.sha256((out_dir / "tokenizer.json").read_bytes()).hexdigest(),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def split_heldout_text(text: str, eval_bytes: int) -> tuple[str, str]:
    """Cut a held-out book into (evaluation slice, validation rest) at a paragraph boundary.

    The slice is the book's opening paragraphs up to `eval_bytes` UTF-8 bytes (at least one
    paragraph); the rest watches over training without touching the reported figures.
    """
    encoded = text.encode("utf-8")
    if len(encoded) <= eval_bytes:
        return text, ""
    cut = encoded.rfind(b"\n\n", 0, eval_bytes)
    if cut <= 0:
        cut = encoded.find(b"\n\n")
        if cut < 0:
            return text, ""
    cut += 2  # the slice keeps its closing blank line, like a whole book does
    return encoded[:cut].decode("utf-8"), encoded[cut:].decode("utf-8")


def compression_baselines(text: str) -> dict[str, float]:
    """Bits per byte of general-purpose compressors on `text` (zstd where installed, xz, zlib)."""
    import lzma
    import zlib

    data = text.encode("utf-8")
    bits_per_byte = lambda compressed: round(8 * len(compressed) / len(data), 4)  # noqa: E731
    baselines = {
        "xz_9e": bits_per_byte(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        "zlib_9": bits_per_byte(zlib.compress(data, 9)),
    }
    try:
        import zstandard
    except ImportError:  # not on every GPU image; meta.json holds the figures computed here
        return baselines
    for level in (3, 19):
        baselines[f"zstd_{level}"] = bits_per_byte(zstandard.ZstdCompressor(level=level).compress(data))
    return baselines


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus/gutenberg"))
    parser.add_argument("--out", type=Path, default=Path(".device/data"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--heldout", nargs="+", default=list(HELDOUT_BOOKS), help="file names of held-out books")
    args = parser.parse_args(argv)
    meta = prepare_data(args.corpus, args.out, args.vocab_size, args.heldout)
    print(
        f"tokenizer: {meta['vocab_size']} tokens; train.npy: {meta['training_tokens']:,} tokens from "
        f"{len(meta['training_books'])} books ({meta['bytes_per_token']} bytes/token); "
        f"held out: {', '.join(meta['heldout_books'])} ({meta['heldout_bytes']:,} bytes) -> {args.out}"
    )
    return meta


if __name__ == "__main__":
    main()

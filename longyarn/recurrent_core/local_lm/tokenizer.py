"""Tokenizers for the local model, behind one small interface, and a streaming detokeniser.

Two kinds of model, two kinds of tokenizer:

- BlinkDL's RWKV "World" checkpoints use the RWKV World vocabulary (65,529 byte strings,
  encoded by greedy longest match; token 0 is end of text). `WorldTokenizer` reads the
  vocabulary file that ships in the `rwkv` package, or one you name.
- longyarn's own model directories carry a `tokenizer.json` (the `tokenizers` package);
  `HFTokenizer` wraps it.

    tokenizer = load_tokenizer_for(model_path)       # picks the kind from the path
    check_matches(tokenizer, model.vocab_size)       # CheckpointError if it is not the model's
    ids = tokenizer.encode("Once upon a time")

`StreamingDetokenizer` turns token ids, one at a time, into text that never holds half a
character: byte-level vocabularies often split an emoji or a CJK character over tokens.

This module does not import torch.
"""

from __future__ import annotations

import ast
import codecs
import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

from ..errors import CheckpointError, InvalidInput

WORLD_VOCAB_FILE_NAME = "rwkv_vocab_v20230424.txt"
WORLD_END_OF_TEXT_ID = 0

# Models round their embedding table up (RWKV World: 65,530 ids in 65,536 rows), so a few
# unused rows are normal; a tokenizer of another model family is off by thousands.
EMBEDDING_PADDING_ALLOWANCE = 256

# Names that tokenizer.json files commonly give their end-of-text token, most likely first.
_END_OF_TEXT_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")

WorldEncoder = Literal["auto", "rust", "python"]


@runtime_checkable
class Tokenizer(Protocol):
    """What the local model needs from a tokenizer, whatever its kind."""

    @property
    def name(self) -> str:
        """A short label for logs and the context viewer, e.g. "rwkv_vocab_v20230424"."""
        ...

    @property
    def vocab_size(self) -> int:
        """One more than the largest token id this tokenizer can produce."""
        ...

    @property
    def eos_id(self) -> int | None:
        """The end-of-text token id, or None when the tokenizer has none."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, with no special tokens added."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 become U+FFFD."""
        ...

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The raw bytes of `ids`, which may end in the middle of a UTF-8 character."""
        ...


# --- RWKV World -------------------------------------------------------------------------


@dataclass(frozen=True)
class _WorldVocabulary:
    token_bytes: tuple[bytes, ...]  # indexed by token id; id 0 (end of text) is b""
    id_of: dict[bytes, int]


def default_world_vocab_path() -> Path:
    """The World vocabulary file inside the installed `rwkv` package (not imported)."""
    spec = importlib.util.find_spec("rwkv")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / WORLD_VOCAB_FILE_NAME
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"The RWKV World vocabulary ({WORLD_VOCAB_FILE_NAME}) ships with the `rwkv` package, "
        "which is not installed here; no tokenizer was loaded, so run `pip install rwkv` or "
        "pass the vocabulary file's path."
    )


def _parse_vocabulary_line(line: str, line_number: int) -> tuple[int, bytes]:
    """One `<id> <Python str or bytes literal> <byte length>` line as (id, token bytes)."""
    first_space, last_space = line.find(" "), line.rfind(" ")
    try:
        token_id = int(line[:first_space])
        # literal_eval, not eval: a vocabulary file must not be able to run code.
        literal = ast.literal_eval(line[first_space + 1 : last_space])
        token = literal.encode("utf-8") if isinstance(literal, str) else literal
        stated_length = int(line[last_space + 1 :])
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"line {line_number} is not `<id> <literal> <length>`") from error
    if not isinstance(token, bytes) or len(token) != stated_length:
        raise ValueError(f"line {line_number}'s token does not have its stated length")
    if token_id <= 0:
        raise ValueError(f"line {line_number} uses id {token_id}, but ids start at 1")
    return token_id, token


@functools.lru_cache(maxsize=4)
def _read_world_vocabulary(path: str) -> _WorldVocabulary:
    """Parse and check a World vocabulary file; cached, as it takes about a second."""
    by_id: dict[int, bytes] = {}
    try:
        with open(path, encoding="utf-8") as file:
            for line_number, line in enumerate(file, start=1):
                line = line.rstrip("\r\n")
                if line:
                    token_id, token = _parse_vocabulary_line(line, line_number)
                    if token_id in by_id:
                        raise ValueError(f"line {line_number} repeats id {token_id}")
                    by_id[token_id] = token
    except OSError as error:
        raise CheckpointError(
            f"The World vocabulary {path} could not be read ({error.strerror or error}); no "
            "tokenizer was loaded, so check the path."
        ) from error
    except ValueError as error:  # UnicodeDecodeError included
        raise CheckpointError(
            f"{path} is not an RWKV World vocabulary file ({error}); no tokenizer was loaded, so "
            f"use {WORLD_VOCAB_FILE_NAME} from the `rwkv` package."
        ) from error
    tokens = set(by_id.values())
    missing_bytes = [b for b in range(256) if bytes([b]) not in tokens]
    if missing_bytes:
        # Greedy matching needs every single byte as a fallback token, or some text cannot be encoded.
        raise CheckpointError(
            f"{path} lacks single-byte tokens (e.g. byte {missing_bytes[0]}), so it cannot encode "
            f"every text; no tokenizer was loaded, so use {WORLD_VOCAB_FILE_NAME} from the `rwkv` package."
        )
    token_bytes = [b""] * (max(by_id) + 1)
    for token_id, token in by_id.items():
        token_bytes[token_id] = token
    if len(tokens) != len(by_id):
        raise CheckpointError(
            f"{path} lists the same token under two ids, so encoding would be ambiguous; no "
            f"tokenizer was loaded, so use {WORLD_VOCAB_FILE_NAME} from the `rwkv` package."
        )
    id_of = {token: token_id for token_id, token in by_id.items()}
    return _WorldVocabulary(tuple(token_bytes), id_of)


@functools.lru_cache(maxsize=4)
def _compile_longest_match(path: str) -> re.Pattern[bytes]:
    """A regular expression that matches the longest vocabulary token at each position.

    The vocabulary's byte trie becomes nested alternatives: at a node, each child byte `c`
    leads to `c(?:<longer tokens below c>)?` when `c` ends a token, or `c(?:...)` when it
    does not. Siblings start with different bytes, so at most one alternative applies, and
    the greedy `?` tries the longer continuation first, so the first match is the longest
    token. `findall` then walks the text left to right: exactly the reference
    TRIE_TOKENIZER's greedy encoding, but inside the regex engine's C loop.
    """
    vocabulary = _read_world_vocabulary(path)
    trie: dict[int, list] = {}  # byte -> [ends_a_token, children]
    for token in vocabulary.id_of:
        children = trie
        for position, byte in enumerate(token):
            node = children.setdefault(byte, [False, {}])
            if position == len(token) - 1:
                node[0] = True
            children = node[1]

    def alternatives(children: dict[int, list]) -> tuple[bytes, int]:
        parts = []
        for byte in sorted(children):
            ends_a_token, grandchildren = children[byte]
            head = re.escape(bytes([byte]))
            if not grandchildren:
                parts.append(head)
                continue
            below, count = alternatives(grandchildren)
            if ends_a_token:
                parts.append(head + b"(?:" + below + b")?")
            elif count == 1:  # a plain chain needs no group; this halves the compile time
                parts.append(head + below)
            else:
                parts.append(head + b"(?:" + below + b")")
        return b"|".join(parts), len(parts)

    return re.compile(alternatives(trie)[0])


@functools.lru_cache(maxsize=4)
def _load_rust_encoder(path: str) -> Any | None:
    """The optional Rust encoder (PyPI `pyrwkv-tokenizer`, Apache-2.0), or None if unavailable."""
    try:
        import pyrwkv_tokenizer
    except ImportError:
        return None
    try:
        return pyrwkv_tokenizer.WorldTokenizer(path)
    except Exception:  # our own parser accepted the file, so fall back rather than fail
        return None


class WorldTokenizer:
    """The RWKV World tokenizer: greedy longest match over a fixed byte vocabulary.

    Token-for-token identical to the reference `rwkv.rwkv_tokenizer.TRIE_TOKENIZER`.
    Encoding uses the Rust package `pyrwkv-tokenizer` when it is installed (`encoder="auto"`),
    otherwise this module's own trie compiled to a regular expression (built on the first
    `encode`); both give the same ids. Token 0 is end of text; it decodes to nothing.
    Out-of-range ids raise `InvalidInput`.
    """

    def __init__(self, vocab_path: str | os.PathLike[str] | None = None, *, encoder: WorldEncoder = "auto"):
        if encoder not in ("auto", "rust", "python"):
            raise InvalidInput(
                f"Unknown World tokenizer encoder {encoder!r}; nothing was loaded, so use "
                "'auto', 'rust' or 'python'."
            )
        path = Path(vocab_path) if vocab_path is not None else default_world_vocab_path()
        self._path = str(path.resolve())
        self._vocabulary = _read_world_vocabulary(self._path)
        self._rust = None
        if encoder in ("auto", "rust"):
            self._rust = _load_rust_encoder(self._path)
            if self._rust is None and encoder == "rust":
                raise InvalidInput(
                    "The Rust World tokenizer was asked for but `pyrwkv-tokenizer` is not "
                    "installed or could not read the vocabulary; nothing was loaded, so run "
                    "`pip install pyrwkv-tokenizer` or use encoder='auto'."
                )
        self._name = path.stem

    @property
    def name(self) -> str:
        return self._name

    @property
    def vocab_size(self) -> int:
        return len(self._vocabulary.token_bytes)

    @property
    def eos_id(self) -> int:
        return WORLD_END_OF_TEXT_ID

    @property
    def encoder_name(self) -> str:
        """Which encoder runs: "pyrwkv-tokenizer" (Rust) or "python-trie"."""
        return "pyrwkv-tokenizer" if self._rust is not None else "python-trie"

    def encode(self, text: str) -> list[int]:
        if self._rust is not None:
            return list(self._rust.encode(text))
        # Compiled on first use (a few seconds, once per process), so decoding alone stays cheap.
        pattern = _compile_longest_match(self._path)
        id_of = self._vocabulary.id_of
        return [id_of[token] for token in pattern.findall(text.encode("utf-8"))]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        token_bytes = self._vocabulary.token_bytes
        try:
            return b"".join([token_bytes[token_id] for token_id in ids])
        except (IndexError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or not 0 <= i < len(token_bytes))
            raise InvalidInput(
                f"Token id {bad!r} is not in the {self._name} vocabulary (0 to "
                f"{len(token_bytes) - 1}); nothing was decoded, so pass ids from this tokenizer."
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"WorldTokenizer({self._path!r}, encoder={self.encoder_name!r})"


# --- tokenizer.json (the `tokenizers` package) ------------------------------------------


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's): which printable character stands for each byte.

    Bytes that are printable Latin-1 characters stand for themselves; the other 68 bytes are
    given the code points from 256 upwards, in byte order.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    char_to_byte = {chr(b): b for b in printable}
    next_code_point = 256
    for b in range(256):
        if b not in printable:
            char_to_byte[chr(next_code_point)] = b
            next_code_point += 1
    return char_to_byte


_BYTE_FALLBACK_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class HFTokenizer:
    """A `tokenizers` tokenizer (a tokenizer.json), as the local model's Tokenizer.

    `encode` adds no special tokens. `decode` and `decode_bytes` leave special tokens out.
    `decode_bytes` is exact for byte-level BPE (longyarn's own models) and for byte-fallback
    tokens (`<0xNN>`); for other decoders it decodes one token at a time.
    """

    def __init__(self, tokenizer: str | os.PathLike[str] | Any, *, name: str | None = None):
        from tokenizers import Tokenizer as _TokenizersTokenizer
        from tokenizers import decoders

        if isinstance(tokenizer, (str, os.PathLike)):
            path = Path(tokenizer)
            try:
                tokenizer = _TokenizersTokenizer.from_file(str(path))
            except Exception as error:  # tokenizers raises a bare Exception for missing or bad files
                raise CheckpointError(
                    f"{path} could not be read as a tokenizer.json ({str(error)[:160]}); no "
                    "tokenizer was loaded, so check the file or save the tokenizer again."
                ) from error
            name = name or (f"{path.parent.name}/{path.name}" if path.parent.name else path.name)
        # Text that merely spells a special token is text: a story quoting "<|endoftext|>" must
        # not end its own document. (This setting lives on the tokenizers object passed in.)
        tokenizer.encode_special_tokens = True
        self._tokenizer = tokenizer
        self._name = name or "tokenizer.json"
        self._vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        special_ids = {i for i, added in tokenizer.get_added_tokens_decoder().items() if added.special}
        self._eos_id = next(
            (i for i in map(tokenizer.token_to_id, _END_OF_TEXT_NAMES) if i is not None), None
        )
        self._token_bytes = self._build_byte_table(
            isinstance(tokenizer.decoder, decoders.ByteLevel), special_ids
        )

    def _build_byte_table(self, byte_level: bool, special_ids: set[int]) -> list[bytes]:
        alphabet = _byte_level_alphabet() if byte_level else {}
        added = self._tokenizer.get_added_tokens_decoder()
        table = []
        for token_id in range(self._vocab_size):
            token = self._tokenizer.id_to_token(token_id)
            if token is None or token_id in special_ids:
                table.append(b"")
            elif token_id in added:  # added tokens are stored as plain text, not byte-mapped
                table.append(added[token_id].content.encode("utf-8"))
            elif byte_level and all(char in alphabet for char in token):
                table.append(bytes(alphabet[char] for char in token))
            elif (fallback := _BYTE_FALLBACK_TOKEN.match(token)) is not None:
                table.append(bytes([int(fallback.group(1), 16)]))
            else:
                table.append(self._tokenizer.decode([token_id]).encode("utf-8"))
        return table

    @property
    def name(self) -> str:
        return self._name

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eos_id(self) -> int | None:
        return self._eos_id

    @property
    def backing(self) -> Any:
        """The wrapped `tokenizers.Tokenizer`, e.g. to save it beside a model."""
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        try:
            return b"".join([self._token_bytes[token_id] for token_id in ids])
        except (IndexError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or not 0 <= i < self._vocab_size)
            raise InvalidInput(
                f"Token id {bad!r} is not in the {self._name} vocabulary (0 to "
                f"{self._vocab_size - 1}); nothing was decoded, so pass ids from this tokenizer."
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"HFTokenizer(name={self._name!r}, vocab_size={self._vocab_size})"


# --- choosing and checking --------------------------------------------------------------


def load_tokenizer_for(path: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer of the model at `path`.

    A directory with a tokenizer.json (longyarn's own format), or a tokenizer.json itself,
    gives an `HFTokenizer`; a BlinkDL `.pth` file gives the `WorldTokenizer`. Anything else
    raises `CheckpointError`. Pair it with `check_matches` once the weights are loaded.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return HFTokenizer(path / "tokenizer.json")
        raise CheckpointError(
            f"The model directory {path} has no tokenizer.json; no tokenizer was loaded, so save "
            "the model again with its tokenizer."
        )
    if path.name == "tokenizer.json" and path.is_file():
        return HFTokenizer(path)
    if path.suffix == ".pth":
        if not path.is_file():
            raise CheckpointError(
                f"There is no model at {path}; no tokenizer was loaded, so check the path."
            )
        return WorldTokenizer()
    raise CheckpointError(
        f"{path} is neither a BlinkDL .pth file nor a longyarn model directory, so its tokenizer "
        "is unknown; nothing was loaded, so point at one of those."
    )


def check_matches(tokenizer: Tokenizer, vocab_size: int) -> None:
    """Raise `CheckpointError` unless `tokenizer` fits a model with `vocab_size` embedding rows.

    It fits when every id it produces has a row and the model has at most
    `EMBEDDING_PADDING_ALLOWANCE - 1` rows more (padding to a round size).
    """
    tokens = tokenizer.vocab_size
    if tokens <= vocab_size < tokens + EMBEDDING_PADDING_ALLOWANCE:
        return
    raise CheckpointError(
        f"The tokenizer {tokenizer.name} has {tokens:,} tokens but the model's embedding has "
        f"{vocab_size:,} rows, so it is not this model's tokenizer; nothing was generated, so "
        "use the tokenizer the model was trained with (BlinkDL World models take the World "
        "vocabulary; a longyarn model directory carries its own tokenizer.json)."
    )


# --- streaming ---------------------------------------------------------------------------


class StreamingDetokenizer:
    """Turns token ids, fed one at a time, into text that never splits a character.

    Bytes of a character that is not complete yet are held back until a later token
    completes it. Bytes that can never form a character become U+FFFD as soon as that is
    certain, and `flush` replaces an unfinished character at the very end. The pieces joined
    equal `tokenizer.decode(all_ids)`.
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The text that `token_id` completes; "" while a character is still partial."""
        return self._decoder.decode(self._tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        """Whatever is held back, with an unfinished character replaced by U+FFFD."""
        return self._decoder.decode(b"", final=True)

    @property
    def holding(self) -> bool:
        """Whether bytes of an unfinished character are being held back."""
        return bool(self._decoder.getstate()[0])

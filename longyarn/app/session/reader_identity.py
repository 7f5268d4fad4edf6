"""Who is reading: a reader id plus a secret, carried together as one token.

A token reads `<reader id>.<secret>`: the id says which reader to look up, the secret proves
the bearer is that reader. Only the SHA-256 of the secret is stored (the secret is random, so
a fast hash is enough), and it is compared in constant time. In a browser the token lives in
the page's address, which the reader bookmarks; in a terminal it lives in a file readable by
its owner only.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.readers import Reader, ReaderStore

from .reader_text import clean_reader_name

READER_ID_BYTES = 8  # 16 hex characters
SECRET_BYTES = 24  # 32 URL-safe characters, 192 bits: far beyond guessing
TOKEN_PATTERN = re.compile(r"(?P<reader_id>[0-9a-f]{16})\.(?P<secret>[A-Za-z0-9_-]{32,64})\Z")
TOKEN_FILE_NAME = "reader-token"


@dataclass(frozen=True)
class ReaderToken:
    """A parsed token. `str()` gives it back in the form a URL or a file holds."""

    reader_id: str
    secret: str

    def __str__(self) -> str:
        return f"{self.reader_id}.{self.secret}"

    def __repr__(self) -> str:  # a token must not end up in a log by accident
        return f"ReaderToken(reader_id={self.reader_id!r}, secret=…)"

    @property
    def secret_hash(self) -> str:
        return hashlib.sha256(self.secret.encode()).hexdigest()


def new_token() -> ReaderToken:
    """A fresh token for a reader who does not exist yet."""
    return ReaderToken(secrets.token_hex(READER_ID_BYTES), secrets.token_urlsafe(SECRET_BYTES))


def parse_token(text: str | None) -> ReaderToken | None:
    """The token in `text`, or None if it is missing or not in the token's form."""
    match = TOKEN_PATTERN.match((text or "").strip())
    if match is None:
        return None
    return ReaderToken(match.group("reader_id"), match.group("secret"))


class TokenRefused(Exception):
    """The token names an existing reader but its secret is not theirs."""


def reader_for_token(store: ReaderStore, token: ReaderToken) -> Reader | None:
    """The reader the token proves, or None if no reader has that id yet.

    Raises `TokenRefused` when the id is taken and the secret does not match it.
    """
    reader = store.reader_with_token(token.reader_id, token.secret_hash)
    if reader is not None:
        return reader
    if store.reader_exists(token.reader_id):
        raise TokenRefused()
    return None


def register_reader(store: ReaderStore, token: ReaderToken, name: str) -> Reader:
    """Create the reader that `token` will prove from now on, under a display name."""
    return store.create_reader(
        reader_id=token.reader_id, name=clean_reader_name(name), token_hash=token.secret_hash
    )


# ---- the terminal: one reader per user account ----------------------------------------


def token_file() -> Path:
    return Path(platformdirs.user_data_dir("longyarn")) / TOKEN_FILE_NAME


def load_local_token(path: Path | None = None) -> ReaderToken | None:
    """The terminal reader's token, if one was saved."""
    try:
        return parse_token((path or token_file()).read_text(encoding="utf-8"))
    except OSError:
        return None


def save_local_token(token: ReaderToken, path: Path | None = None) -> None:
    """Keep the terminal reader's token in a file only its owner can read."""
    path = path or token_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(str(token) + "\n")
        os.replace(temporary, path)
    except OSError as error:
        raise InvalidInput(
            f"Your reader identity could not be saved ({error.strerror or error}); you can read "
            "now, but next time you will start as a new reader; check your data folder's permissions."
        ) from None

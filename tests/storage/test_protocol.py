"""The stores keep up with their interfaces as those grow: the engine's StoryStore and reader
mode's ReaderStore."""

from __future__ import annotations

import inspect

from longyarn.recurrent_core.readers import ReaderStore
from longyarn.recurrent_core.store import StoryStore
from longyarn.storage import SqlStore
from longyarn.storage.readers import SqlReaders


def test_sql_store_has_every_method_of_the_engines_store_protocol():
    protocol_methods = {
        name: inspect.signature(member)
        for name, member in vars(StoryStore).items()
        if callable(member) and not name.startswith("_")
    }

    for name, signature in protocol_methods.items():
        assert hasattr(SqlStore, name), name
        assert inspect.signature(getattr(SqlStore, name)).parameters.keys() == (
            signature.parameters.keys()
        ), name


def test_sql_readers_has_every_method_of_reader_modes_store_protocol():
    for name, member in vars(ReaderStore).items():
        if callable(member) and not name.startswith("_"):
            assert hasattr(SqlReaders, name), name
            implemented = inspect.signature(getattr(SqlReaders, name))
            assert implemented.parameters.keys() == inspect.signature(member).parameters.keys(), name

"""SqlStore keeps up with the engine's StoryStore interface as that grows."""

from __future__ import annotations

import inspect

from longyarn.recurrent_core.store import StoryStore
from longyarn.storage import SqlStore


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

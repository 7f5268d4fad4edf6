"""The story bible's plain rules: which facts hold where, how entries and facts are named."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from longyarn.recurrent_core.bible import (
    BibleEntry,
    BibleFact,
    check_names_free,
    clean_keys,
    facts_in_force,
    find_entry,
    find_fact,
)
from longyarn.recurrent_core.errors import BibleError

NOW = datetime(2025, 1, 6, tzinfo=timezone.utc)


def entry(name: str, *aliases: str, entry_id: str = "") -> BibleEntry:
    return BibleEntry(entry_id or name.lower(), "s", "character", name, aliases, (), "", "", False, NOW, NOW)


def fact(fact_id: str, start: int, end: int | None = None, entry_id: str = "mara") -> BibleFact:
    return BibleFact(fact_id, entry_id, f"fact {fact_id}", start, end, None, None, NOW)


def test_a_fact_holds_from_its_start_through_its_last_paragraph():
    sailor, captain, forever = fact("a", 1, 12), fact("b", 13), fact("c", 5, 5)

    assert facts_in_force([sailor, captain, forever], 12) == [sailor]
    assert facts_in_force([sailor, captain, forever], 13) == [captain]
    assert facts_in_force([sailor, captain, forever], 5) == [sailor, forever]


def test_an_entry_is_found_by_id_name_or_alias_in_any_case_and_spacing():
    mara, ada = entry("Mara Voss", "the Captain"), entry("Ada")

    assert find_entry([ada, mara], "mara voss") is mara
    assert find_entry([ada, mara], "  THE   captain ") is mara
    assert find_entry([ada, mara], "ada") is ada
    with pytest.raises(BibleError, match="no entry called 'Nobody'"):
        find_entry([ada, mara], "Nobody")


def test_a_fact_is_found_by_a_unique_start_of_its_id_within_its_entry():
    mara = entry("Mara")
    facts = [fact("abcd1234", 1), fact("abcd9999", 2), fact("ffff0000", 1, entry_id="ada")]

    assert find_fact(facts, "abcd1", mara).id == "abcd1234"
    with pytest.raises(BibleError, match="several of its facts"):
        find_fact(facts, "abcd", mara)
    with pytest.raises(BibleError, match="none of its facts"):
        find_fact(facts, "ffff0000", mara)  # another entry's
    with pytest.raises(BibleError, match="none of its facts"):
        find_fact([fact("abcd1234", 1)], "abc", mara)  # too short to be sure


def test_aliases_are_kept_once_each_and_never_repeat_the_name():
    assert clean_keys(["the captain", " The  Captain ", "", "Mara", "Voss"], "mara") == ("the captain", "Voss")


def test_an_entry_may_keep_its_own_names_but_not_take_anothers():
    mara, ada = entry("Mara", "the captain"), entry("Ada")

    check_names_free([mara, ada], ["MARA", "The Captain"], entry_id="mara")
    with pytest.raises(BibleError, match="'ADA' is already the name of the character 'Ada'"):
        check_names_free([mara, ada], ["Mara", "ADA"], entry_id="mara")

"""The story bible's activation settings: from the config file or the environment to the engine."""

from __future__ import annotations

import pytest

from longyarn.app.settings import config_path, load_settings
from longyarn.recurrent_core.engine_config import EngineConfig
from longyarn.recurrent_core.errors import InvalidInput


def test_the_bible_settings_reach_the_engine_from_the_file_and_the_environment(monkeypatch):
    defaults = load_settings(backend="openai").engine_config()
    assert (defaults.bible_budget_tokens, defaults.bible_meaning_threshold, defaults.bible_meaning_max,
            defaults.bible_scan_paragraphs) == (600, 0.4, 3, 3) == (
        EngineConfig().bible_budget_tokens, EngineConfig().bible_meaning_threshold,
        EngineConfig().bible_meaning_max, EngineConfig().bible_scan_paragraphs)

    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text("bible_budget_tokens = 250\nbible_meaning_threshold = 0.55\n", encoding="utf-8")
    monkeypatch.setenv("LONGYARN_BIBLE_MEANING_MAX", "0")
    config = load_settings(backend="openai").engine_config()
    assert (config.bible_budget_tokens, config.bible_meaning_threshold, config.bible_meaning_max) == (250, 0.55, 0)


def test_a_bad_bible_setting_is_one_sentence_that_names_it():
    with pytest.raises(InvalidInput) as raised:
        load_settings(backend="openai", bible_meaning_threshold=1.5)
    assert str(raised.value).startswith("The setting 'bible_meaning_threshold' is invalid")

"""Settings precedence and secrecy, as a user configures longyarn."""

from __future__ import annotations

import pytest

from longyarn.app.settings import Settings, config_path, load_settings, save_settings
from longyarn.recurrent_core.errors import InvalidInput


def write_config(text: str) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_flags_beat_environment_beat_config_file(monkeypatch):
    write_config('model = "from-file"\nrecall_k = 7\nbase_url = "http://127.0.0.1:9/v1"\n')
    assert load_settings().model == "from-file"
    assert load_settings().recall_k == 7
    monkeypatch.setenv("LONGYARN_MODEL", "from-env")
    assert load_settings().model == "from-env"
    assert load_settings(model="from-flag").model == "from-flag"
    assert load_settings(model=None).model == "from-env", "an absent flag does not override"


def test_openai_variables_are_honoured_and_pick_the_backend(monkeypatch):
    assert load_settings().resolved_backend() == "local"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    settings = load_settings()
    assert settings.base_url == "http://127.0.0.1:8000/v1"
    assert settings.resolved_backend() == "openai"
    assert load_settings(backend="local").resolved_backend() == "local"


def test_the_model_line_says_the_demo_writes_prose_only_and_names_another_checkpoint_plainly(tmp_path):
    assert "story prose only" in load_settings().describe_model()
    other = load_settings(checkpoint=str(tmp_path / "rwkv7-g1a-1.5b.pth")).describe_model()
    assert "rwkv7-g1a-1.5b.pth" in other and "prose only" not in other


def test_the_api_key_is_never_shown(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-key-123")
    settings = load_settings()
    assert settings.api_key.get_secret_value() == "sk-very-secret-key-123"
    for text in (repr(settings), str(settings), settings.describe_model(), settings.model_dump_json()):
        assert "sk-very-secret-key-123" not in text


def test_per_role_sampling_from_the_environment_reaches_the_engine(monkeypatch):
    monkeypatch.setenv("LONGYARN_SAMPLING__WRITER__TEMPERATURE", "0.42")
    config = load_settings().engine_config()
    assert config.sampling["writer"].temperature == 0.42
    assert config.sampling["planner"].temperature == Settings().engine_config().sampling["planner"].temperature


def test_the_local_model_keeps_short_reply_ceilings_and_a_server_model_gets_room(monkeypatch):
    # A small model on a CPU pays for every token past a cut; a server model may need 3-4
    # tokens a word outside English.
    local = load_settings(backend="local").engine_config().sampling
    server = load_settings(backend="openai", base_url="http://127.0.0.1:9/v1").engine_config().sampling
    for role in ("memory", "planner", "opening"):
        assert local[role].max_tokens < server[role].max_tokens, role
        assert local[role].temperature == server[role].temperature, role
    monkeypatch.setenv("LONGYARN_SAMPLING__MEMORY__MAX_TOKENS", "1000")
    assert load_settings(backend="local").engine_config().sampling["memory"].max_tokens == 1000


def test_sampling_saved_for_the_bible_role_applies_to_its_new_name_opening_and_is_saved_so():
    write_config('[sampling.bible]\ntemperature = 0.33\nmax_tokens = 900\n[role_presets]\nbible = "focused"\n')
    settings = load_settings()
    assert settings.engine_config().sampling["opening"].temperature == 0.33
    assert settings.engine_config().sampling["opening"].max_tokens == 900
    assert settings.role_presets == {"opening": "focused"}
    save_settings(settings, include_api_key=False)
    saved = config_path().read_text()
    assert "[sampling.opening]" in saved and 'opening = "focused"' in saved and "bible" not in saved
    assert load_settings().engine_config().sampling["opening"].temperature == 0.33


def test_bad_values_are_one_clear_sentence(monkeypatch):
    write_config("recall_k = -3\n")
    with pytest.raises(InvalidInput) as failure:
        load_settings()
    message = str(failure.value)
    assert "recall_k" in message and str(config_path()) in message and "\n" not in message
    write_config('[sampling.writer]\ntemprature = 0.5\n')
    with pytest.raises(InvalidInput, match="temprature"):
        load_settings()


def test_unrelated_api_key_and_base_url_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("API_KEY", "sk-for-another-service")
    monkeypatch.setenv("BASE_URL", "http://example.com")
    settings = load_settings()
    assert settings.api_key is None and settings.base_url is None
    assert settings.resolved_backend() == "local"
    assert load_settings(base_url="http://127.0.0.1:1/v1", api_key="sk-x").base_url == "http://127.0.0.1:1/v1"


def test_the_degeneration_policy_reaches_the_engine_and_a_wrong_one_is_one_sentence(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    assert load_settings().engine_config().degeneration == "keep"
    monkeypatch.setenv("LONGYARN_DEGENERATION", "stop")
    assert load_settings().engine_config().degeneration == "stop"
    monkeypatch.setenv("LONGYARN_DEGENERATION", "retry forever")
    with pytest.raises(InvalidInput, match="'degeneration' is invalid"):
        load_settings()


def test_the_weights_setting_reaches_the_local_model_and_a_wrong_one_is_one_sentence(monkeypatch, capsys, tmp_path):
    from longyarn.app.cli import main
    from longyarn.recurrent_core.local_lm.runtime import LocalRuntime

    assert load_settings().weights == "half"
    monkeypatch.setenv("LONGYARN_WEIGHTS", "int8")
    runtime = LocalRuntime.from_settings(load_settings())  # the bundled demo model
    try:
        assert runtime.lm.weights == "int8"
    finally:
        runtime.close()
    assert load_settings(weights="fp32").weights == "fp32"  # --weights beats the environment
    monkeypatch.delenv("LONGYARN_WEIGHTS")
    assert main(["export", "some-story", "--db", str(tmp_path / "stories.db"), "--weights", "int4"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "'weights' is invalid" in error and "'int8'" in error, error

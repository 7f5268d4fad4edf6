"""Loading BlinkDL .pth files and longyarn model directories, and the errors for bad ones."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from longyarn.recurrent_core.errors import CheckpointError, InvalidInput
from longyarn.recurrent_core.local_lm import LocalLM, load_checkpoint, save_own_format
from longyarn.training.synthetic import random_rwkv7_state_dict


def test_sizes_are_inferred_from_a_blinkdl_file(tiny_checkpoint, checkpoint_01b_layout):
    for checkpoint, lora in ((tiny_checkpoint, (32, 32, 32, 32)), (checkpoint_01b_layout, (64, 64, 32, 128))):
        loaded = load_checkpoint(checkpoint.path)
        config = loaded.config
        assert (config.n_layer, config.n_embd, config.head_size, config.vocab_size) == (
            checkpoint.n_layer, checkpoint.n_embd, checkpoint.head_size, checkpoint.vocab_size
        )
        assert (config.lora_w, config.lora_a, config.lora_v, config.lora_g) == lora
        assert config.dim_ffn == 4 * checkpoint.n_embd
        assert loaded.tokenizer is None  # a .pth file carries none


def test_unusual_lora_widths_and_a_single_layer_load(tmp_path):
    state_dict = random_rwkv7_state_dict(
        1, 64, 50, head_size=16, lora_widths={"w": 8, "a": 16, "v": 4, "g": 24}
    )
    path = tmp_path / "one_layer.pth"
    torch.save(state_dict, path)
    lm = LocalLM.load(path)
    assert (lm.config.n_layer, lm.config.head_size, lm.config.lora_w, lm.config.lora_g) == (1, 16, 8, 24)
    logits, _ = lm.forward([1, 2, 3])
    assert torch.isfinite(logits).all()


def test_a_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no model at .*nothing.pth"):
        LocalLM.load(tmp_path / "nothing.pth")


def test_a_truncated_file_is_a_checkpoint_error(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint.path.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="could not be read as a PyTorch checkpoint"):
        LocalLM.load(truncated)


def test_a_file_of_another_kind_is_a_checkpoint_error(tmp_path):
    not_a_model = tmp_path / "notes.pth"
    not_a_model.write_text("chapter one\n")
    with pytest.raises(CheckpointError, match="could not be read"):
        LocalLM.load(not_a_model)
    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], a_list)
    with pytest.raises(CheckpointError, match="rather than a plain dictionary"):
        LocalLM.load(a_list)


def _older_rwkv_state_dict(version: int) -> dict[str, torch.Tensor]:
    """The telltale tensors of earlier RWKV generations (shapes of a 2-layer, 64-wide model)."""
    C, H = 64, 1
    state_dict = {"emb.weight": torch.zeros(10, C), "head.weight": torch.zeros(10, C)}
    for i in range(2):
        att = f"blocks.{i}.att."
        state_dict[att + "key.weight"] = torch.zeros(C, C)
        if version == 4:
            state_dict.update({att + "time_decay": torch.zeros(C), att + "time_first": torch.zeros(C),
                               att + "time_mix_k": torch.zeros(1, 1, C)})
        elif version == 5:
            state_dict.update({att + "time_decay": torch.zeros(H, 64), att + "time_faaaa": torch.zeros(H, 64),
                               att + "ln_x.weight": torch.zeros(C), att + "gate.weight": torch.zeros(C, C)})
        else:
            state_dict.update({att + "time_maa_x": torch.zeros(1, 1, C), att + "time_maa_w1": torch.zeros(C, 160),
                               att + "time_decay_w1": torch.zeros(C, 64), att + "time_decay": torch.zeros(1, 1, C),
                               att + "time_faaaa": torch.zeros(H, 64), att + "ln_x.weight": torch.zeros(C)})
    return state_dict


@pytest.mark.parametrize("version", [4, 5, 6])
def test_an_older_rwkv_checkpoint_is_named_in_the_error(version, tmp_path):
    path = tmp_path / f"rwkv{version}.pth"
    torch.save(_older_rwkv_state_dict(version), path)
    with pytest.raises(CheckpointError, match=f"looks like an RWKV-{version} checkpoint"):
        LocalLM.load(path)


def test_missing_unexpected_and_misshapen_tensors_are_named(tiny_checkpoint, tmp_path):
    broken = dict(tiny_checkpoint.state_dict)
    del broken["blocks.2.att.v1"]
    path = tmp_path / "missing.pth"
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match="lacks the RWKV-7 tensors 'blocks.2.att.v1'"):
        LocalLM.load(path)

    extra = dict(tiny_checkpoint.state_dict, **{"blocks.0.ffn.s_emb.weight": torch.zeros(300, 32)})
    torch.save(extra, path)
    with pytest.raises(CheckpointError, match="'blocks.0.ffn.s_emb.weight'"):
        LocalLM.load(path)

    misshapen = dict(tiny_checkpoint.state_dict, **{"blocks.1.att.key.weight": torch.zeros(128, 64)})
    torch.save(misshapen, path)
    with pytest.raises(CheckpointError, match=r"'blocks.1.att.key.weight' with shape \(128, 64\)"):
        LocalLM.load(path)


def _word_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "once": 1, "upon": 2, "a": 3, "time": 4}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def test_own_format_round_trip_with_shards_and_tokenizer(tiny_checkpoint, tiny_lm, tmp_path):
    out = save_own_format(
        tiny_checkpoint.state_dict, {"trained_on": "fables"}, _word_tokenizer(), tmp_path / "model",
        max_shard_bytes=100_000,  # forces shards, and cutting emb/head/ffn tensors into pieces
    )
    weight_files = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(weight_files) > 1
    assert all(f.stat().st_size <= 100_000 for f in weight_files)
    config = json.loads((out / "config.json").read_text())
    assert config["n_layer"] == 3 and config["head_size"] == 32 and config["trained_on"] == "fables"

    lm = LocalLM.load(out)
    assert lm.tokenizer.encode("once upon a time").ids == [1, 2, 3, 4]
    assert lm.extra_config["trained_on"] == "fables"
    tokens = [5, 17, 200, 3]
    logits, state = lm.forward(tokens)
    expected, expected_state = tiny_lm.forward(tokens)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(state.wkv, expected_state.wkv, rtol=0, atol=0)


def test_own_format_in_one_file_from_a_tokenizer_path(tiny_checkpoint, tmp_path):
    tokenizer_path = tmp_path / "tokenizer.json"
    _word_tokenizer().save(str(tokenizer_path))
    out = save_own_format(tiny_checkpoint.state_dict, None, tokenizer_path, tmp_path / "model")
    assert (out / "model.safetensors").is_file()
    assert LocalLM.load(out).tokenizer.encode("a time").ids == [3, 4]

    # Saving again without a tokenizer, sharded, leaves no stale weight file behind.
    save_own_format(tiny_checkpoint.state_dict, None, None, out, max_shard_bytes=500_000)
    assert not (out / "model.safetensors").exists()
    LocalLM.load(out)


def test_own_format_errors(tiny_checkpoint, tmp_path):
    out = save_own_format(tiny_checkpoint.state_dict, None, None, tmp_path / "model", max_shard_bytes=500_000)
    shards = sorted(out.glob("model-*.safetensors"))
    shards[1].unlink()
    with pytest.raises(CheckpointError, match="incomplete or mixed set of weight shards"):
        LocalLM.load(out)

    save_own_format(tiny_checkpoint.state_dict, None, None, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(dict(config, n_layer=4)))
    with pytest.raises(CheckpointError, match="says n_layer is 4 but the weights have 3"):
        LocalLM.load(out)

    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match="without a config.json"):
        LocalLM.load(out)

    with pytest.raises(InvalidInput, match="says n_embd is 256"):
        save_own_format(tiny_checkpoint.state_dict, {"n_embd": 256}, None, tmp_path / "other")

"""The training script end to end, on a tiny corpus made here: it learns, evaluates and saves."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.training import train
from longyarn.training.tokenizer_training import prepare_data

WORDS = (
    "the a little old king queen fox wolf girl boy forest river castle went saw said found "
    "gold bread door night morning and but then so very quietly happily away home into under"
).split()

TINY_MODEL = [
    "--device", "cpu", "--threads", "1", "--n-layer", "2", "--n-embd", "32", "--head-size", "8",
    "--ctx-len", "32", "--batch-size", "4", "--warmup-steps", "5", "--log-interval", "2",
    "--val-interval", "4", "--val-windows", "4", "--eval-bytes-per-book", "1500",
    "--eval-streams", "2", "--sample-tokens", "8",
]


def make_book(seed: int, paragraphs: int = 40) -> str:
    """Hard-wrapped paragraphs of simple sentences, like the Gutenberg books."""
    rng = random.Random(seed)
    lines = []
    for _ in range(paragraphs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize() + "."
                     for _ in range(rng.randint(2, 5))]
        text = " ".join(sentences)
        lines.extend(text[i : i + 60] for i in range(0, len(text), 60))
        lines.append("")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("corpus")
    for index in range(5):
        (corpus / f"{index}-book.txt").write_text(make_book(index), encoding="utf-8")
    out = tmp_path_factory.mktemp("data")
    prepare_data(corpus, out, vocab_size=300, heldout_names=["4-book.txt"])
    return out


def run_training(data_dir: Path, out: Path, *flags: str) -> dict:
    torch.set_num_threads(1)
    return train.main([*TINY_MODEL, "--data", str(data_dir), "--out", str(out), *flags])


def weights_of(model_dir: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def test_run_writes_a_loadable_model_directory_with_held_out_figures(data_dir, tmp_path):
    out = tmp_path / "model"
    results = run_training(data_dir, out, "--max-steps", "8", "--seed", "7")

    assert {"config.json", "tokenizer.json", "model.safetensors", "eval.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "longyarn-rwkv7" and config["version"] == 1
    assert (config["n_layer"], config["n_embd"], config["head_size"], config["vocab_size"]) == (2, 32, 8, 300)
    assert config["ctx_len"] == 32
    assert config["prose_only"] is True, "books alone: the engine must not ask it to plan"
    assert config["training"]["seed"] == 7 and config["training"]["steps"] == 8
    assert config["training"]["tokens_seen"] == 8 * 4 * 32

    written = json.loads((out / "eval.json").read_text())
    assert written == results
    assert math.isfinite(written["heldout_bits_per_byte"]) and 0 < written["heldout_bits_per_byte"] < 12
    assert written["heldout_books"] == ["4-book.txt"]
    assert {"zstd_19", "zstd_3", "xz_9e"} <= set(written["baselines_bits_per_byte"])
    assert written["sample"].startswith(train.TrainConfig.sample_prompt)

    # The inference side reads the directory back, with the sizes it declares.
    from longyarn.recurrent_core.local_lm.checkpoint import load_checkpoint

    loaded = load_checkpoint(out)
    assert loaded.config.n_layer == 2 and loaded.tokenizer is not None
    assert all(t.dtype == torch.bfloat16 for t in loaded.state_dict.values())


def test_same_seed_gives_identical_weights_and_another_seed_does_not(data_dir, tmp_path):
    first = run_training(data_dir, tmp_path / "a", "--max-steps", "6", "--seed", "11")
    second = run_training(data_dir, tmp_path / "b", "--max-steps", "6", "--seed", "11")
    other = run_training(data_dir, tmp_path / "c", "--max-steps", "6", "--seed", "12")

    a, b, c = (weights_of(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert first["heldout_bits_per_byte"] == second["heldout_bits_per_byte"]
    assert not all(torch.equal(a[key], c[key]) for key in a)
    assert other["heldout_bits_per_byte"] != first["heldout_bits_per_byte"]


def test_loss_falls_on_a_repeated_text(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    paragraph = "The little fox ran home across the snow, and the old wolf watched him go.\n\n"
    for index in range(3):
        (corpus / f"{index}-repeat.txt").write_text(paragraph * 60, encoding="utf-8")
    data = tmp_path / "data"
    prepare_data(corpus, data, vocab_size=300, heldout_names=["2-repeat.txt"])

    results = run_training(data, tmp_path / "model", "--max-steps", "40", "--lr", "3e-3", "--seed", "1")

    curve = [loss for _, loss in results["loss_curve"]]
    assert curve[0] > 4.0
    assert curve[-1] < 0.5 * curve[0]
    assert results["heldout_bits_per_byte"] < 1.0  # the held-out copy is the same text


def test_time_budget_plans_the_schedule_and_still_saves(data_dir, tmp_path):
    out = tmp_path / "model"
    results = run_training(data_dir, out, "--time-budget-s", "4", "--calibration-steps", "4",
                           "--warmup-steps", "5", "--seed", "3")
    assert results["planned_steps"] is not None and results["planned_steps"] >= 4
    assert results["steps"] <= results["planned_steps"]
    assert json.loads((out / "config.json").read_text())["training"]["planned_steps"] == results["planned_steps"]


def test_weights_are_split_into_files_under_the_size_limit(data_dir, tmp_path):
    out = tmp_path / "model"
    run_training(data_dir, out, "--max-steps", "1", "--max-shard-bytes", "100000")
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    assert all(shard.stat().st_size < 100_000 for shard in shards)


def test_missing_data_is_reported_with_the_command_that_prepares_it(tmp_path):
    with pytest.raises(InvalidInput, match="tokenizer_training"):
        run_training(tmp_path / "nowhere", tmp_path / "model", "--max-steps", "1")


def test_recall_episodes_train_beside_the_books_and_a_seed_replays_them(data_dir, tmp_path):
    flags = ("--max-steps", "6", "--seed", "5", "--recall-rows", "1", "--recall-ctx-len", "512",
             "--recall-answer-weight", "4", "--log-interval", "3")
    first = run_training(data_dir, tmp_path / "a", *flags)
    second = run_training(data_dir, tmp_path / "b", *flags)

    assert first["tokens_seen"] == 6 * (4 * 32 + 512), "each step reads the books and a row of episodes"
    curve = first["recall_answer_curve"]
    assert [step for step, _ in curve] == [3, 6] and all(0 <= share <= 1 for _, share in curve)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["training"]["config"]["recall_rows"] == 1
    a, b = weights_of(tmp_path / "a"), weights_of(tmp_path / "b")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert first["heldout_bits_per_byte"] == second["heldout_bits_per_byte"]


def test_training_can_start_from_a_saved_model_of_the_same_shape(data_dir, tmp_path):
    start = run_training(data_dir, tmp_path / "start", "--max-steps", "8", "--seed", "7")
    # A learning rate too small to move the weights: the run starts where the saved model stands.
    again = run_training(data_dir, tmp_path / "again", "--max-steps", "1", "--lr", "1e-12",
                         "--init-from", str(tmp_path / "start"))
    assert again["heldout_bits_per_byte"] == pytest.approx(start["heldout_bits_per_byte"], abs=1e-3)

    with pytest.raises(InvalidInput, match="another shape"):
        run_training(data_dir, tmp_path / "wide", "--max-steps", "1", "--n-embd", "64",
                     "--init-from", str(tmp_path / "start"))

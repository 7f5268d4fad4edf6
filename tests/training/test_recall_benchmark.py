"""benchmarks/recall.py runs end to end (a tiny random model, a made-up corpus) and ends with its figures line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from longyarn.training.tokenizer_training import HELDOUT_BOOKS
from tests.local_lm.test_train_run import make_book

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recall.py"


def test_the_recall_benchmark_prints_every_table_and_its_last_line(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed, name in enumerate(HELDOUT_BOOKS):  # the benchmark reads the held-out books alone
        (corpus / name).write_text(make_book(seed, paragraphs=120), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--random-weights", "tiny", "--items-per-cell", "2", "--lengths", "96", "160",
         "--corpus", str(corpus), "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for table in ("Accuracy by context length", "Accuracy by depth", "Accuracy by length and depth", "Overall:"):
        assert table in out
    assert "160 @ 90%" in out and "JRT gain (b) - (a)" in out and "Targets at" not in out
    assert re.fullmatch(r"recall a=\d+\.\d% b=\d+\.\d% c=\d+\.\d% n=12", out.strip().splitlines()[-1])

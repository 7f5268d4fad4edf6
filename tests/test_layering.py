"""The dependency rules of ARCHITECTURE.md, checked the way a user would hit them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_import_linter_contracts_hold():
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


def test_importing_the_engine_pulls_in_neither_torch_nor_textual():
    result = _run_python(
        "import sys, longyarn.recurrent_core, longyarn.recurrent_core.engine, longyarn.recurrent_core.replies.roles, "
        "longyarn.recurrent_core.prompts, longyarn.recurrent_core.memory, longyarn.recurrent_core.embeddings, "
        "longyarn.recurrent_core.backends.openai_backend\n"
        "heavy = sorted(m for m in ('torch', 'textual', 'triton', 'sentence_transformers') if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_batch_help_does_not_import_textual():
    code = (
        "import sys\n"
        "from longyarn.app.cli import main\n"
        "try:\n"
        "    main(['batch', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TEXTUAL' if 'textual' in sys.modules else 'CLEAN', file=sys.stderr)"
    )
    result = _run_python(code)
    assert "--paragraphs" in result.stdout
    assert result.stderr.strip().endswith("CLEAN"), result.stderr

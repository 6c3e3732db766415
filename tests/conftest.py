"""Shared fixtures. Every test runs offline and isolated: no DVC analytics, no global DVC or git config."""

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import copy_repo, run

os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # dvc of this environment
for key, value in {
    "GIT_AUTHOR_NAME": "engineforge tests",
    "GIT_AUTHOR_EMAIL": "tests@engineforge.invalid",
    "GIT_COMMITTER_NAME": "engineforge tests",
    "GIT_COMMITTER_EMAIL": "tests@engineforge.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(autouse=True, scope="session")
def isolated_dvc(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep DVC's global, system and site state out of the user's home."""
    base = tmp_path_factory.mktemp("dvc-state")
    for name in ("DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR", "DVC_SITE_CACHE_DIR"):
        os.environ[name] = str(base / name.lower())
    os.environ["HOME"] = str(base / "home")
    (base / "home").mkdir()


@pytest.fixture(scope="session")
def mlp_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `python -m examples.mlp` writes: weights, eval and calibration .npz, and an ONNX copy."""
    from examples import mlp

    out = tmp_path_factory.mktemp("mlp")
    mlp.main(out)
    return out


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project in a temporary folder, as the working directory."""
    copy_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def dvc_repo(tmp_path: Path) -> Path:
    """A fresh git repo holding the project (no DVC cache, no build/, no dvc.lock)."""
    copy_repo(tmp_path)
    (tmp_path / "dvc.lock").unlink(missing_ok=True)
    run(["git", "init", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "copy"], tmp_path)
    return tmp_path

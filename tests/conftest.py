"""Shared fixtures. Every test runs offline and isolated: no DVC analytics, no global DVC or git config."""

import os
import socket
import subprocess
import sys
import time
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A moto S3 server on 127.0.0.1 with one bucket; every AWS client setting points at it and nowhere else."""
    port = free_port()
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "config").write_text("[default]\nregion = us-east-1\n")
    (aws / "credentials").write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    settings = {
        "AWS_EC2_METADATA_DISABLED": "true",  # never probe the cloud instance-metadata address
        "AWS_CONFIG_FILE": str(aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",  # the endpoint lives here, never in git
        "AWS_MAX_ATTEMPTS": "1",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.1)
        import boto3

        bucket = f"engineforge-{tmp_path.name.lower().replace('_', '-')[:40]}"
        boto3.client("s3", endpoint_url=settings["AWS_ENDPOINT_URL_S3"]).create_bucket(Bucket=bucket)
        yield bucket
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

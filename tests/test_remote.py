"""A shared DVC remote as the team's engine cache: repo A builds and pushes to an S3-compatible server (moto, on
127.0.0.1, started and stopped here), a fresh clone B runs `dvc repro --pull` and builds nothing."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import QUICK, ran_stages, run

pytestmark = pytest.mark.slow


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


def bucket_bytes(bucket: str) -> int:
    import boto3

    client = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(obj["Size"] for page in pages for obj in page.get("Contents", []))


def test_a_fresh_clone_pulls_the_engine_instead_of_building_it(dvc_repo: Path, tmp_path: Path, s3_bucket: str):
    repo_a = dvc_repo
    run(["dvc", "remote", "add", "-d", "shared", f"s3://{s3_bucket}/cache"], repo_a)
    run(["dvc", "exp", "run", *QUICK], repo_a)
    run(["git", "add", "-A"], repo_a)
    run(["git", "commit", "-qm", "pipeline run"], repo_a)
    run(["dvc", "push", "--run-cache"], repo_a)
    assert bucket_bytes(s3_bucket) > (repo_a / "build/digits/export/model.onnx").stat().st_size

    repo_b = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo_a), str(repo_b)], tmp_path)
    assert not (repo_b / "build").exists()
    pulled = run(["dvc", "repro", "--pull"], repo_b)
    assert ran_stages(pulled.stdout) == ["env"], pulled.stdout  # nothing built, exported or measured again
    manifest = json.loads((repo_b / "build/digits/engine/manifest.json").read_text())
    engine_a = json.loads((repo_a / "build/digits/engine/manifest.json").read_text())
    assert manifest == engine_a
    compare = run([sys.executable, "-m", "stages.compare"], repo_b)  # the pulled engine loads and passes the gate
    assert "gate passed" in compare.stdout

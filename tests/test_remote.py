"""A shared DVC remote as the team's engine cache: repo A builds and pushes to an S3-compatible server (moto, on
127.0.0.1, started and stopped here), a fresh clone B runs `dvc repro --pull` and builds nothing."""

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import QUICK, ran_stages, run

pytestmark = pytest.mark.slow


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
    manifest = json.loads((repo_b / "build/digits/fp32/local/engine/manifest.json").read_text())
    engine_a = json.loads((repo_a / "build/digits/fp32/local/engine/manifest.json").read_text())
    assert manifest == engine_a
    compare = run([sys.executable, "-m", "stages.compare"], repo_b)  # the pulled engine loads and passes the gate
    assert "gate passed" in compare.stdout

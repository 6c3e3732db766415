"""Reproducibility check: rerun the pipeline from scratch in a temporary clone and compare with what is committed.

Not a DVC stage: CI runs it (`.ci/run`)::

    python -m engineforge.reproduce            # clone HEAD, `dvc repro compare` with an empty cache, compare

The deterministic stages (export, simplify, precision) must reproduce the output hashes in the committed dvc.lock
exactly (the export stage drops the exporter's stack-trace metadata, which held the clone's and the venv's absolute
paths); the accuracy metrics in reports/accuracy.json must match within ``--atol``. Uncommitted changes are not
part of the check (it clones HEAD). Prints one line per finding; exits 1 on any difference.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

DETERMINISTIC = ("export", "simplify", "precision")
ACCURACY = "reports/accuracy.json"


def outs(lock: dict[str, Any], stage: str) -> dict[str, str]:
    """Output path -> md5 of ``stage`` in a parsed dvc.lock."""
    return {o["path"]: o["md5"] for o in lock["stages"].get(stage, {}).get("outs", [])}


def lock_differences(committed: dict[str, Any], fresh: dict[str, Any], stages: tuple[str, ...]) -> list[str]:
    """One line per output of ``stages`` whose hash differs (or is missing) between two dvc.lock files."""
    found = []
    for stage in stages:
        old, new = outs(committed, stage), outs(fresh, stage)
        if not old:
            found.append(f"{stage}: not in the committed dvc.lock (run `dvc repro` and commit dvc.lock)")
        for path in sorted(set(old) | set(new)):
            if old.get(path) != new.get(path):
                found.append(f"{stage}: {path} md5 {old.get(path)} committed, {new.get(path)} reproduced")
    return found


def metric_differences(committed: Any, fresh: Any, atol: float, prefix: str = "") -> list[str]:
    """One line per number that differs by more than ``atol`` (or value that differs) between two JSON trees."""
    if isinstance(committed, dict) and isinstance(fresh, dict):
        keys = sorted(set(committed) | set(fresh))
        return [d for k in keys for d in metric_differences(committed.get(k), fresh.get(k), atol, f"{prefix}{k}.")]
    name = prefix.rstrip(".")
    numbers = (int, float)
    if isinstance(committed, numbers) and isinstance(fresh, numbers) and not isinstance(committed, bool):
        return [] if abs(committed - fresh) <= atol else [f"{ACCURACY}: {name} {committed} committed, {fresh} now"]
    return [] if committed == fresh else [f"{ACCURACY}: {name} {committed!r} committed, {fresh!r} now"]


def main(argv: list[str] | None = None) -> int:
    """Clone, rerun up to compare with an empty DVC cache, report differences."""
    parser = argparse.ArgumentParser(prog="python -m engineforge.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--atol", type=float, default=1e-6, help="allowed difference of accuracy numbers")
    args = parser.parse_args(argv)
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    with tempfile.TemporaryDirectory(prefix="engineforge-reproduce-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", ".", str(clone)], check=True, stdin=subprocess.DEVNULL)
        committed = yaml.safe_load((clone / "dvc.lock").read_text(encoding="utf-8"))
        accuracy = json.loads((clone / ACCURACY).read_text(encoding="utf-8"))
        proc = subprocess.run(
            ["dvc", "repro", "compare"], cwd=clone, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if proc.returncode:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            print(f"engineforge reproduce: error: `dvc repro compare` failed in a clean clone: {tail}", file=sys.stderr)
            return 1
        fresh = yaml.safe_load((clone / "dvc.lock").read_text(encoding="utf-8"))
        found = lock_differences(committed, fresh, DETERMINISTIC)
        found += metric_differences(accuracy, json.loads((clone / ACCURACY).read_text(encoding="utf-8")), args.atol)
    for line in found:
        print(f"engineforge reproduce: {line}", file=sys.stderr)
    if found:
        return 1
    print(f"engineforge reproduce: {', '.join(DETERMINISTIC)} reproduce the committed hashes; {ACCURACY} matches")
    return 0


if __name__ == "__main__":
    sys.exit(main())

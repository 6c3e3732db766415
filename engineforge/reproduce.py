"""Reproducibility check: rerun the pipeline in a clean clone and compare with what is committed.

Not a DVC stage: CI runs the check (`.ci/run`); `make pipeline` writes the record it compares against::

    python -m engineforge.reproduce            # clone HEAD, `dvc repro compare@<default target>` with an empty cache
    python -m engineforge.reproduce --record   # after `dvc repro`: write reports/reproduce.json for dvc.lock

Artifacts must be identical wherever they are built: the ONNX files of export, simplify and precision are compared
by the md5 in dvc.lock. Reports hold measurements as well (the export check's error against PyTorch, the accuracy
figures): they are compared field by field, a measured figure (a field named in ``TOLERANCE``) within its
tolerance and every other field exactly, because float kernels sum in another order on another kind of CPU. The
stage reports are DVC-cached, so their committed contents live in ``reports/reproduce.json`` with the CPU they were
measured on (from the default target's env.json). Prints one line per finding; exits 1 on any difference.
"""

import argparse
import functools
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from stages.core.artifacts import read_json, to_json, write_text
from stages.core.device import cpu_fingerprint, cpu_kind, cpu_label
from stages.core.errors import PipelineError
from stages.runtime.manifest import differences

DETERMINISTIC = ("export", "simplify", "precision@{target}")  # {target}: the fleet's default target (fleet.default)
REPORTS = ("export_report", "simplify_report", "precision_report")  # paths.* of their measured reports
RECORD = "reports/reproduce.json"
# How far a measured figure may move between kinds of CPU, by field name; every other field must be equal.
# Measured on digits' export check (max |PyTorch-ORT| over 66 samples): 6.68e-06 on an AMD EPYC (AVX2), 5.25e-06 on
# a Xeon (AVX-512, AMX), 4.77e-06 on the EPYC with PyTorch forced to other kernels; max_rel 5.4e-05 to 1.4e-04 over
# the same runs. The OpenVINO engine's max_rel against the ONNX Runtime reference in accuracy.json: 2.5e-04 native,
# 8.3e-04 with oneDNN (which OpenVINO's CPU plugin uses too) forced to SSE4.1: the relative error of logits near 0.
# Tolerances: max_abs/mean_abs ~5x the widest spread seen, max_rel ~3x.
TOLERANCE = {"max_abs": 1e-5, "mean_abs": 1e-5, "max_rel": 2.5e-3, "p99_abs": 1e-5, "rel_l2": 1e-5, "ref_std": 1e-5}
# Fields the build's race decides by timing (docs/race.md): another machine, or noise between two candidates within
# a few percent of each other, may ship another backend (the engine's, or a batch range's: ``parts.<i>.backend``);
# its accuracy is still held to the tolerances above. Matched on a key's last segment.
RACED = ("backend",)
# Fields that name the engine a build made: its bytes follow the tuning and the race, timed on the machine.
BUILT = ("engine_sha256",)
MEASURED = "resources"  # a report's record of its run's wall time and peak memory: measured, never compared


def outs(lock: dict[str, Any], stage: str) -> dict[str, str]:
    """Output path -> md5 of ``stage`` in a parsed dvc.lock."""
    return {o["path"]: o["md5"] for o in lock["stages"].get(stage, {}).get("outs", [])}


def md5_of(content: Any) -> str:
    """The md5 DVC records for a report written by the stages (``to_json`` bytes)."""
    return hashlib.md5(to_json(content).encode("utf-8")).hexdigest()


def report_differences(path: str, committed: Any, fresh: Any) -> tuple[list[str], list[str]]:
    """Compare two reports field by field.

    Args:
        path: the report's path, named in every line.
        committed: the report as committed.
        fresh: the report as reproduced.

    Returns:
        The differences (one line each), and the measured figures that moved within their tolerance.
    """
    found: list[str] = []
    tolerated: list[str] = []
    for key, old, new in differences(committed, fresh):
        tol = TOLERANCE.get(key.rsplit(".", 1)[-1])
        measured = tol is not None and all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
        line = f"{path}: {key} {old!r} committed, {new!r} now"
        if key.split(".", 1)[0] == MEASURED:
            continue
        if key.rsplit(".", 1)[-1] in RACED:
            tolerated.append(f"{line} (the race's choice, decided by timing)")
        elif key.rsplit(".", 1)[-1] in BUILT:
            tolerated.append(f"{line} (the engine built here: tuning and the race, timed here, decide its bytes)")
        elif measured and abs(old - new) <= tol:
            tolerated.append(f"{line} (tolerance {tol:g})")
        else:
            found.append(line + (f" (tolerance {tol:g})" if measured else ""))
    return found, tolerated


def deterministic(target: str) -> list[str]:
    """The stages whose outputs must be identical wherever they are built, as dvc.lock names them."""
    return [stage.format(target=target) for stage in DETERMINISTIC]


def params_of(root: Path) -> tuple[str, dict[str, str]]:
    """``root``'s default fleet target and its ``paths`` (params.yaml's are the default target's)."""
    tree = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    return tree["fleet"]["default"], tree["paths"]


def lock_differences(
    committed: dict[str, Any], fresh: dict[str, Any], reports: dict[str, Any], read: Any, target: str
) -> tuple[list[str], list[str]]:
    """Compare the outputs of the deterministic stages of two dvc.lock files.

    Args:
        committed: the committed dvc.lock, parsed.
        fresh: the reproduced dvc.lock, parsed.
        reports: path -> committed content of each measured report (``RECORD``'s ``reports``).
        read: path -> reproduced content of a report.
        target: the fleet's default target.

    Returns:
        The differences, and the measured figures that moved within their tolerance.
    """
    found: list[str] = []
    tolerated: list[str] = []
    for stage in deterministic(target):
        old, new = outs(committed, stage), outs(fresh, stage)
        if not old:
            found.append(f"{stage}: not in the committed dvc.lock (run `make pipeline` and commit dvc.lock)")
        for path in sorted(set(old) | set(new)):
            if old.get(path) == new.get(path):
                continue
            if path not in reports:
                found.append(f"{stage}: {path} md5 {old.get(path)} committed, {new.get(path)} reproduced")
            elif md5_of(reports[path]) != old.get(path):
                found.append(f"{RECORD} does not hold dvc.lock's {path}: run `make pipeline` and commit both")
            else:
                more, within = report_differences(path, reports[path], read(path))
                found, tolerated = found + more, tolerated + within
    return found, tolerated


def cpu_of(env_file: Path) -> dict[str, Any]:
    """The CPU an env.json was written on (its first candidate's device; else this machine's), without the core
    count."""
    first = (read_json(env_file).get("candidates") or [{}])[0]
    cpu = first.get("fingerprint", {}).get("device", {}).get("cpu") or cpu_fingerprint()
    return {k: v for k, v in cpu.items() if k != "cores"}


def record(root: Path = Path()) -> dict[str, Any]:
    """The record of ``root``'s dvc.lock: each measured report as built (checked against the lock) and the CPU.

    Raises:
        PipelineError: a report is missing or differs from dvc.lock (the pipeline has not been run since).
    """
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    target, paths = params_of(root)
    locked = {p: m for stage in deterministic(target) for p, m in outs(lock, stage).items()}
    reports = {}
    for key in REPORTS:
        path = paths[key]
        content = read_json(root / path) if (root / path).is_file() else None
        if content is None or md5_of(content) != locked.get(path):
            raise PipelineError(f"{path} is not what dvc.lock records: run `dvc repro` first, then --record")
        reports[path] = content
    return {"cpu": cpu_of(root / paths["env"]), "reports": reports}


def check() -> int:
    """Clone HEAD, rerun up to compare with an empty DVC cache, print the differences; 1 if any."""
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    with tempfile.TemporaryDirectory(prefix="engineforge-reproduce-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", ".", str(clone)], check=True, stdin=subprocess.DEVNULL)
        committed = yaml.safe_load((clone / "dvc.lock").read_text(encoding="utf-8"))
        if not (clone / RECORD).is_file():
            raise PipelineError(f"{RECORD} is not committed: run `make pipeline` and commit it with dvc.lock")
        target, paths = params_of(clone)
        recorded, accuracy = read_json(clone / RECORD), read_json(clone / paths["accuracy"])
        proc = subprocess.run(
            ["dvc", "repro", f"compare@{target}"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            raise PipelineError(f"`dvc repro compare@{target}` failed in a clean clone: {tail}")
        fresh = yaml.safe_load((clone / "dvc.lock").read_text(encoding="utf-8"))
        read = functools.partial(lambda root, p: read_json(root / p), clone)
        found, tolerated = lock_differences(committed, fresh, recorded["reports"], read, target)
        more, within = report_differences(paths["accuracy"], accuracy, read(paths["accuracy"]))
        here = cpu_of(clone / paths["env"])
    then, kind = recorded["cpu"], "the same kind" if cpu_kind(recorded["cpu"]) == cpu_kind(here) else "another kind"
    say = "engineforge reproduce:"
    print(f"{say} dvc.lock was recorded on {cpu_label(then)}; this machine: {cpu_label(here)} ({kind} of CPU)")
    for line in tolerated + within:
        print(f"{say} compared with tolerance: {line}")
    for line in found + more:
        print(f"{say} {line}", file=sys.stderr)
    if found or more:
        return 1
    print(
        f"{say} {', '.join(deterministic(target))} reproduce the committed artifacts; their reports and accuracy match"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Check (default) or ``--record``."""
    parser = argparse.ArgumentParser(prog="python -m engineforge.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write {RECORD} for the current dvc.lock")
    args = parser.parse_args(argv)
    try:
        if args.record:
            made = record()
            write_text(RECORD, to_json(made))
            print(f"engineforge reproduce: {RECORD} holds dvc.lock's reports, measured on {cpu_label(made['cpu'])}")
            return 0
        return check()
    except PipelineError as e:
        print(f"engineforge reproduce: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

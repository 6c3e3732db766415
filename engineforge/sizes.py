"""Deployment sizes: each ``examples/sizes.py`` model through `dvc exp run` in a fresh clone, as a user runs it,
with each stage's wall time and peak memory read from its line -> a markdown table for docs/performance.md.

    python -m engineforge.sizes resnet50:int8 bert_base:int8 wide_mlp:fp32   # model:precision, one run each
    python -m engineforge.sizes digits:fp32 resnet18:int8                   # conf/model/ options too

Commit first: the clone is of HEAD. Runs one after another (two at once on 2 cores measure nothing); a run that
stops at a stage is a row with that stage's line.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engineforge.coverage import overrides
from stages.core.device import cpu_fingerprint, cpu_label

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^engineforge (\w+): (.*?)(?: \[([\d.]+)s, peak ([\d.]+) GB\])?$", re.MULTILINE)


def measure(name: str, precision: str, keys: dict[str, Any], extra: list[str], keep: Path | None) -> dict[str, Any]:
    """One `dvc exp run` of ``name`` at ``precision`` in a clone of HEAD; each stage's seconds and peak GB.

    Args:
        name: the ``examples.sizes`` model.
        precision: the precision option.
        keys: its ``model=custom`` keys (empty: ``name`` is a model option of conf/model/, digits or resnet18).
        extra: more `-S` overrides.
        keep: a folder to copy the run's reports/ into (as ``<name>-<precision>/``), or None.

    Returns:
        dict: ``stages`` (stage -> seconds, peak GB, line), ``wall`` seconds, ``ok``, the last line.
    """
    sets = [*overrides(name, "custom" if keys else name, keys), f"precision={precision}", *extra]
    env = os.environ | {"DVC_NO_ANALYTICS": "1", "PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory(prefix=f"engineforge-{name}-") as tmp:
        subprocess.run(["git", "clone", "-q", str(ROOT), tmp], check=True)
        start = time.perf_counter()
        args = ["dvc", "exp", "run", *(a for s in sets for a in ("-S", s))]
        proc = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        if keep:  # the run's reports (accuracy.json: each output's error statistics), for a closer look
            shutil.copytree(Path(tmp) / "reports", keep / f"{name}-{precision}", dirs_exist_ok=True)
    found = LINE.findall(proc.stdout + proc.stderr)
    stages = {s: {"seconds": float(t), "peak_gb": float(p), "line": m} for s, m, t, p in found if t}
    return {
        "stages": stages,
        "wall": wall,
        "ok": proc.returncode == 0,
        "last": found[-1][1] if found else proc.stderr[-300:],
    }


def row(model: str, precision: str, result: dict[str, Any]) -> str:
    """One markdown row: model, precision, outcome, wall, peak, then each stage's seconds / GB.

    Args:
        model: the model's name.
        precision: its precision.
        result: ``measure``'s result.

    Returns:
        str: the row.
    """
    stages = result["stages"]
    peak = max((s["peak_gb"] for s in stages.values()), default=0.0)
    each = ", ".join(f"{n} {s['seconds']:.0f} s / {s['peak_gb']:.1f} GB" for n, s in stages.items() if n != "env")
    outcome = "✔" if result["ok"] else f"✘ {result['last'][:160]}"
    return f"| {model} | {precision} | {outcome} | {result['wall']:.0f} s | {peak:.1f} GB | {each} |"


def main(argv: list[str] | None = None) -> int:
    """Measure each ``model:precision`` and print the table."""
    from examples.sizes import models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="model:precision (examples/sizes.py's models, or conf/model/'s)")
    parser.add_argument("-S", "--set", action="append", default=[], help="a config override for every run")
    parser.add_argument("--keep", type=Path, help="copy each run's reports/ into KEEP/<model>-<precision>/")
    args = parser.parse_args(argv)
    known = models()
    print(f"{cpu_label(cpu_fingerprint())}, {os.cpu_count()} cores")
    print("| model | precision | result | wall | peak RSS | stage: seconds / peak GB |\n|---|---|---|---|---|---|")
    options = {p.stem for p in (ROOT / "conf/model").glob("*.yaml")}
    unknown = [r for r in args.runs if r.partition(":")[0] not in {*known, *options}]
    if unknown:
        parser.error(f"unknown model in {unknown[0]!r}: one of {', '.join(sorted({*known, *options}))}")
    for run in args.runs:
        name, _, precision = run.partition(":")
        keys = {k: v for k, v in known.get(name, {}).items() if k != "name"}  # {}: a conf/model/ option
        print(row(name, precision or "fp32", measure(name, precision or "fp32", keys, args.set, args.keep)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fleet's CI flow, as commands (docs/fleet.md): what each runner job and the collect job run.

    python -m engineforge.fleet workflow [--check]   # .github/workflows/fleet.yml from params.yaml's fleet
    python -m engineforge.fleet repro --shared       # the stages every target shares (export, simplify, reference)
    python -m engineforge.fleet repro <target>       # with the target's env: `dvc repro` of its stages only
    python -m engineforge.fleet pack <target> <dir>  # what the runner hands the collect job: dvc.lock, its reports
    python -m engineforge.fleet collect <dir>...     # merge the packs into dvc.lock and reports/targets/

A runner never commits: it pushes the DVC cache and run-cache, and hands over its lock entries and reports (its env
record is an always-changed stage's output, which DVC never puts in the run-cache). The collect job merges them,
`dvc pull`s, and `dvc repro` then builds nothing: each env@<target> keeps its runner's record.
"""

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from engineforge.workflow import render_workflow
from stages.core.artifacts import write_text
from stages.core.dvcfile import DVC_FILE, PARAMS_FILE
from stages.core.errors import PipelineError
from stages.core.fleet import SEPARATOR, default_target, per_target, retarget, split_stage

LOCK = "dvc.lock"
WORKFLOW = Path(".github/workflows/fleet.yml")
COLLECT_ONLY = ("fleet",)  # stages over every target: the collect job's


def params_tree(params: str = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml, its fleet's target names checked (``fleet.default_target``).

    Args:
        params: the file.

    Returns:
        dict: its content.
    """
    tree = yaml.safe_load(Path(params).read_text(encoding="utf-8")) or {}
    default_target(tree)
    return tree


def targets(params: str = PARAMS_FILE) -> dict[str, Mapping[str, Any]]:
    """``fleet.targets`` of params.yaml.

    Args:
        params: the file.

    Returns:
        dict: name -> runner, env, match.
    """
    return dict(params_tree(params)["fleet"]["targets"])


def reports_of(target: str, params: str = PARAMS_FILE) -> Path:
    """``target``'s reports folder (``paths.target_reports`` retargeted)."""
    return Path(retarget(params_tree(params), target)["paths"]["target_reports"])


def shared_stages(dvc_file: str = DVC_FILE) -> list[str]:
    """The stages dvc.yaml runs once for every target, neither per target nor the collect job's.

    Args:
        dvc_file: the pipeline file.

    Returns:
        list[str]: their names, in dvc.yaml's order.
    """
    stages = yaml.safe_load(Path(dvc_file).read_text(encoding="utf-8"))["stages"]
    return [name for name, body in stages.items() if not per_target(body) and name not in COLLECT_ONLY]


def repro(target: str | None) -> list[str]:
    """The `dvc repro` a runner job runs: the shared stages, or every stage of ``target`` (and what it needs).

    Args:
        target: a fleet target, or None for the shared stages.

    Returns:
        list[str]: the command.
    """
    if target is None:
        return ["dvc", "repro", "--pull", *shared_stages()]
    if target not in targets():
        raise PipelineError(f"no fleet target {target!r}: fleet.targets has {', '.join(targets())}")
    return ["dvc", "repro", "--pull", "--glob", f"*{SEPARATOR}{target}"]


def pack(target: str, out: Path) -> None:
    """Copy what the collect job needs of ``target``'s run into ``out``: dvc.lock, its reports folder and its name.

    Args:
        target: the fleet target this runner built.
        out: the pack's folder (made).
    """
    folder = reports_of(target)
    if not folder.is_dir() or not Path(LOCK).is_file():
        raise PipelineError(f"nothing to pack for {target}: run `python -m engineforge.fleet repro {target}` first")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(LOCK, out / LOCK)
    shutil.copytree(folder, out / "reports", dirs_exist_ok=True)
    (out / "target").write_text(target + "\n", encoding="utf-8")


def merge(lock: Mapping[str, Any], packs: list[tuple[str, Mapping[str, Any]]], names: list[str]) -> dict[str, Any]:
    """``lock`` with each pack's own target's stages and the shared stages (which every pack must agree on), and
    no stage of a target the fleet no longer has.

    Args:
        lock: the collect job's dvc.lock.
        packs: (target, that runner's dvc.lock) pairs.
        names: the fleet's targets.

    Returns:
        dict: the merged lock.
    """
    stages = {k: v for k, v in (lock.get("stages") or {}).items() if split_stage(k)[1] in (None, *names)}
    shared: dict[str, tuple[str, Any]] = {}
    for target, theirs in packs:
        for name, entry in (theirs.get("stages") or {}).items():
            owner = split_stage(name)[1]
            if owner == target:
                stages[name] = entry
            elif owner is None and name not in COLLECT_ONLY:
                if name in shared and shared[name][1] != entry:
                    raise PipelineError(
                        f"runners of {shared[name][0]} and {target} disagree on stage {name!r}: run the shared "
                        "stages once (`python -m engineforge.fleet repro --shared`) before the targets'"
                    )
                shared[name] = (target, entry)
                stages[name] = entry
    return {**lock, "schema": lock.get("schema", "2.0"), "stages": stages}


def collect(folders: list[Path]) -> list[str]:
    """Merge packs into dvc.lock and each target's reports folder.

    Args:
        folders: the packs (``pack``), one per target.

    Returns:
        list[str]: the targets collected.
    """
    names, packs = list(targets()), list[tuple[str, Any]]()
    for folder in folders:
        target = (folder / "target").read_text(encoding="utf-8").strip() if (folder / "target").is_file() else ""
        if target not in names or not (folder / LOCK).is_file():
            raise PipelineError(f"{folder} is not a pack of a fleet target ({', '.join(names)}): make it with `pack`")
        if target in (t for t, _ in packs):
            raise PipelineError(f"two packs of target {target}: give one per target")
        packs.append((target, yaml.safe_load((folder / LOCK).read_text(encoding="utf-8"))))
        shutil.copytree(folder / "reports", reports_of(target), dirs_exist_ok=True)
    here = yaml.safe_load(Path(LOCK).read_text(encoding="utf-8")) if Path(LOCK).is_file() else {}
    write_text(LOCK, yaml.safe_dump(merge(here or {}, packs, names), sort_keys=False))
    return [name for name, _ in packs]


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m engineforge.fleet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("workflow").add_argument("--check", action="store_true", help="exit 1 if the file differs")
    run = sub.add_parser("repro")
    run.add_argument("target", nargs="?")
    run.add_argument("--shared", action="store_true")
    packing = sub.add_parser("pack")
    packing.add_argument("target")
    packing.add_argument("out", type=Path)
    sub.add_parser("collect").add_argument("packs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        if args.command == "workflow":
            text = render_workflow(targets())
            if args.check:
                same = WORKFLOW.is_file() and WORKFLOW.read_text(encoding="utf-8") == text
                print(f"{WORKFLOW}: {'matches' if same else 'differs from'} params.yaml's fleet")
                return 0 if same else 1
            write_text(WORKFLOW, text)
            print(f"{WORKFLOW}: {len(targets())} targets")
        elif args.command == "repro":
            if (args.target is None) != args.shared:
                raise PipelineError("repro: name a target, or give --shared")
            env = (targets()[args.target].get("env") or {}) if args.target else {}
            command = repro(args.target)
            print("engineforge fleet:", *(f"{k}={v}" for k, v in env.items()), *command, flush=True)
            return subprocess.run(command, env=os.environ | {k: str(v) for k, v in env.items()}, check=False).returncode
        elif args.command == "pack":
            pack(args.target, args.out)
        else:
            print(f"collected {', '.join(collect(args.packs))} into {LOCK} and their reports")
    except PipelineError as e:
        print(f"engineforge fleet: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

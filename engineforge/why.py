"""Why: what the next `dvc repro` will do to each stage — skip, restore from the run-cache, or run — and why.

Not a DVC stage: a command (run it after editing params.yaml, or after pulling, before `dvc repro`)::

    python -m engineforge.why

Built on DVC's own view, not a second hashing scheme: `dvc status` (through DVC's API) says which dependencies and
params changed; dvc.lock and params.yaml give each changed param's old and new value; DVC's run-cache says whether
a changed stage's new inputs were built before. A target's env stage always runs, so the machine's fingerprint is
computed now and compared with the target's env.json: a field that differs (old -> new) reaches every stage after it.
A stage after one that will run is "pending": it runs, or is restored if the inputs it then has were built before;
that is only known once the stage before it has produced them. A last line names the engine built last and the
race that chose it (its manifest's record).
"""

import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from stages.core.artifacts import read_json
from stages.core.errors import PipelineError
from stages.core.fleet import default_target, mismatch, retarget, split_stage
from stages.core.run import plain
from stages.runtime import records
from stages.runtime.manifest import differences, first_difference

PARAMS, LOCK, DVC = "params.yaml", "dvc.lock", "dvc.yaml"


def param_changes(stage: str, keys: dict[str, Any], lock: dict[str, Any], params: Any, most: int = 3) -> list[str]:
    """'key: old -> new' for the changed params of ``stage`` (leaves of a changed group; ``most`` per key)."""
    recorded = lock.get("stages", {}).get(stage, {}).get("params", {}).get(PARAMS, {})
    lines = []
    for key in keys:
        new = plain({"v": OmegaConf.select(params, key)})["v"]
        found = [f"{k}: {old!r} -> {now!r}" for k, old, now in differences(recorded.get(key), new, f"{key}.")]
        more = [f"and {len(found) - most} more under {key}"] if len(found) > most else []
        lines += found[:most] + more if found else [f"{key}: changed"]
    return lines


def kept(declaration: Any) -> str | None:
    """Why a target's env stage keeps the record in place instead of recording this machine (the collect job, or
    a machine its ``match`` or ``env`` does not fit), None where it records.

    Args:
        declaration: the target's entry in ``fleet.targets``.

    Returns:
        str | None: the reason, or None.
    """
    if os.environ.get("ENGINEFORGE_COLLECT") == "1":
        return "ENGINEFORGE_COLLECT=1"
    match = declaration.get("match") or {}
    problem = mismatch(match, records.host_facts() if match else {}, declaration.get("env"))
    return f"this machine is not one: {problem}" if problem else None


def env_changes(cfg: Any) -> dict[str, str]:
    """Output path of the env stage -> how it will differ from the file on disk on this machine now."""
    changes = {}
    for path, content in records.env_records(cfg)[0].items():
        try:
            diff = first_difference(read_json(path), content)
        except PipelineError:
            changes[path] = "does not exist yet"
            continue
        if diff:
            changes[path] = f"{diff[0]}: {diff[1]!r} -> {diff[2]!r}"
    return changes


def restorable(repo: Any, name: str) -> bool:
    """Whether DVC's run-cache holds an entry for ``name`` with its current inputs (nothing is checked out)."""
    from dvc.stage.cache import RunCacheNotFoundError

    stage = repo.stage.collect(name)[0]
    try:
        stage.save_deps()
        repo.stage_cache.restore(stage, dry=True)
    except (RunCacheNotFoundError, FileNotFoundError):
        return False
    return True


def explain() -> list[tuple[str, str, str]]:
    """(stage, verdict, reason) for every stage DVC resolves from dvc.yaml (``build@<target>`` once per fleet
    target), in pipeline order."""
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.ERROR)  # a dry restore logs "Stage ... is cached"
    params = OmegaConf.load(PARAMS)
    tree = plain(params)
    lock = yaml.safe_load(Path(LOCK).read_text(encoding="utf-8")) if Path(LOCK).is_file() else {}
    repo = Repo(".")
    status = repo.status()
    produced: dict[str, str] = {}  # output path -> the stage that will (re)produce it
    rows = []
    for stage in repo.index.stages:
        name = stage.addressing
        reasons = []
        for change in status.get(name, []):
            if isinstance(change, dict):
                for path, what in change.get("changed deps", {}).items():
                    keys = what if isinstance(what, dict) else {}
                    reasons += param_changes(name, keys, lock, params) if path == PARAMS else [f"{path} {what}"]
                reasons += [f"output {p} {w}" for p, w in change.get("changed outs", {}).items()]
                reasons += ["its command changed"] if change.get("changed command") else []
        outs = [str(o.def_path) for o in stage.outs]
        upstream = {produced[str(d.def_path)] for d in stage.deps if str(d.def_path) in produced}
        persist = any(o.persist for o in stage.outs)
        if stage.always_changed:  # a target's env stage: its output is computed here and now, or kept
            verdict, target = "run", split_stage(name)[1] or default_target(tree)
            elsewhere = kept(tree["fleet"]["targets"][target])
            changes = {} if elsewhere else env_changes(retarget(tree, target))
            reasons = [f"always runs; {p} will change: {c}" for p, c in changes.items()] or [
                f"always runs; keeps its runner's record ({elsewhere})" if elsewhere else "always runs; same output"
            ]
            produced.update(dict.fromkeys(changes, name))
        elif upstream or reasons:
            if upstream:
                verdict = "pending"
                reasons.append(f"after {', '.join(sorted(upstream))}")
            else:
                verdict = "run" if persist or not restorable(repo, name) else "restore"
                reasons.append("built before: the run-cache has these inputs" if verdict == "restore" else "")
            reasons.append("never restored (persist)" if persist else "")
            produced.update(dict.fromkeys(outs, name))
        else:
            verdict = "skip"
            reasons.append("nothing it depends on changed")
        rows.append((name, verdict, "; ".join(r for r in reasons if r)))
    return rows


def race_line(engine: str) -> str | None:
    """One line on the engine now in ``engine``: what shipped and, where build raced candidates, each one's result
    (from its manifest: a restored engine brings its race back with it, nothing is replayed)."""
    path = Path(engine) / "manifest.json"
    if not path.is_file():
        return None
    manifest = read_json(path)
    shipped = f"{manifest['backend']} {manifest['precision']}"
    if manifest.get("dispatch"):  # one engine per batch range
        shipped = ", ".join(
            f"batch {p['serves'][0]}-{p['serves'][1]} {p['backend']} {p['precision']}" for p in manifest["dispatch"]
        )
    if not manifest.get("race"):
        return f"engine   {shipped} (one candidate: nothing raced)"
    ranges = len({tuple(e.get("serves", ())) for e in manifest["race"]}) > 1

    def said(entry: dict) -> str:
        where = f"@{entry['serves'][0]}-{entry['serves'][1]}" if ranges else ""
        return f"{entry['candidate']}{where} {entry['result']}"

    return f"engine   {shipped}, the race: " + "; ".join(said(e) for e in manifest["race"])


def main() -> int:
    """Print one line per stage, then one on the engine built last and its race."""
    try:
        rows = explain()
    except PipelineError as e:
        print(f"engineforge why: error: {e}", file=sys.stderr)
        return 1
    width = max(len(name) for name, _, _ in rows)
    for name, verdict, reason in rows:
        print(f"{name:<{width}}  {verdict:<7}  {reason}")
    line = race_line(str(OmegaConf.select(OmegaConf.load(PARAMS), "paths.engine")))
    if line:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

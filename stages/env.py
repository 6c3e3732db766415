"""env stage, once per fleet target: this machine -> the target's env.json (the candidate backends, why, and for
each its fingerprint, capabilities and own settings), runtimes.json and host.json (the CPU), made by
``records.env_records``.

Runs on every ``dvc repro`` (``always_changed``); stages after it depend on the files' content, so they rerun only
when a candidate, its version, the device or a candidate's own settings really changed. On a machine of the
target's kind (its ``match`` and ``env``) it records this machine. On another machine, and on any machine under
``ENGINEFORGE_COLLECT=1`` (the collect job), it keeps the record the target's own runner made (pulled from the DVC
remote, ``persist``) where that record is the target's and this configuration's, so nothing after it reruns; else
it stops in one line. The files have deterministic bytes. Kept light, since every `dvc repro` runs it: no torch,
and its parameters come as a plain dict (no OmegaConf).
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json, sweep_temporaries, to_json, write_text
from stages.core.errors import PipelineError
from stages.core.fleet import check_machine, machine_facts, mismatch
from stages.core.run import run_stage
from stages.runtime import records

COLLECT = "ENGINEFORGE_COLLECT"  # =1: keep every target's record in place, record none (the collect job)


def main(cfg: Mapping[str, Any]) -> str:
    """Write the target's records to ``paths.env``, ``paths.runtimes`` and ``paths.host`` where this machine is one
    of its kind, else keep the target's own; make sure its TensorRT timing-cache folder ``paths.timing_cache``
    exists; sweep temporaries killed runs left in ``paths.build``."""
    (name, declaration), paths = next(iter(cfg["fleet"]["targets"].items())), cfg["paths"]
    sweep_temporaries(paths["build"])  # half-written files of runs killed mid-write: never loaded, now gone
    Path(paths["timing_cache"]).mkdir(parents=True, exist_ok=True)  # persist: the target's builds add to it
    match, collecting = declaration.get("match") or {}, os.environ.get(COLLECT) == "1"
    problem = None if collecting else mismatch(match, records.host_facts() if match else {}, declaration.get("env"))
    if collecting or problem:
        unusable = record_problem(cfg, match)
        if unusable is None:
            return f"kept target {name}'s record from its own runner ({paths['env']})"
        if problem:
            check_machine(name, declaration, records.host_facts)  # raises: the first field this machine lacks
        raise PipelineError(f"target {name}: {unusable}: run env@{name} on its CI runner first, then `dvc push`")
    files, chosen = records.env_records(cfg)
    for path, content in files.items():
        write_text(path, to_json(content))
    return f"{chosen} -> {paths['env']}"


def record_problem(cfg: Mapping[str, Any], match: Mapping[str, Any]) -> str | None:
    """Why the target's records in place cannot be kept, None where they can: they exist (env.json, runtimes.json,
    host.json), were made on a machine its ``match`` fits, and for this configuration's backend and precision.

    Args:
        cfg: the env stage's params.
        match: the target's ``match``.

    Returns:
        str | None: the reason, or None.
    """
    paths = cfg["paths"]
    if not all(Path(paths[key]).is_file() for key in ("env", "host", "runtimes")):
        return f"no record of it in {Path(paths['env']).parent}"
    host, runtimes = read_json(paths["host"]), read_json(paths["runtimes"])
    made = host.get("made_for") or {}
    if (made.get("backend"), made.get("precision")) != (cfg["backend"]["name"], cfg["precision"]["name"]):
        return f"its record was made for backend {made.get('backend')}, precision {made.get('precision')}"
    problem = mismatch(match, machine_facts(host.get("cpu") or {}, runtimes))
    return f"its record in {paths['env']} is another machine's ({problem})" if problem else None


if __name__ == "__main__":
    run_stage("env", main)

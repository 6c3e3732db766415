"""env stage, once per fleet target: this machine -> the target's env.json (the candidate backends, why, and for
each its fingerprint, capabilities and own settings; the host CPU) and runtimes.json, made by
``records.env_records``.

Runs on every ``dvc repro`` (``always_changed``); stages after it depend on the files' content, so they rerun only
when a candidate, its version, the device or a candidate's own settings really changed. On a machine of the
target's kind (its ``match``) it records this machine. On another machine (a collect job, a teammate's laptop) it
keeps the record the target's own runner made (pulled from the DVC remote, ``persist``), so nothing after it
reruns; with no such record it stops in one line naming the difference. The files have deterministic bytes. Kept
light, since every `dvc repro` runs it: no torch, and its parameters come as a plain dict (no OmegaConf).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json, sweep_temporaries, to_json, write_text
from stages.core.errors import PipelineError
from stages.core.fleet import check_machine, machine_facts, mismatch
from stages.core.run import run_stage
from stages.runtime import records


def main(cfg: Mapping[str, Any]) -> str:
    """Write the target's records to ``paths.env`` and ``paths.runtimes`` where this machine is one of its kind,
    else keep the target's own; make sure its TensorRT timing-cache folder ``paths.timing_cache`` exists; sweep
    temporaries killed runs left in ``paths.build``."""
    (name, declaration), paths = next(iter(cfg["fleet"]["targets"].items())), cfg["paths"]
    sweep_temporaries(paths["build"])  # half-written files of runs killed mid-write: never loaded, now gone
    Path(paths["timing_cache"]).mkdir(parents=True, exist_ok=True)  # persist: the target's builds add to it
    here = records.host_facts()
    if mismatch(declaration.get("match") or {}, here):
        kept = recorded_facts(paths)
        if kept is None or mismatch(declaration.get("match") or {}, kept):
            check_machine(name, declaration, here)  # raises: the first field this machine lacks
        return f"kept target {name}'s record from its own runner ({paths['env']})"
    files, chosen = records.env_records(cfg)
    for path, content in files.items():
        write_text(path, to_json(content))
    return f"{chosen} -> {paths['env']}"


def recorded_facts(paths: Mapping[str, str]) -> dict[str, Any] | None:
    """The facts of the machine that wrote the target's records in place, None where there are none."""
    try:
        return machine_facts(read_json(paths["env"])["host"], read_json(paths["runtimes"]))
    except (OSError, KeyError, TypeError, ValueError, PipelineError):
        return None


if __name__ == "__main__":
    run_stage("env", main)

"""The resolved backend record, computed once by the env stage and read by every stage after it.

``paths.env`` (env.json) holds the candidates: for each, its fingerprint, capabilities, own settings, tuning budget
and the digest of its package's code, so precision and build rerun when, and only when, the code or settings of a
backend they build change (a TensorRT edit rebuilds nothing where TensorRT does not run). ``paths.runtimes`` holds
every backend that runs here (its fingerprint, code digest, baseline and colour): what the reference run, the
benchmark's baselines, compare's profile edges and the report read of a runtime that is not the engine's.
"""

import hashlib
from collections.abc import Mapping
from typing import Any

from stages.core.device import cpu_fingerprint
from stages.core.errors import PipelineError
from stages.core.fleet import machine_facts
from stages.runtime import registry
from stages.runtime.base import Backend
from stages.runtime.manifest import first_difference


def code_digest(name: str) -> str:
    """sha256 of the backend package ``stages/backends/<name>/``: each Python file's relative path and bytes, in
    order (an editor's swap or backup file, or Python's caches, change nothing).

    Args:
        name: a backend's name.

    Returns:
        str: the hex digest.
    """
    folder = registry.PACKAGES / name
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts and not p.name.startswith(".")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def runtime_records() -> dict[str, dict[str, Any]]:
    """Backend name -> what a stage reads of a runtime that runs here: fingerprint, code digest, baseline, colour.

    Returns:
        dict: in registry order, the backends whose ``availability`` is ok.
    """
    found = {}
    for backend in registry.importable():
        name = backend.name
        if backend.availability().ok:
            found[name] = {
                "baseline": backend.baseline,
                "code": code_digest(name),
                "colour": backend.colour,
                "fingerprint": registry.fingerprint(name),
            }
    return found


def read_candidates(env: Mapping[str, Any], env_path: str) -> dict[str, Mapping[str, Any]]:
    """Backend name -> its env.json record, each checked against this machine once: refused in one line where
    env.json predates the candidates, or a backend's fingerprint or code changed since (a stage run by hand).

    Args:
        env: env.json's content.
        env_path: its path, for the message.

    Returns:
        dict: backend name -> record, in the env stage's order.
    """
    if "candidates" not in env or any("code" not in record for record in env["candidates"]):
        raise PipelineError(f"{env_path} is stale (it has no candidates): run `dvc repro`, which reruns env")
    found = {}
    for record in env["candidates"]:
        diff = first_difference(record["fingerprint"], registry.fingerprint(record["backend"]))
        changed = diff[0] if diff else None
        if changed is None and record["code"] != code_digest(record["backend"]):
            changed = f"the code of stages/backends/{record['backend']}"
        if changed:
            raise PipelineError(f"{env_path} is stale ({changed} changed): run `dvc repro`, which reruns env")
        found[record["backend"]] = record
    return found


def engine_settings(backend: Backend, group: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the ``backend`` config group an engine of ``backend`` depends on, and nothing else: its own
    section (``backend.<name>``) and, where it tunes at build, the tuning budget. The env stage writes it into the
    backend's entry of env.json, which is what precision and build read of a backend's settings: a key of a backend
    that is not a candidate reruns nothing after env.

    Args:
        backend: a candidate backend.
        group: the ``backend`` config group as plain data.

    Returns:
        dict: ``settings`` (its own section) and ``tuning`` (``tune``, ``tune_s``; None where it does not tune).
    """
    tuning = None
    if backend.capabilities.tunes:
        tune_s = group["tune_s"]
        if isinstance(tune_s, bool) or not isinstance(tune_s, int | float) or tune_s <= 0:
            raise PipelineError(f"backend.tune_s: {tune_s!r} must be a positive number of seconds")
        tuning = {"tune": bool(group["tune"]), "tune_s": float(tune_s)}
    return {"settings": dict(group.get(backend.name) or {}), "tuning": tuning}


def env_records(cfg: Mapping[str, Any]) -> tuple[dict[str, dict], str]:
    """Path -> content of the file the env stage writes (``paths.env``: the candidate backends, why, and for each
    its fingerprint, capabilities and own settings), and the line saying what was chosen.
    The env stage writes it; ``engineforge.why`` predicts it without importing a stage.

    Args:
        cfg: the env stage's params as plain data (``backend``, ``precision.name``, ``paths``).

    Returns:
        tuple: path -> content (``paths.env``, ``paths.runtimes`` and ``paths.host``: the CPU and the backend and
        precision the records were made for, which only the env stage reads back, so neither a TensorRT engine's key
        holds the CPU nor a precision's the other's), and the one-line choice.
    """
    requested, paths = cfg["backend"]["name"], cfg["paths"]
    chosen, reason = registry.candidates(requested, cfg["precision"]["name"])
    env = {
        "candidates": [candidate_record(backend, cfg["backend"]) for backend in chosen],
        "reason": reason,
        "requested": requested,
    }
    host = {"cpu": cpu_fingerprint(), "made_for": {"backend": requested, "precision": cfg["precision"]["name"]}}
    files = {paths["env"]: env, paths["runtimes"]: runtime_records(), paths["host"]: host}
    return files, f"backend {', '.join(b.name for b in chosen)} ({reason})"


def candidate_record(backend: Backend, group: Mapping[str, Any]) -> dict[str, Any]:
    """One candidate of env.json: the backend's name, fingerprint, capabilities, own settings and tuning budget.

    Args:
        backend: a backend that runs here.
        group: the ``backend`` config group as plain data.

    Returns:
        dict: what build and precision read of that backend.
    """
    own = engine_settings(backend, group)
    return {
        "backend": backend.name,
        "capabilities": backend.capabilities_for(own["settings"]).record(),
        "code": code_digest(backend.name),
        "fingerprint": registry.fingerprint(backend.name),
    } | own


def host_facts() -> dict[str, Any]:
    """This machine as a fleet target's ``match`` reads it: what ``run_stage`` checks before a target's stage runs
    an engine here.

    Returns:
        dict: ``fleet.machine_facts`` of this CPU and every runtime that runs here.
    """
    return machine_facts(cpu_fingerprint(), runtime_records())

"""Backend names -> implementations, and the ``auto`` choice. Modules are imported only when asked for."""

import importlib
from collections.abc import Mapping
from typing import Any

from stages.backends.base import Availability, Backend
from stages.core import precisions
from stages.core.errors import PipelineError

# name -> "module:Class"; auto races every one that runs here, in this order (the order precision.json and the
# race's record list them in).
BACKENDS = {
    "tensorrt": "stages.backends.tensorrt:TensorRTBackend",
    "openvino": "stages.backends.openvino:OpenVinoBackend",
    "onnxruntime": "stages.backends.onnxruntime:OnnxRuntimeBackend",
}
AUTO = "auto"
REFERENCE = "onnxruntime"  # the accuracy reference: ONNX Runtime's default CPU session on the fp32 graph


def get(name: str) -> Backend:
    """The backend called ``name``."""
    if name not in BACKENDS:
        raise PipelineError(f"backend.name: unknown backend {name!r}; choose from {', '.join([AUTO, *BACKENDS])}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def usable(backend: Backend, precision: str) -> Availability:
    """Whether ``backend`` runs here and runs ``precision`` accurately here."""
    available = backend.availability()
    if not available.ok:
        return available
    supported = backend.supports(precision)
    return available if supported.ok else supported


def candidates(requested: str, precision: str = "fp32") -> tuple[list[Backend], str]:
    """The backends a build races for ``backend.name=requested`` at ``precision.name=precision``, and one line
    saying why: the one asked for, or (``auto``) every backend that runs one of the precisions here.

    Args:
        requested: ``backend.name``.
        precision: ``precision.name`` (``auto``: any precision counts).

    Returns:
        tuple: the backends in registry order, and the reason.
    """
    wanted = precisions.names(precision)
    if requested != AUTO:
        backend = get(requested)
        found = [usable(backend, p) for p in wanted]
        if not any(a.ok for a in found):
            raise PipelineError(f"backend.name={requested}: {found[0].reason}")
        return [backend], f"requested by backend.name={requested}"
    chosen: list[Backend] = []
    notes: list[str] = []
    for name in BACKENDS:
        backend = get(name)
        found = [usable(backend, p) for p in wanted]
        if any(a.ok for a in found):
            chosen.append(backend)
        else:
            notes.append(f"{name} unavailable: {found[0].reason}")
    if not chosen:
        raise PipelineError(f"backend.name=auto: no backend can run precision={precision} here ({'; '.join(notes)})")
    race = "auto races " + ", ".join(b.name for b in chosen) if len(chosen) > 1 else f"auto: only {chosen[0].name}"
    return chosen, "; ".join([*notes, race + " (build keeps the fastest that passes its gate)"])


def resolve(requested: str, precision: str = "fp32") -> Backend:
    """The first of the ``candidates``: the backend built alone when nothing is raced (tests, gpu_check)."""
    return candidates(requested, precision)[0][0]


def baseline(name: str) -> Backend:
    """The backend whose untuned default runs as the benchmark baseline called ``name``, if it runs here."""
    from stages.core.metrics import EAGER  # imported here: the env stage stays free of OmegaConf

    known = {b.baseline: b for b in map(get, BACKENDS) if b.baseline}
    if name not in known:
        raise PipelineError(f"benchmark.baselines: unknown {name!r}; choose from {', '.join([EAGER, *known])}")
    available = known[name].availability()
    if not available.ok:
        raise PipelineError(f"benchmark.baselines: {name} cannot run here ({available.reason}); remove it")
    return known[name]


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


def runtimes() -> list[str]:
    """Every runtime a benchmark can report, in order: the engine, eager PyTorch, then each backend's baseline
    (the columns of ``reports/latency/*.csv`` that dvc.yaml's plots draw)."""
    from stages.core.metrics import EAGER, ENGINE

    return [ENGINE, EAGER, *(b.baseline for b in map(get, BACKENDS) if b.baseline)]


def palette() -> dict[str, str]:
    """Runtime name -> the colour the report draws it in: the engine green, eager PyTorch grey, each baseline in
    its backend's colour."""
    from stages.core.metrics import EAGER, ENGINE

    return {ENGINE: "#2a7", EAGER: "#888"} | {b.baseline: b.colour for b in map(get, BACKENDS) if b.baseline}


def env_records(cfg: Mapping[str, Any]) -> tuple[dict[str, dict], str]:
    """Path -> content of the file the env stage writes (``paths.env``: the candidate backends, why, and for each
    its fingerprint, capabilities and own settings), and the line saying what was chosen.
    The env stage writes it; ``engineforge.why`` predicts it without importing a stage.

    Args:
        cfg: the env stage's params as plain data (``backend``, ``precision.name``, ``paths``).

    Returns:
        tuple: path -> content, and the one-line choice.
    """
    requested, paths = cfg["backend"]["name"], cfg["paths"]
    chosen, reason = candidates(requested, cfg["precision"]["name"])
    env = {
        "candidates": [candidate_record(backend, cfg["backend"]) for backend in chosen],
        "reason": reason,
        "requested": requested,
    }
    return {paths["env"]: env}, f"backend {', '.join(b.name for b in chosen)} ({reason})"


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
        "fingerprint": backend.fingerprint(),
    } | own

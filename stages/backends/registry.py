"""Backend names -> implementations, and the ``auto`` choice. Modules are imported only when asked for."""

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.backends.base import Availability, Backend
from stages.core.errors import PipelineError

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner

# name -> "module:Class"; auto tries them in this order (the fastest backend a machine can run first).
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


def resolve(requested: str, precision: str = "fp32") -> tuple[Backend, str]:
    """The backend to use for ``backend.name=requested`` at ``precision``, and one line saying why."""
    if requested != AUTO:
        backend = get(requested)
        available = usable(backend, precision)
        if not available.ok:
            raise PipelineError(f"backend.name={requested}: {available.reason}")
        return backend, f"requested by backend.name={requested}"
    skipped: list[str] = []
    for name in BACKENDS:
        backend = get(name)
        available = usable(backend, precision)
        if available.ok:
            return backend, "; ".join([*skipped, f"auto chose {name}: {available.reason}"])
        skipped.append(f"{name} unavailable: {available.reason}")
    raise PipelineError(f"backend.name=auto: no backend can run precision={precision} here ({'; '.join(skipped)})")


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
    section (``backend.<name>``) and, where it tunes at build, the tuning budget. The env stage writes it to
    env.json, which is all the build reads of the group: another backend's key rebuilds nothing.

    Args:
        backend: the chosen backend.
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


def reference_runner(onnx: Path, name: str) -> "BaseRunner":
    """The accuracy reference every engine is compared with: ONNX Runtime's untuned CPU session on ``onnx``.

    Args:
        onnx: the float32 graph (``model.sim.onnx``).
        name: the runner's name in comparisons.

    Returns:
        BaseRunner: not yet activated.
    """
    return get(REFERENCE).baseline_runner(onnx, name)


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
    """Path -> content of each file the env stage writes (``paths.env``: the resolved backend, why, its
    fingerprint and own settings; ``paths.backend_choice``: its capabilities), and the line saying which backend
    was chosen. The env stage writes them; ``engineforge.why`` predicts them without importing a stage.

    Args:
        cfg: the env stage's params as plain data (``backend``, ``precision.name``, ``target``, ``paths``).

    Returns:
        tuple: path -> content, and the one-line choice.
    """
    requested, target, paths = cfg["backend"]["name"], cfg["target"], cfg["paths"]
    backend, reason = resolve(requested, cfg["precision"]["name"])
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise PipelineError(f"target: {target!r} is not a label; use a non-empty string (e.g. target=edge-a)")
    env = {
        "backend": backend.name,
        "fingerprint": backend.fingerprint(),
        "reason": reason,
        "requested": requested,
        "target": target,
    } | engine_settings(backend, cfg["backend"])
    choice = {"backend": backend.name} | backend.capabilities.record()
    return {paths["env"]: env, paths["backend_choice"]: choice}, f"backend {backend.name} ({reason})"

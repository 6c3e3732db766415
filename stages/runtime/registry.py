"""Backend names -> implementations, and the ``auto`` choice. Each backend is a package under ``stages/backends/``;
ordering them imports each package (its ``BACKEND`` class), whose runtime (OpenVINO, TensorRT, ...) is imported only
when its methods run. A package that does not import is named in one line, and ``auto`` races the others."""

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core import precisions
from stages.core.errors import PipelineError
from stages.runtime.base import Availability, Backend

AUTO = "auto"
PACKAGES = Path(__file__).resolve().parents[1] / "backends"  # stages/backends/: one package per backend
REFERENCE = "onnxruntime"  # the accuracy reference: ONNX Runtime's default CPU session on the fp32 graph


def names() -> list[str]:
    """Every backend: each package under ``stages/backends/`` (its ``BACKEND`` class), in the order ``auto`` races
    them and precision.json lists them (each class's ``rank``, then its name). A new backend is its package and its
    ``conf/backend/<name>.yaml``; nothing here lists it."""
    found = [m.name for m in pkgutil.iter_modules([str(PACKAGES)]) if m.ispkg]
    return sorted(found, key=lambda name: (rank(name), name))


def rank(name: str) -> float:
    """Where ``auto`` races the backend ``name`` (its class's ``rank``); a package that does not import, last."""
    try:
        return backend_class(name).rank
    except PipelineError:
        return float("inf")


@functools.cache
def backend_class(name: str) -> type[Backend]:
    """The ``BACKEND`` class the package ``stages.backends.<name>`` declares; one line where it does not import."""
    try:
        return importlib.import_module(f"stages.backends.{name}").BACKEND
    except ImportError as e:  # the package's own imports (a missing module), not its runtime's: that is lazy
        raise PipelineError(f"stages/backends/{name} does not import ({e})") from e


def get(name: str) -> Backend:
    """The backend called ``name``."""
    if not name.isidentifier() or name not in names():
        raise PipelineError(f"backend.name: unknown backend {name!r}; choose from {', '.join([AUTO, *names()])}")
    return backend_class(name)()


def importable() -> list[Backend]:
    """Every backend whose package imports, in race order (the report's palette, the baselines' names)."""
    return [backend_class(name)() for name in names() if rank(name) != float("inf")]


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
    for name in names():
        try:
            backend = get(name)
        except PipelineError as e:
            notes.append(f"{name} unavailable: {e}")
            continue
        found = [usable(backend, p) for p in wanted]
        if any(a.ok for a in found):
            chosen.append(backend)
        else:
            notes.append(f"{name} unavailable: {found[0].reason}")
    if not chosen:
        raise PipelineError(f"backend.name=auto: no backend can run precision={precision} here ({'; '.join(notes)})")
    race = "auto races " + ", ".join(b.name for b in chosen) if len(chosen) > 1 else f"auto: only {chosen[0].name}"
    return chosen, "; ".join([*notes, race + " (build keeps the fastest that passes its gate)"])


def baseline(name: str) -> Backend:
    """The backend whose untuned default runs as the benchmark baseline called ``name``, if it runs here."""
    from stages.core.metrics import EAGER  # imported here: the env stage stays free of OmegaConf

    known = {b.baseline: b for b in importable() if b.baseline}
    if name not in known:
        raise PipelineError(f"benchmark.baselines: unknown {name!r}; choose from {', '.join([EAGER, *known])}")
    available = known[name].availability()
    if not available.ok:
        raise PipelineError(f"benchmark.baselines: {name} cannot run here ({available.reason}); remove it")
    return known[name]


def runtimes() -> list[str]:
    """Every runtime a benchmark can report, in order: the engine, eager PyTorch, then each backend's baseline
    (the columns of ``<paths.latency>/*.csv`` that dvc.yaml's plots draw)."""
    from stages.core.metrics import EAGER, ENGINE

    return [ENGINE, EAGER, *(b.baseline for b in importable() if b.baseline)]


def palette(runtimes: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Runtime name -> the colour the report draws it in: the engine green, eager PyTorch grey, each baseline in
    the colour its backend declares (``runtimes``: the env stage's ``paths.runtimes``, as read).

    Args:
        runtimes: backend name -> its record (``baseline``, ``colour``).

    Returns:
        dict: runtime name -> colour.
    """
    from stages.core.metrics import EAGER, ENGINE

    return {ENGINE: "#2a7", EAGER: "#888"} | {r["baseline"]: r["colour"] for r in runtimes.values() if r["baseline"]}


@functools.cache
def fingerprint(name: str) -> dict[str, Any]:
    """This machine's fingerprint for the backend ``name``, computed once per process: a stage checks every
    record and engine of that backend against the same reading."""
    return get(name).fingerprint()

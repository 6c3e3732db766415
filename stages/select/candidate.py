"""A candidate engine is one backend at one precision: the env stage's record of the backend (fingerprint,
capabilities, own settings, tuning budget), the graph the precision stage wrote for it, the ``BuildSpec`` its build
gets, and the outputs of a graph on the runtime that will run it (what the precision stage judges graphs by)."""

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.artifacts import atomic_path, write_json
from stages.core.errors import PipelineError, first_line
from stages.core.fallback import Outputs
from stages.core.gate import run_batches
from stages.core.graph_files import files_sha256
from stages.core.onnx_io import load_onnx
from stages.core.profiles import resolve_profiles
from stages.core.specs import axis_sizes, input_specs, io_spec
from stages.runtime.base import Backend, BuildSpec, Capabilities
from stages.runtime.manifest import MANIFEST


@dataclass(frozen=True)
class Candidate:
    """One backend at one precision, with its env.json record."""

    backend: Backend
    precision: str
    record: Mapping[str, Any]

    @property
    def capabilities(self) -> Capabilities:
        """What env.json recorded the backend can do here (never probed again)."""
        return Capabilities.from_record(self.record["capabilities"])

    @property
    def key(self) -> str:
        """``<precision>.<backend>``: the graph's file stem and the candidate's name in every record."""
        return f"{self.precision}.{self.backend.name}"


def graph_file(precision: str, backend: str) -> str:
    """The file name of a candidate's graph inside the precision stage's folder (``paths.precise``)."""
    return f"{precision}.{backend}.onnx"


def build_spec(
    model: DictConfig,
    precision: str,
    batch_sizes: Sequence[int],
    record: Mapping[str, Any],
    cache_dir: Path | None,
    tune_s: float | None = None,
    span: tuple[int, int] | None = None,
) -> BuildSpec:
    """What a candidate's build needs from the stage config and its env.json record, and nothing more.

    Args:
        model: ``cfg.model`` (inputs, dims, max batch).
        precision: the candidate's precision.
        batch_sizes: the benchmark's batch sizes.
        record: the backend's env.json record: name, own ``settings`` and ``tuning`` budget.
        cache_dir: the timing-cache folder kept across builds (None: no timing cache).
        tune_s: the tuning budget to use instead of the record's (the race splits it between candidates).
        span: the (first, last) batch the engine serves (its default profile's edges); None: every batch.

    Returns:
        BuildSpec: precision, batch sizes, profiles, input shapes per batch, own settings, cache folder, tuning.
    """
    settings: dict[str, Any] = dict(record["settings"])
    tuning = record.get("tuning") or {"tune": False, "tune_s": 0.0}
    batches = tuple(int(b) for b in batch_sizes)
    specs = input_specs(model)
    where = f"backend.{record['backend']}.profiles"
    return BuildSpec(
        precision=precision,
        batch_sizes=batches,
        profiles=resolve_profiles(settings.get("profiles"), model, batches, where, span),
        shapes={b: {s.name: list(axis_sizes(s, b, model.dims)) for s in specs} for b in batches},
        dtypes={s.name: np.dtype(s.dtype).name for s in specs},
        settings=settings,
        cache_dir=cache_dir,
        tune=bool(tuning["tune"]),
        tune_s=float(tuning["tune_s"] if tune_s is None else tune_s),
    )


def build_engine(chosen: Candidate, onnx: Path, spec: BuildSpec, model: str, target: str, out: Path) -> dict:
    """Build ``onnx`` with ``chosen``'s backend into the folder ``out`` (atomically) beside its manifest: the
    engine's full key (ONNX sha256, precision, backend settings, the fingerprint it was built for).

    Args:
        chosen: the candidate (its backend, precision and env.json record).
        onnx: its graph.
        spec: its build spec.
        model: ``model.name``.
        target: the fleet target it is built for (its name).
        out: the engine folder.

    Returns:
        dict: the manifest written.
    """
    load_onnx(onnx)
    with atomic_path(out, directory=True) as tmp:
        started = time.perf_counter()
        built = chosen.backend.build(onnx, spec, tmp)
        seconds = time.perf_counter() - started
        manifest = {
            "backend": chosen.backend.name,
            "engine": built["engine"],
            "engine_sha256": files_sha256(tmp / built["engine"]),
            "fingerprint": dict(chosen.record["fingerprint"]),
            "capabilities": dict(chosen.record["capabilities"]),  # what it was built with (env.json's record)
            "code": chosen.record["code"],  # its backend package's digest: the code that built it
            "target": target,
            "model": model,
            "onnx": {"path": str(onnx), "sha256": files_sha256(onnx)},
            "precision": chosen.precision,
            "settings": built["settings"],
            "io": io_spec(str(onnx)),  # what Engine.inputs and Engine.outputs say
            "build_s": round(seconds, 2),  # the cold start's first part: what a restore from the cache saves
            "race": None,  # the race (stages/select/race.py) records every candidate here
        }
        manifest |= {k: v for k, v in built.items() if k not in manifest}  # backend-specific notes
        write_json(tmp / MANIFEST, manifest)
    return manifest


def runtime_outputs(backend: Backend, spec: BuildSpec) -> Outputs:
    """The outputs of a graph on ``backend`` as its engine would run it (``Backend.evaluation_runner``).

    Args:
        backend: the runtime that will run the engine.
        spec: the build spec of the candidate (its precision and settings).

    Returns:
        Outputs: (graph, batches) -> output name -> concatenated outputs.
    """

    def run(graph: Path, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        try:
            with (
                tempfile.TemporaryDirectory(prefix="engineforge-judge-") as folder,
                backend.evaluation_runner(graph, spec, Path(folder), "judged") as runner,
            ):
                return run_batches(runner.infer, batches)
        except PipelineError:
            raise
        except backend.runtime_errors() as e:  # the runtime cannot compile or run the graph: one line, its record
            raise PipelineError(f"{backend.name} cannot run {graph.name}: {first_line(e, 300)}") from e

    return run

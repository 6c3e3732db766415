"""build stage: model.<precision>.onnx + env.json -> build/<model>/engine/ (engine file + manifest.json).

The backend's settings come from env.json (the chosen backend's own section, written by the env stage), not from
the ``backend`` config group, so a key of a backend that was not chosen rebuilds nothing. The manifest records
the engine's full key: ONNX sha256, precision, backend settings, backend version and the machine fingerprint;
every later load checks it (stages/backends/manifest.py).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.backends import registry
from stages.backends.base import Backend, BuildSpec
from stages.backends.manifest import MANIFEST, first_difference
from stages.core.artifacts import atomic_path, read_json, sha256, write_json
from stages.core.errors import PipelineError
from stages.core.onnx_io import load_onnx
from stages.core.profiles import resolve_profiles
from stages.core.run import run_stage
from stages.core.specs import axis_sizes, input_specs


def build_spec(cfg: DictConfig, env: Mapping[str, Any]) -> BuildSpec:
    """What the chosen backend needs from the stage config and env.json, and nothing more.

    Args:
        cfg: the build stage's config.
        env: env.json's content: the chosen backend's name, its own ``settings`` and ``tuning`` budget.

    Returns:
        BuildSpec: precision, batch sizes, profiles, input shapes per batch, own settings, cache folder, tuning.
    """
    settings: dict[str, Any] = dict(env["settings"])
    tuning = env.get("tuning") or {"tune": False, "tune_s": 0.0}
    batches = tuple(int(b) for b in cfg.benchmark.batch_sizes)
    specs = input_specs(cfg.model)
    return BuildSpec(
        precision=cfg.precision.name,
        batch_sizes=batches,
        profiles=resolve_profiles(settings.get("profiles"), cfg.model, batches, f"backend.{env['backend']}.profiles"),
        shapes={b: {s.name: list(axis_sizes(s, b, cfg.model.dims)) for s in specs} for b in batches},
        dtypes={s.name: np.dtype(s.dtype).name for s in specs},
        settings=settings,
        cache_dir=Path(cfg.paths.timing_cache),
        tune=bool(tuning["tune"]),
        tune_s=float(tuning["tune_s"]),
    )


def build_engine(backend: Backend, onnx: Path, cfg: DictConfig, env: Mapping[str, Any], out: Path) -> dict:
    """Build ``onnx`` with ``backend`` into the folder ``out`` (atomically) beside its manifest; return the manifest.

    ``env`` is env.json's content: its fingerprint, deployment-target label and the backend's own settings."""
    load_onnx(onnx)
    with atomic_path(out, directory=True) as tmp:
        built = backend.build(onnx, build_spec(cfg, env), tmp)
        manifest = {
            "backend": backend.name,
            "engine": built["engine"],
            "engine_sha256": sha256(tmp / built["engine"]),
            "fingerprint": env["fingerprint"],
            "target": env.get("target"),
            "model": cfg.model.name,
            "onnx": {"path": str(onnx), "sha256": sha256(onnx)},
            "precision": cfg.precision.name,
            "settings": built["settings"],
        }
        manifest |= {k: v for k, v in built.items() if k not in manifest}  # backend-specific notes
        write_json(tmp / MANIFEST, manifest)
    return manifest


def main(cfg: DictConfig) -> str:
    """Build the engine for ``paths.precise`` with the backend ``paths.env`` names."""
    env = read_json(cfg.paths.env)
    backend = registry.get(env["backend"])
    diff = first_difference(env["fingerprint"], backend.fingerprint())
    if "settings" not in env:  # written before env.json carried the backend's settings
        raise PipelineError(f"{cfg.paths.env} is stale (it has no settings): run `dvc repro`, which reruns env")
    if diff:
        raise PipelineError(f"{cfg.paths.env} is stale ({diff[0]} changed): run `dvc repro`, which reruns env")
    supported = backend.supports(cfg.precision.name)
    if not supported.ok:  # env chose the backend for another precision (a stage run by hand)
        raise PipelineError(f"precision={cfg.precision.name} on {backend.name}: {supported.reason}")
    manifest = build_engine(backend, Path(cfg.paths.precise), cfg, env, Path(cfg.paths.engine))
    size = (Path(cfg.paths.engine) / manifest["engine"]).stat().st_size
    return f"{backend.name} {cfg.precision.name} engine ({size / 1024:.0f} KiB) -> {cfg.paths.engine}/"


if __name__ == "__main__":
    run_stage("build", main)

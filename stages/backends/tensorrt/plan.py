"""The TensorRT build plan: profiles, builder settings and the timing cache as plain data, checked without
TensorRT (``versions`` says which settings each TensorRT version has), and Polygraphy's lazy loader chain made from it.

Precision is never a builder flag: the network is strongly typed, so the precision stage's Q/DQ or float16 ONNX
fixes every layer's type (TensorRT 11 removed the FP16/INT8 flags; 10 needs the strongly typed flag, 11 ignores it).
"""

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from stages.backends.tensorrt.versions import values, version_problem
from stages.core.errors import PipelineError

# config value -> TensorRT enum member name
HARDWARE_LEVELS = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
TILING_LEVELS = {"none": "NONE", "fast": "FAST", "moderate": "MODERATE", "full": "FULL"}
TACTIC_SOURCES = {
    "cublas": "CUBLAS",
    "cublas_lt": "CUBLAS_LT",
    "cudnn": "CUDNN",
    "edge_mask_convolutions": "EDGE_MASK_CONVOLUTIONS",
    "jit_convolutions": "JIT_CONVOLUTIONS",
}


def _choice(settings: Mapping, key: str, options: Mapping) -> None:
    for value in values(settings[key]):
        if value not in options:
            raise PipelineError(f"backend.tensorrt.{key}: {value!r} is not one of {', '.join(options)}")


def timing_cache_key(fingerprint: Mapping[str, Any]) -> str:
    """File name of the timing cache shared by every engine built with this TensorRT version on this GPU model."""
    device, version = fingerprint["device"], fingerprint["version"]
    digest = hashlib.sha256(json.dumps([version, device["gpu"], device["compute_capability"]]).encode()).hexdigest()
    return f"trt{version}-sm{device['compute_capability'].replace('.', '')}-{digest[:12]}.cache"


def build_plan(
    settings: Mapping[str, Any], profiles: list, fingerprint: Mapping[str, Any], timing_cache_dir: str | Path | None
) -> dict[str, Any]:
    """Everything the build will ask TensorRT for, as plain data: profiles, settings, timing cache path.

    Args:
        settings: the ``backend.tensorrt`` settings.
        profiles: the resolved optimization profiles.
        fingerprint: the backend's fingerprint (TensorRT version, GPU).
        timing_cache_dir: the folder kept across builds for timing caches.

    Returns:
        dict: profiles, settings, strongly_typed, timing_cache (a path or None).
    """
    s = SimpleNamespace(**settings)
    _choice(settings, "hardware_compatibility_level", HARDWARE_LEVELS)
    _choice(settings, "tiling_optimization_level", TILING_LEVELS)
    if s.tactic_sources is not None:
        _choice(settings, "tactic_sources", TACTIC_SOURCES)
    if s.builder_optimization_level not in range(6):
        raise PipelineError(
            f"backend.tensorrt.builder_optimization_level: {s.builder_optimization_level!r} is not 0..5"
        )
    if s.exclude_lean_runtime and not s.version_compatible:
        raise PipelineError("backend.tensorrt.exclude_lean_runtime=true needs backend.tensorrt.version_compatible=true")
    use_cache = bool(s.timing_cache and timing_cache_dir is not None)
    if s.error_on_timing_cache_miss and not use_cache:
        raise PipelineError("backend.tensorrt.error_on_timing_cache_miss=true needs a timing cache (timing_cache=true)")
    settings = {
        "builder_optimization_level": int(s.builder_optimization_level),
        "error_on_timing_cache_miss": bool(s.error_on_timing_cache_miss),
        "exclude_lean_runtime": bool(s.exclude_lean_runtime),
        "hardware_compatibility_level": s.hardware_compatibility_level,
        "tactic_sources": None if s.tactic_sources is None else sorted(s.tactic_sources),
        "tf32": bool(s.tf32),
        "tiling_optimization_level": s.tiling_optimization_level,
        "version_compatible": bool(s.version_compatible),
        "workspace_mib": None if s.workspace_mib is None else int(s.workspace_mib),
    }
    problem = version_problem(settings, fingerprint["version"])
    if problem:
        raise PipelineError(problem)
    cache = str(Path(timing_cache_dir) / timing_cache_key(fingerprint)) if use_cache and timing_cache_dir else None
    return {"profiles": profiles, "settings": settings, "strongly_typed": True, "timing_cache": cache}


class ApplyEnumSettings:
    """A config post-processor (Polygraphy's ``PostprocessConfig``) for the settings that need TensorRT's enums:
    workspace limit, hardware compatibility, tiling level, tactic sources. Applied at build time, when TensorRT is
    imported; the plan itself stays plain data."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)

    def __call__(self, builder: Any, network: Any, config: Any) -> None:
        import tensorrt as trt

        s = self.settings
        if s["workspace_mib"] is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s["workspace_mib"] << 20)
        if s["hardware_compatibility_level"] != "none":
            level = HARDWARE_LEVELS[s["hardware_compatibility_level"]]
            config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
        if s["tiling_optimization_level"] != "none":
            level = TILING_LEVELS[s["tiling_optimization_level"]]
            config.tiling_optimization_level = getattr(trt.TilingOptimizationLevel, level)
        if s["tactic_sources"] is not None:
            flags = sum(1 << int(getattr(trt.TacticSource, TACTIC_SOURCES[t])) for t in s["tactic_sources"])
            config.set_tactic_sources(flags)


def loaders(plan: Mapping[str, Any], onnx: str | Path) -> Any:
    """Polygraphy's lazy loader chain for ``plan``: NetworkFromOnnxPath(strongly typed) -> CreateConfig (profiles,
    TF32, optimization level, compatibility, timing cache) -> PostprocessConfig -> EngineBytesFromNetwork.

    The timing cache's folder is made here: after the build, Polygraphy opens ``<cache>.lock`` to save the cache
    outside any error handling, so a missing folder would fail a build that succeeded."""
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )

    profiles = []
    for shapes in plan["profiles"]:
        profile = Profile()
        for name, edge in shapes.items():
            profile.add(name, min=edge["min"], opt=edge["opt"], max=edge["max"])
        profiles.append(profile)
    s = plan["settings"]
    if plan["timing_cache"]:
        Path(plan["timing_cache"]).parent.mkdir(parents=True, exist_ok=True)
    config = CreateConfig(
        profiles=profiles,
        tf32=s["tf32"],
        builder_optimization_level=s["builder_optimization_level"],
        version_compatible=s["version_compatible"] or None,
        exclude_lean_runtime=s["exclude_lean_runtime"] or None,
        load_timing_cache=plan["timing_cache"],
        error_on_timing_cache_miss=s["error_on_timing_cache_miss"],
    )
    network = NetworkFromOnnxPath(str(onnx), strongly_typed=plan["strongly_typed"])
    return EngineBytesFromNetwork(
        network, config=PostprocessConfig(config, ApplyEnumSettings(s)), save_timing_cache=plan["timing_cache"]
    )

"""Which TensorRT releases and GPUs the backend takes, checked without TensorRT: too old (before 10), newer than
the last release checked, settings that exist only in some versions, and bfloat16 by compute capability."""

from collections.abc import Mapping, Sequence
from typing import Any

# (setting, value; None = any value but the default) -> (first version, last major) of TensorRT that has it
ONLY_IN = {
    ("hardware_compatibility_level", "same_compute_capability"): ((10, 9), None),
    ("tiling_optimization_level", None): ((10, 8), None),
    ("tactic_sources", "cublas"): (None, 10),
    ("tactic_sources", "cublas_lt"): (None, 10),
    ("tactic_sources", "cudnn"): (None, 10),
}
DEFAULTS = {"tiling_optimization_level": "none"}
# The newest TensorRT release this backend was checked against (its sources: python/src/infer/pyCore.cpp, NvInfer.h,
# trtexec); pyproject's tensorrt-cuNN extras stop there until the next is checked the same way (docs/gpu.md).
CHECKED_THROUGH = (11, 1)
BF16_FROM = (8, 0)  # the first compute capability with bfloat16 tensor cores (Ampere)


def values(value: Any) -> list:
    """A setting's value as a list (a single value, or the list it is)."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]


def too_old(version: str) -> str | None:
    """One line where TensorRT ``version`` cannot build the pipeline's strongly typed networks (before 10), else
    None: the gate the backend's availability and gpu_check share.

    Args:
        version: ``tensorrt.__version__``.

    Returns:
        str | None: the reason, or None.
    """
    if int(version.split(".")[0]) < 10:
        return f"TensorRT {version} is too old: strongly typed builds need 10 or 11"
    return None


def unchecked(version: str) -> str | None:
    """One line where TensorRT ``version`` is newer than ``CHECKED_THROUGH`` (installed by hand: the extras stop
    there), else None; a note, not a refusal.

    Args:
        version: ``tensorrt.__version__``.

    Returns:
        str | None: the note, or None.
    """
    if tuple(int(p) for p in version.split(".")[:2]) <= CHECKED_THROUGH:
        return None
    return f"TensorRT {version} is newer than {'.'.join(map(str, CHECKED_THROUGH))}, the last release checked (docs/gpu.md)"


def bf16_problem(compute_capability: str | None) -> str | None:
    """One line where the GPU (``major.minor``; None: none visible) has no bfloat16 kernels, which TensorRT has
    from compute capability 8.0 (Ampere) on, else None.

    Args:
        compute_capability: the device's, as ``device_facts`` gives it.

    Returns:
        str | None: the reason, or None.
    """
    if compute_capability is None or tuple(int(p) for p in compute_capability.split(".")) >= BF16_FROM:
        return None
    return (
        f"TensorRT runs bfloat16 from compute capability {BF16_FROM[0]}.{BF16_FROM[1]} (Ampere) on; this GPU is "
        f"sm {compute_capability}: use precision=fp16"
    )


def version_problem(settings: Mapping[str, Any], version: str) -> str | None:
    """One line naming a setting this TensorRT ``version`` lacks (it exists only in other versions), else None."""
    have = tuple(int(p) for p in version.split(".")[:2])
    for (key, value), (first, last_major) in ONLY_IN.items():
        chosen = values(settings.get(key))
        hit = any(v is not None and v != DEFAULTS.get(key) and (value is None or v == value) for v in chosen)
        if not hit:
            continue
        setting = f"backend.tensorrt.{key}={value or chosen[0]}"
        if first and have < first:
            return f"{setting} needs TensorRT >= {'.'.join(map(str, first))}; this is TensorRT {version}"
        if last_major and have[0] > last_major:
            return f"{setting} exists only in TensorRT {last_major}.x; this is TensorRT {version}: remove it"
    return None

"""What a GPU environment needs before TensorRT runs, each found or refused in one line: an NVIDIA driver new enough
for the installed CUDA major, a ``libcudart`` Polygraphy's CUDA wrapper finds (CUDA 13's wheel installs it under
``nvidia/cu13/lib``, where Polygraphy 0.53 does not look), ``libnvinfer`` loaded for ONNX Runtime's TensorRT
provider, and one ``onnxruntime`` distribution (the CPU and GPU packages install the same module).

Nothing here imports tensorrt or cuda-python at module level; every function works on a machine without a GPU.
"""

import importlib.metadata
import importlib.util
import os
import re
import site
import sys
from pathlib import Path

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # ONNX Runtime's, in priority order

# Where the CUDA runtime wheels put libcudart: CUDA 13 groups every library in nvidia/cu13/lib; CUDA 12's
# nvidia-cuda-runtime-cu12 uses nvidia/cuda_runtime/lib (the only one Polygraphy 0.53.6 searches).
WHEEL_LIB_DIRS = ("nvidia/cu13/lib", "nvidia/cu12/lib", "nvidia/cuda_runtime/lib")
# The directories Polygraphy 0.53.6's CUDA wrapper searches besides LD_LIBRARY_PATH and nvidia/cuda_runtime/lib
# (polygraphy/cuda/cuda.py, _find_cuda_lib_dirs); it does not recurse.
POLYGRAPHY_DIRS = ("/usr/local/cuda/lib64", "/usr/lib", "/lib")
CUDART = "libcudart.so*"
EXTRAS = ("cu12", "cu13")  # pyproject's tensorrt-cuNN extras
MIN_DRIVER = {12: "R525 or newer", 13: "R580 or newer"}  # the first driver branch of each CUDA major


def site_dirs() -> list[Path]:
    """Every site-packages-like directory this interpreter imports from."""
    dirs = [*sys.path, *site.getsitepackages(), site.getusersitepackages()]
    return [Path(d) for d in dict.fromkeys(dirs) if d and Path(d).is_dir()]


def wheel_lib_dirs() -> list[Path]:
    """The CUDA runtime wheels' library folders that exist here, CUDA 13's first."""
    return [root / sub for sub in WHEEL_LIB_DIRS for root in site_dirs() if (root / sub).is_dir()]


def _ld_dirs() -> list[Path]:
    return [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]


def find_cudart() -> Path | None:
    """The ``libcudart.so*`` Polygraphy should load: one on LD_LIBRARY_PATH or in the CUDA toolkit first, else the
    newest wheel's (CUDA 13's ``nvidia/cu13/lib``, then CUDA 12's ``nvidia/cuda_runtime/lib``); None if none."""
    for folder in [*_ld_dirs(), *(Path(d) for d in POLYGRAPHY_DIRS), *wheel_lib_dirs()]:
        found = sorted(folder.glob(CUDART), reverse=True) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def expose_cudart() -> Path | None:
    """Make the ``libcudart`` that ``find_cudart`` finds visible to Polygraphy's CUDA wrapper, which searches
    LD_LIBRARY_PATH as this process sees it (read from ``os.environ`` when the wrapper is first made): a folder it
    does not search is prepended there. Returns the library, or None when there is none to expose."""
    found = find_cudart()
    if found is None:
        return None
    searched = {*_ld_dirs(), *(Path(d) for d in POLYGRAPHY_DIRS)}
    searched |= {root / "nvidia/cuda_runtime/lib" for root in site_dirs()}
    if found.parent not in searched:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(found.parent), *map(str, _ld_dirs())])
    return found


def installed(*names: str) -> dict[str, str]:
    """Distribution name -> version, for those of ``names`` that are installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def onnxruntime_conflict() -> str | None:
    """One line when both onnxruntime and onnxruntime-gpu are installed (the module is whichever came last)."""
    both = installed("onnxruntime", "onnxruntime-gpu")
    if len(both) < 2:
        return None
    listed = " and ".join(f"{name} {version}" for name, version in both.items())
    return (
        f"{listed} are both installed and share one module: "
        "pip uninstall -y onnxruntime onnxruntime-gpu, then install one (docs/gpu.md)"
    )


def tensorrt_cuda_major() -> str | None:
    """The CUDA major TensorRT's libraries were built for, from their wheel's name (``tensorrt-cu12-libs`` ->
    ``12``); None when TensorRT came from elsewhere (a tarball, a container, the ``tensorrt`` metapackage)."""
    for dist in importlib.metadata.distributions():
        found = re.fullmatch(r"tensorrt[-_]cu(\d+)(?:[-_]libs)?", (dist.metadata["Name"] or "").lower())
        if found:
            return found.group(1)
    return None


def cuda_version(number: int) -> str:
    """CUDA's integer version as text: 12040 -> 12.4."""
    return f"{number // 1000}.{number % 1000 // 10}"


def driver_problem(driver: int, runtime: int) -> str | None:
    """One line when the driver cannot run this CUDA runtime. CUDA's minor-version compatibility lets a driver
    run any runtime of its own major, so only a newer major is refused.

    Args:
        driver: the newest CUDA the driver supports (``cudaDriverGetVersion``, e.g. 12040; 0 = no driver).
        runtime: the installed CUDA runtime's version (e.g. 13000).

    Returns:
        The line naming both versions and the fix, or None when they fit.
    """
    have, need = driver // 1000, runtime // 1000
    if driver == 0 or have >= need:
        return None
    extra = f"pip install -e '.[tensorrt-cu{have}]' (docs/gpu.md), or " if f"cu{have}" in EXTRAS else ""
    return (
        f"the NVIDIA driver supports CUDA up to {cuda_version(driver)} but the installed CUDA runtime is "
        f"{cuda_version(runtime)}: {extra}update the driver to {MIN_DRIVER.get(need, 'a newer release')}"
    )


def nvinfer_major(library: Path) -> str | None:
    """The libnvinfer major a shared library links (its ``libnvinfer.so.N`` dynamic entry), else None."""
    found = re.search(rb"\0libnvinfer\.so\.(\d+)\0", library.read_bytes()) if library.is_file() else None
    return found.group(1).decode() if found else None


def ort_tensorrt_provider() -> Path | None:
    """onnxruntime-gpu's TensorRT provider library, when this onnxruntime has one."""
    spec = importlib.util.find_spec("onnxruntime")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        library = Path(folder) / "capi" / "libonnxruntime_providers_tensorrt.so"
        if library.is_file():
            return library
    return None


def provider_tensorrt_problem() -> str | None:
    """One line when ONNX Runtime's TensorRT provider cannot load the installed TensorRT: tensorrt does not import,
    or its major is not the ``libnvinfer.so.N`` the provider links (onnxruntime-gpu 1.26 and 1.31 link 10; pip
    picks TensorRT 11 unless told ``TRT=10``); else None."""
    import onnxruntime as ort

    try:
        import tensorrt
    except ImportError as e:
        return f"ONNX Runtime's TensorRT provider needs libnvinfer, and tensorrt does not import ({e})"
    library = ort_tensorrt_provider()
    need, have = (nvinfer_major(library) if library else None), tensorrt.__version__.split(".")[0]
    if need and need != have:
        return (
            f"ONNX Runtime {ort.__version__}'s TensorRT provider links libnvinfer.so.{need}, but TensorRT "
            f"{tensorrt.__version__} is installed: make setup-gpu CUDA={tensorrt_cuda_major() or '<12|13>'} "
            f"TRT={need} (docs/gpu.md)"
        )
    return None


def preload_gpu_libraries(providers: list[str]) -> str | None:
    """Load what ONNX Runtime's GPU providers link before a session opens: CUDA and cuDNN from the nvidia wheels
    (``onnxruntime.preload_dlls``, which Linux needs unless a CUDA torch came first) and, for the TensorRT provider,
    libnvinfer of the major it was linked against (importing ``tensorrt`` loads its wheel's libraries). None when
    done, else one line saying what is missing."""
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in providers and (problem := provider_tensorrt_problem()):
        return problem
    if set(providers) & set(GPU_PROVIDERS):
        ort.preload_dlls()  # onnxruntime 1.21 and later, the GPU setups' 1.26 and 1.31 among them
    return None

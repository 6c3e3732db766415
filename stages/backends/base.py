"""The Backend interface and the manifest check every engine load goes through (the CPU fingerprint: core.device)."""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from stages.core.artifacts import read_json, sha256
from stages.core.errors import PipelineError
from stages.core.profiles import Profile, random_feed

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BuildSpec:
    """What a backend's build needs, and nothing else (never the whole stage config).

    Attributes:
        precision: the precision stage's name for the graph (fp32, fp16, bf16, int8).
        batch_sizes: the benchmark's batch sizes, which tuning times.
        profiles: the resolved shape profiles (core.profiles), the first one covering every batch size.
        shapes: batch size -> input name -> the input shape at that batch (other dynamic axes at model.dims).
        dtypes: input name -> numpy dtype name.
        settings: this backend's own section of the config (``backend.<name>``), as plain data.
        cache_dir: a folder kept across builds (TensorRT's timing caches).
        tune: whether to time runtime settings at build and keep the fastest.
        tune_s: the time budget of that tuning, in seconds.
    """

    precision: str
    batch_sizes: tuple[int, ...]
    profiles: list[Profile]
    shapes: dict[int, dict[str, list[int]]]
    dtypes: dict[str, str]
    settings: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None
    tune: bool = False
    tune_s: float = 20.0

    def feed(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded inputs at ``batch`` (a smoke test's or a tuning run's)."""
        return random_feed(self.shapes[batch], self.dtypes, seed)


class TimedCall(Protocol):
    """One inference of an activated runner with inputs and outputs bound beforehand: what a benchmark times.

    GPU backends add ``take()`` (device times per phase since the last take) and ``close()``.
    """

    def __call__(self) -> object:
        """Run one inference and return when its results are ready."""


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here; ``reason`` is one line saying why not (or what was found)."""

    ok: bool
    reason: str = ""


class Backend(Protocol):
    """What a backend provides. Implementations live beside this module and register in ``registry``.

    Attributes:
        name: the ``backend.name`` option.
        device: where its engines run (``cpu`` or ``cuda``): the eager baseline runs there too.
        int8_encoding: the Q/DQ form this backend runs fast (``stages.core.quantize.ENCODINGS``).
        bf16: how precision=bf16 reaches it: ``graph`` (a bfloat16 graph), ``runtime`` (the float32 graph,
            executed in bfloat16 by the runtime), or one line saying why it cannot.
        baseline: the name under which the benchmark measures this runtime's untuned default on the raw export
            (None: not measured as a baseline).
        tunes: whether its build times runtime settings within ``backend.tune_s`` (so the engine depends on it).
    """

    name: str
    device: str
    int8_encoding: str
    bf16: str
    baseline: str | None
    tunes: bool

    def availability(self) -> Availability:
        """Whether this backend can build and run engines on this machine.

        Returns:
            Availability: ``ok`` and a one-line reason.
        """

    def supports(self, precision: str) -> Availability:
        """Whether this backend runs ``precision`` accurately on this machine (``auto`` skips it when not).

        Args:
            precision: the precision stage's name (fp32, fp16, bf16, int8).

        Returns:
            Availability: ``ok``, or the measured reason it does not.
        """

    def fingerprint(self) -> dict[str, Any]:
        """Everything an engine depends on besides its inputs.

        Returns:
            dict: versions, providers, device (the CPU's ISA or the GPU's compute capability).
        """

    def build(self, onnx: Path, spec: BuildSpec, out: Path) -> dict[str, Any]:
        """Build an engine from ``onnx`` into the empty folder ``out``.

        Args:
            onnx: the precision stage's graph.
            spec: what the build needs (profiles, batch sizes, own settings, tuning budget).
            out: the engine folder being written.

        Returns:
            dict: manifest fields, at least ``engine`` (the engine file's name inside ``out``) and ``settings``.
        """

    def runner(self, engine: Path, name: str = "engine") -> "BaseRunner":
        """A Polygraphy runner for the engine folder ``engine`` (verified against its manifest first).

        Args:
            engine: the engine folder.
            name: the runner's name in comparisons.

        Returns:
            BaseRunner: not yet activated.
        """

    def baseline_runner(self, onnx: Path, name: str) -> "BaseRunner":
        """A Polygraphy runner over ``onnx`` with this runtime's untuned defaults (what a user runs instead).

        Args:
            onnx: the raw float32 export.
            name: the runner's name (``baseline``).

        Returns:
            BaseRunner: not yet activated.
        """

    def timed_call(self, runner: "BaseRunner", feed: dict[str, np.ndarray], settings: Mapping[str, Any]) -> TimedCall:
        """The call a benchmark times: one inference of the activated ``runner`` on ``feed``.

        Args:
            runner: an activated runner from ``runner`` or ``baseline_runner``.
            feed: input name -> array, bound once before timing.
            settings: ``benchmark`` config (GPU backends read ``cuda_graph`` and ``no_data_transfers``).

        Returns:
            TimedCall: runs one inference per call.
        """


def quiet_polygraphy() -> None:
    """Polygraphy logs every session it creates; a stage reports one line, so keep only its errors."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR


def differences(built: Any, current: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (dotted key, built value, current value) where two nested dicts differ, in sorted key order."""
    if isinstance(built, dict) and isinstance(current, dict):
        for key in sorted(set(built) | set(current)):
            yield from differences(built.get(key), current.get(key), f"{prefix}{key}.")
    elif built != current:
        yield prefix.rstrip("."), built, current


def first_difference(built: Any, current: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted key, built value, current value) where two fingerprints differ, else None."""
    return next(differences(built, current, prefix), None)


def verified_engine(engine_dir: Path, fingerprint: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """Read ``engine_dir``'s manifest and refuse, in one line, an engine that does not match it or this machine.

    Returns the manifest and the engine file's path.
    """
    manifest = read_json(engine_dir / MANIFEST)
    engine = (engine_dir / manifest["engine"]).resolve()
    if engine.parent != engine_dir.resolve():
        raise PipelineError(f"{engine_dir / MANIFEST}: engine file {manifest['engine']!r} is outside its folder")
    if not engine.is_file() or sha256(engine) != manifest["engine_sha256"]:
        raise PipelineError(
            f"{engine_dir / manifest['engine']} does not match its manifest (sha256): "
            "restore it with `dvc checkout` or rebuild with `dvc repro`"
        )
    diff = first_difference(manifest["fingerprint"], fingerprint)
    if diff:
        key, built, now = diff
        raise PipelineError(
            f"{engine_dir} was built for {key}={built}, this machine has {key}={now}: rebuild with `dvc repro`"
        )
    return manifest, engine

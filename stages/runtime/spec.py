"""What a backend declares and gets, as frozen data: what it can do (``Capabilities``, ``Bf16``), whether it runs
here (``Availability``) and what a build needs (``BuildSpec``). ``stages.runtime.base`` re-exports them."""

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.profiles import Profile, random_feed


@dataclass(frozen=True)
class BuildSpec:
    """What a backend's build needs, and nothing else (never the whole stage config).

    Attributes:
        precision: the precision stage's name for the graph (fp32, fp16, bf16, int8).
        batch_sizes: the benchmark's batch sizes, which tuning times.
        profiles: the resolved shape profiles (core.profiles), the first one covering the batch range it serves.
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


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here; ``reason`` is one line saying why not (or what was found)."""

    ok: bool
    reason: str = ""


class Bf16(enum.StrEnum):
    """How precision=bf16 reaches a backend."""

    GRAPH = "graph"  # a bfloat16 graph sets the layers' types (TensorRT, strongly typed)
    RUNTIME = "runtime"  # the float32 graph, executed in bfloat16 by the runtime (OpenVINO where it compiles bf16)
    NONE = "none"  # it cannot here: ``Capabilities.bf16_reason`` says why


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, as data the env stage writes into its candidate entry of env.json: callers read it,
    never probe.

    Attributes:
        device: where its engines run (``cpu`` or ``cuda``): the eager baseline runs there too.
        int8_encoding: the Q/DQ form it runs fast (``stages.core.quantize.ENCODINGS``, or ``nncf``: NNCF's).
        bf16: how precision=bf16 reaches it.
        bf16_reason: one line saying why not, where ``bf16`` is NONE.
        baseline: the name under which the benchmark measures its untuned default on the raw export (None: none).
        uses_profiles: whether its engines hold several shape profiles to switch between.
        tunes: whether its build times runtime settings within ``backend.tune_s`` (so the engine depends on it).
    """

    device: str
    int8_encoding: str
    bf16: Bf16
    bf16_reason: str = ""
    baseline: str | None = None
    uses_profiles: bool = False
    tunes: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Capabilities":
        """The capabilities a ``record`` (env.json's, a manifest's) holds.

        Args:
            record: ``record()``'s output.

        Returns:
            Capabilities: the same data.
        """
        fields: dict[str, Any] = dict(record)
        return cls(**(fields | {"bf16": Bf16(fields["bf16"])}))

    def supports(self, precision: str) -> Availability:
        """Whether engines with these capabilities run ``precision``: every precision but bf16 where it cannot.

        Args:
            precision: the precision stage's name (fp32, fp16, bf16, int8).

        Returns:
            Availability: ``ok``, or the reason it does not.
        """
        if precision == "bf16" and self.bf16 is Bf16.NONE:
            return Availability(False, self.bf16_reason)
        return Availability(True)

    def record(self) -> dict[str, Any]:
        """As plain data (env.json's ``capabilities``)."""
        return {
            "baseline": self.baseline,
            "bf16": str(self.bf16),
            "bf16_reason": self.bf16_reason,
            "device": self.device,
            "int8_encoding": self.int8_encoding,
            "tunes": self.tunes,
            "uses_profiles": self.uses_profiles,
        }

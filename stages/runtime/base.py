"""The Backend interface (a template: ``Engine.open`` loads every engine the same way, each backend only its own
part). What a backend can do (``Capabilities``) and what a build needs (``BuildSpec``) are frozen data in
``spec.py``, and the timed call a benchmark runs is ``stages.core.timing.TimedCall``: both re-exported here."""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from stages.core.errors import PipelineError
from stages.core.graph_files import copy_graph
from stages.core.timing import TimedCall
from stages.core.triton import TritonModel
from stages.runtime.spec import Availability, Bf16, BuildSpec, Capabilities

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner

__all__ = ["Availability", "Backend", "Bf16", "BuildSpec", "Capabilities", "TimedCall", "quiet_polygraphy"]


class Backend(ABC):
    """A runtime that builds and runs engines: a package each under ``stages/backends/``, found by ``registry``.

    ``Engine.open`` (stages/runtime/loading.py) verifies an engine's manifest against this machine before the
    backend's own ``load_runner``; callers run engines only through ``Engine``.
    """

    name: ClassVar[str]
    rank: ClassVar[int] = 100  # where ``auto`` races it among the backends (lowest first), then by name
    # The benchmark baseline this runtime's untuned default is measured as, and the colour its bars and curves are
    # drawn in (static data: the report reads it without loading the runtime). None: no baseline.
    baseline: ClassVar[str | None] = None
    colour: ClassVar[str] = "#999"

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend can do on this machine."""

    def capabilities_for(self, settings: Mapping[str, Any]) -> Capabilities:
        """What this backend can do with its own settings ``settings`` (``backend.<name>``): env.json records this.
        By default the settings change nothing; a backend whose device follows a setting (ONNX Runtime's
        providers) says so here.

        Args:
            settings: the backend's own config section, as plain data.

        Returns:
            Capabilities: for engines built with those settings.
        """
        return self.capabilities

    @abstractmethod
    def availability(self) -> Availability:
        """Whether this backend can build and run engines on this machine (``ok`` and a one-line reason)."""

    def supports(self, precision: str) -> Availability:
        """Whether this backend runs ``precision`` on this machine (``auto`` skips it when not): what its live
        ``capabilities`` say (the env stage asks; later stages read the record it wrote).

        Args:
            precision: the precision stage's name (fp32, fp16, bf16, int8).

        Returns:
            Availability: ``ok``, or the reason it does not.
        """
        return self.capabilities.supports(precision)

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything an engine depends on besides its inputs: versions, providers, the device."""

    @abstractmethod
    def build(self, onnx: Path, spec: BuildSpec, out: Path) -> dict[str, Any]:
        """Build an engine from ``onnx`` into the empty folder ``out``.

        Args:
            onnx: the precision stage's graph.
            spec: what the build needs (profiles, batch sizes, own settings, tuning budget).
            out: the engine folder being written.

        Returns:
            dict: manifest fields, at least ``engine`` (the engine file's name inside ``out``) and ``settings``.
        """

    @abstractmethod
    def load_runner(self, manifest: dict[str, Any], path: Path, name: str) -> "BaseRunner":
        """The backend's own Polygraphy runner (not yet activated) over the engine file ``path``, verified against
        ``manifest`` by ``Engine.open`` (the one caller), with the settings ``manifest`` records.

        Args:
            manifest: the engine's manifest.
            path: the engine file.
            name: the runner's name in comparisons.

        Returns:
            BaseRunner: not yet activated.
        """

    def evaluation_runner(self, onnx: Path, spec: BuildSpec, folder: Path, name: str) -> "BaseRunner":
        """A runner over ``onnx`` as this backend's engine runs it, for judging a graph before the build (the
        int8 fallback's rounds): by default the backend's own build, untuned, into the empty folder ``folder``;
        a backend that compiles in memory overrides it.

        Args:
            onnx: the graph to judge.
            spec: what its build would get (untuned here).
            folder: an empty folder the caller removes afterwards.
            name: the runner's name in comparisons.

        Returns:
            BaseRunner: not yet activated.
        """
        built = self.build(onnx, replace(spec, tune=False), folder)
        quiet_polygraphy()
        return self.load_runner(built, folder / built["engine"], name)

    def baseline_runner(self, onnx: Path, name: str) -> "BaseRunner":
        """A Polygraphy runner over ``onnx`` with this runtime's untuned defaults (``capabilities.baseline``)."""
        raise PipelineError(f"benchmark.baselines: {self.name} has no untuned baseline ({name!r})")

    def triton(self, manifest: Mapping[str, Any]) -> TritonModel:
        """How Triton Inference Server serves this backend's engine built as ``manifest`` says (the deploy
        stage's model repository); a backend without a Triton backend says so in one line.

        Args:
            manifest: the engine's manifest.

        Returns:
            TritonModel: the Triton backend, model file and the settings it carries.
        """
        raise PipelineError(f"{self.name} engines have no Triton backend to serve them")

    def write_triton_file(
        self, model: TritonModel, manifest: Mapping[str, Any], engine: Path, graph: Path, dest: Path
    ) -> None:
        """Write the Triton model file ``dest``: by default a copy of the engine or of its precision graph
        (``model.source``); a backend whose Triton backend needs another form writes that.

        Args:
            model: what ``triton`` declared.
            manifest: the engine's manifest.
            engine: the engine file.
            graph: the precision graph it was built from.
            dest: ``triton/<model>/1/<model.file>``.
        """
        copy_graph(engine if model.source == "engine" else graph, dest)  # a plan or blob: a plain copy

    def runtime_errors(self) -> tuple[type[Exception], ...]:
        """The exception types this runtime raises for a graph, an engine file or a shape it cannot take: what a
        caller reports in one line (a race's candidate, compare's profile edges). Any other type is a bug of this
        project's own and is not caught. By default this project's one-line errors and Polygraphy's.

        Returns:
            tuple: exception classes for an ``except`` clause.
        """
        from polygraphy.exception import PolygraphyException

        return (PipelineError, PolygraphyException)

    def describe(self, runner: "BaseRunner") -> dict[str, Any]:
        """What an activated runner runs with (the benchmark records it for a baseline); empty by default."""
        return {}

    def set_profile(self, runner: "BaseRunner", index: int) -> None:
        """Switch an activated engine runner to shape profile ``index``; only a backend that ``uses_profiles``
        builds more than one, so the others have nothing to switch."""
        if index:
            raise PipelineError(f"{self.name} engines hold one shape profile, not profile {index}")

    @abstractmethod
    def timed_call(self, runner: "BaseRunner", feed: dict[str, np.ndarray], settings: Mapping[str, Any]) -> TimedCall:
        """The call a benchmark times: one inference of the activated ``runner`` on ``feed``.

        Args:
            runner: an activated runner from ``load_runner`` or ``baseline_runner``.
            feed: input name -> array, bound once before timing.
            settings: ``benchmark`` config (GPU backends read ``cuda_graph`` and ``no_data_transfers``).

        Returns:
            TimedCall: runs one inference per call.
        """


def quiet_polygraphy() -> None:
    """Polygraphy logs every session it creates; a stage reports one line, so keep only its errors."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR

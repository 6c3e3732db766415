"""``engineforge.Engine``: the one object that runs an engine. The race, compare, benchmark and an application all
open engines through it, so what was gated and timed is what a service runs.

``Engine.open(folder)`` reads the manifest, checks the engine file's sha256 and the fingerprint it was built for
against this host (one line naming what differs), and loads it with the settings its manifest records (OpenVINO's
precision pin, threads and streams; ONNX Runtime's session options; TensorRT's profiles). Importing this module
imports numpy, the manifest code and the registry; a runtime is imported when an engine of it opens.
"""

import copy
import functools
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from stages.core.errors import PipelineError
from stages.core.profiles import profile_index
from stages.runtime.base import Backend, TimedCall
from stages.runtime.bundle import EngineError, TensorSpec, check_feed, fallback_graph, tensor_specs
from stages.runtime.dispatch import Part, open_parts, route
from stages.runtime.loading import load, pick_target

__all__ = ["Engine", "EngineError", "TensorSpec", "fallback_graph"]


class Engine:
    """An opened engine: ``engine(feed)`` runs it; ``inputs``/``outputs`` describe it; ``close()`` (or a ``with``
    block) releases it. Open one with ``Engine.open``."""

    def __init__(
        self, runtime: Backend, runner: Any, manifest: Mapping[str, Any], folder: Path, fallback: str | None
    ) -> None:
        self._runtime, self._runner, self.manifest, self.folder = runtime, runner, dict(manifest), folder
        self.fallback = fallback  # the line saying why the bundle's graph runs instead, or None
        self.inputs, self.outputs = tensor_specs(manifest["io"]["inputs"]), tensor_specs(manifest["io"]["outputs"])
        self._profile = 0
        self._pinned: int | None = None
        self._parts: list[Part] = []  # one engine per batch range (``dispatch``); empty: this engine serves all

    @classmethod
    def open(cls, folder: str | Path, fallback: str | None = None, name: str = "engine") -> "Engine":
        """Open the engine in ``folder`` (an engine folder or a deploy folder) with its certified settings.

        Args:
            folder: the folder holding ``manifest.json`` and the engine file, or a fleet's deploy root
                (``build/<model>/<precision>/``): the target whose engine this host runs is opened.
            fallback: None refuses an engine this host cannot run; ``"cpu"`` runs the bundle's precision graph
                on ONNX Runtime's CPU provider instead, and says so in one line on stderr.
            name: the engine's name in comparisons.

        Returns:
            Engine: loaded and ready to run.

        Raises:
            EngineError: one line: a missing or altered file, another host's engine (without ``fallback``), a
                runtime that cannot load it.
        """
        folder = pick_target(Path(folder), fallback)  # a fleet's deploy root: the target whose engine runs here
        engine = cls._open_one(folder, fallback, name)
        if engine.manifest.get("dispatch"):  # one engine per batch range: each opened and checked as this one
            try:
                opener = functools.partial(cls._open_one, fallback=fallback, name=name)
                alone = copy.copy(engine)  # the top engine itself, routing nothing: its own range's part
                engine._parts = open_parts(folder, engine.manifest["dispatch"], opener, alone)
            except BaseException:
                engine.close()
                raise
        return engine

    @classmethod
    def _open_one(cls, folder: Path, fallback: str | None, name: str) -> "Engine":
        runtime, runner, manifest, note = load(folder, fallback, name)
        return cls(runtime, runner, manifest, folder, note)

    @property
    def backend(self) -> Backend:
        """The backend running the engine (ONNX Runtime's CPU provider under a fallback)."""
        return self._runtime

    @property
    def profiles(self) -> list[dict[str, Any]]:
        """The shape profiles the manifest records (input -> min/opt/max shapes), the first covering its batch range."""
        return list(self.manifest.get("profiles") or [])

    @property
    def parts(self) -> list[tuple[tuple[int, int] | None, "Engine"]]:
        """Each engine of the folder with the batch range it serves, each running its own inputs (no routing):
        (None, self) where one engine serves all."""
        return [((p.first, p.last), p.engine) for p in self._parts] or [(None, self)]

    @property
    def name(self) -> str:
        """The engine's name in comparisons."""
        return str(self._runner.name)

    def __call__(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference.

        Args:
            feed: input name -> array, every input of ``inputs``.

        Returns:
            dict[str, np.ndarray]: output name -> array (owned by the caller).
        """
        check_feed(self.inputs, feed)
        if (served := self._served(feed)) is not self:
            return served(feed)
        self._select_profile(feed)
        return {name: np.array(value) for name, value in self._runner.infer(dict(feed)).items()}

    def timed_call(
        self, feed: Mapping[str, np.ndarray], cuda_graph: bool = False, no_data_transfers: bool = False
    ) -> TimedCall:
        """The call a benchmark times: one inference on ``feed``, its inputs and outputs bound once.

        Args:
            feed: input name -> array.
            cuda_graph: capture the inference in a CUDA graph (GPU engines).
            no_data_transfers: leave host-device copies out of the timing (GPU engines).

        Returns:
            TimedCall: one inference per call; ``close()`` it before the engine.
        """
        check_feed(self.inputs, feed)
        if (served := self._served(feed)) is not self:
            return served.timed_call(feed, cuda_graph, no_data_transfers)
        self._select_profile(feed)
        switches = {"cuda_graph": cuda_graph, "no_data_transfers": no_data_transfers}
        return self._runtime.timed_call(self._runner, dict(feed), switches)

    def use_profile(self, index: int | None) -> None:
        """Run the next calls on shape profile ``index`` (an engine holding several: TensorRT), as compare checks
        each profile's edges; None goes back to the first profile that holds each feed's shapes.

        Args:
            index: a profile of the manifest's ``profiles``, or None.
        """
        self._pinned = index

    def describe(self) -> dict[str, Any]:
        """What this engine is and what it runs with.

        Returns:
            dict: backend, precision, engine file, the runtime it runs on, the certified settings, what the runtime
            reports it applied (``running``), the host it was built for, the fallback line (None when the engine
            itself runs), inputs and outputs.
        """
        return {
            "backend": self.manifest["backend"],
            "precision": self.manifest["precision"],
            "engine": self.manifest["engine"],
            "runs_on": self._runtime.name,
            "certified_settings": self.manifest["settings"],
            "running": self._runtime.describe(self._runner),
            "built_for": self.manifest["fingerprint"],
            "fallback": self.fallback,
            "inputs": [vars(s) for s in self.inputs],
            "outputs": [vars(s) for s in self.outputs],
            "dispatch": self.manifest.get("dispatch"),  # which engine serves which batches, or None
        }

    def close(self) -> None:
        """Release the runtime's session or compiled model (every part's, for a folder of several)."""
        for part in self._parts:  # the top engine's own part shares its runner: the first close releases it
            part.engine.close()
        if self._runner.is_active:
            self._runner.deactivate()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def serving(self, batch: int) -> "Engine":
        """The engine that runs a call of ``batch`` samples: this one, or the part whose batch range holds it.

        Args:
            batch: the batch size.

        Returns:
            Engine: the engine a call of that batch runs on.

        Raises:
            EngineError: no part of the folder serves ``batch`` (one line naming the ranges).
        """
        return route(self._parts, batch) if self._parts else self

    def _served(self, feed: Mapping[str, np.ndarray]) -> "Engine":
        """The engine that serves ``feed``'s batch (``serving``)."""
        return self.serving(int(np.asarray(next(iter(feed.values()))).shape[0]))

    def _select_profile(self, feed: Mapping[str, np.ndarray]) -> None:
        """Switch an engine holding several shape profiles to the first that holds ``feed``'s shapes."""
        profiles = self.manifest.get("profiles") or []
        if self.fallback is None and len(profiles) > 1:
            try:
                index = profile_index(profiles, feed) if self._pinned is None else self._pinned
            except PipelineError as e:
                raise EngineError(str(e)) from e
            if index != self._profile:
                self._runtime.set_profile(self._runner, index)
                self._profile = index

"""The fp32 reference run: ONNX Runtime's CPU session on ``model.sim.onnx`` over the eval samples compare uses,
made once per pipeline run by the reference stage and read by every judge after it (the int8 fallback's rounds,
the race's gates, compare), with float32's own floors of its Softmax outputs (``core.floor``).

The folder holds ``reference.json`` (output names, samples, floors, provenance) and one ``<index>.npy`` per output,
whose bytes follow the values alone.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.artifacts import atomic_path, read_json, write_json
from stages.core.errors import PipelineError

RECORD = "reference.json"


@dataclass(frozen=True)
class ReferenceRun:
    """The reference's outputs on the first ``samples`` eval samples, and their float32 floors.

    Attributes:
        outputs: output name -> every sample's output, concatenated in eval order.
        floors: output name -> the smallest atol float32 can honour there (Softmax outputs only).
        samples: how many eval samples were run.
    """

    outputs: dict[str, np.ndarray]
    floors: dict[str, float]
    samples: int

    def first(self, count: int) -> dict[str, np.ndarray]:
        """The outputs on the first ``count`` samples (a judge that runs fewer, in the same order).

        Args:
            count: samples the caller ran, at most ``samples``.

        Returns:
            dict: output name -> its first ``count`` rows.
        """
        if count > self.samples:
            raise PipelineError(f"the reference ran {self.samples} eval samples, not {count}: run `dvc repro`")
        return {name: value[:count] for name, value in self.outputs.items()}


def samples_in(batches: Sequence[Mapping[str, np.ndarray]]) -> int:
    """How many samples ``batches`` (feed dicts) hold."""
    return sum(len(next(iter(batch.values()))) for batch in batches)


def write_reference(
    graph: Path, batches: Sequence[dict[str, np.ndarray]], folder: Path, about: Mapping[str, Any]
) -> ReferenceRun:
    """Run the float32 ``graph`` on ``batches`` once and write the reference folder (atomically).

    Args:
        graph: ``model.sim.onnx``.
        batches: the eval feeds compare runs.
        folder: ``paths.reference``.
        about: provenance recorded beside the outputs (data source, batch size).

    Returns:
        ReferenceRun: what was written.
    """
    from stages.core.floor import reference_and_floors

    outputs, floors = reference_and_floors(graph, batches)
    run = ReferenceRun(outputs, floors, samples_in(batches))
    with atomic_path(folder, directory=True) as tmp:
        for index, value in enumerate(outputs.values()):
            np.save(tmp / f"{index}.npy", np.ascontiguousarray(value), allow_pickle=False)
        record = {"outputs": list(outputs), "samples": run.samples, "floors": floors}
        write_json(tmp / RECORD, record | {"about": dict(about)})
    return run


def read_reference(folder: str | Path) -> ReferenceRun:
    """The reference folder the reference stage wrote.

    Args:
        folder: ``paths.reference``.

    Returns:
        ReferenceRun: its outputs, floors and sample count.
    """
    folder = Path(folder)
    if not (folder / RECORD).is_file():
        raise PipelineError(f"{folder} holds no reference run: run `dvc repro`")
    record = read_json(folder / RECORD)
    outputs = {name: np.load(folder / f"{i}.npy", allow_pickle=False) for i, name in enumerate(record["outputs"])}
    return ReferenceRun(outputs, {k: float(v) for k, v in record["floors"].items()}, int(record["samples"]))

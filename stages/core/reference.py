"""The fp32 reference run: ONNX Runtime's CPU session on ``model.sim.onnx`` over the whole eval split, made once
per pipeline run by the reference stage and read by every judge after it (the int8 fallback's rounds, the race's
gates, compare: each takes the first samples it runs, in order), with float32's own floors of its Softmax outputs
(``core.floor``).

The folder holds ``reference.json`` (output names, samples, floors, the eval inputs' digest, provenance) and one
``<index>.npy`` per output, whose bytes follow the values alone.
"""

import hashlib
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
    inputs_sha256: str = ""

    def check(self, data: Mapping[str, np.ndarray], names: Sequence[str]) -> None:
        """Refuse in one line a reference made from other eval inputs than ``data`` (a stage run by hand after the
        eval data changed): the judges would compare outputs of different samples.

        Args:
            data: the eval split as the judge loaded it.
            names: the model's input names.
        """
        if inputs_digest(data, names) != self.inputs_sha256:
            raise PipelineError("the reference run was made from other eval data: run `dvc repro`")

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


def inputs_digest(data: Mapping[str, np.ndarray], names: Sequence[str]) -> str:
    """sha256 of the eval split's model inputs (each name, dtype, shape and bytes, in input order).

    Args:
        data: array name -> array (other arrays, such as labels, are left out).
        names: the model's input names.

    Returns:
        str: the hex digest.
    """
    digest = hashlib.sha256()
    for name in names:
        array = np.ascontiguousarray(data[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode() + array.tobytes())
    return digest.hexdigest()


def samples_in(batches: Sequence[Mapping[str, np.ndarray]]) -> int:
    """How many samples ``batches`` (feed dicts) hold."""
    return sum(len(next(iter(batch.values()))) for batch in batches)


def write_reference(
    graph: Path, batches: Sequence[dict[str, np.ndarray]], digest: str, folder: Path, about: Mapping[str, Any]
) -> ReferenceRun:
    """Run the float32 ``graph`` on ``batches`` once and write the reference folder (atomically).

    Args:
        graph: ``model.sim.onnx``.
        batches: the whole eval split in feeds.
        digest: ``inputs_digest`` of the split.
        folder: ``paths.reference``.
        about: provenance recorded beside the outputs (data source, batch size).

    Returns:
        ReferenceRun: what was written.
    """
    from stages.core.floor import reference_and_floors

    outputs, floors = reference_and_floors(graph, batches)
    run = ReferenceRun(outputs, floors, samples_in(batches), digest)
    with atomic_path(folder, directory=True) as tmp:
        for index, value in enumerate(outputs.values()):
            np.save(tmp / f"{index}.npy", np.ascontiguousarray(value), allow_pickle=False)
        record = {"outputs": list(outputs), "samples": run.samples, "floors": floors, "inputs_sha256": digest}
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
    floors = {k: float(v) for k, v in record["floors"].items()}
    return ReferenceRun(outputs, floors, int(record["samples"]), str(record.get("inputs_sha256", "")))

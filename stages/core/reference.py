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
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.artifacts import atomic_path, read_json, write_json
from stages.core.batches import feeds
from stages.core.errors import PipelineError
from stages.core.specs import input_specs

if TYPE_CHECKING:
    from omegaconf import DictConfig

RECORD = "reference.json"


@dataclass(frozen=True)
class Scales:
    """What an output's tolerance scales with, from the reference run on the whole eval split.

    Attributes:
        floors: output name -> the smallest atol float32 can honour there (Softmax outputs only).
        spreads: output name -> the standard deviation of the reference's output (the scale its model gives it).
    """

    floors: dict[str, float]
    spreads: dict[str, float]


@dataclass(frozen=True)
class ReferenceRun:
    """The reference's outputs on the first ``samples`` eval samples, and their float32 floors.

    Attributes:
        outputs: output name -> every sample's output, concatenated in eval order.
        floors: output name -> the smallest atol float32 can honour there (Softmax outputs only).
        samples: how many eval samples were run.
        inputs_sha256: ``inputs_digest`` of the eval inputs it ran (the judges check theirs against it).
    """

    outputs: dict[str, np.ndarray]
    floors: dict[str, float]
    samples: int
    inputs_sha256: str = ""

    @property
    def scales(self) -> Scales:
        """The floors, and each output's spread over every sample the reference ran (every judge reads the same)."""
        spreads = {name: float(np.std(value.astype(np.float64))) for name, value in self.outputs.items()}
        return Scales(self.floors, spreads)

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

    def judged(
        self, model: "DictConfig", data: Mapping[str, np.ndarray], batch_size: int, limit: int = 0, least: int = 1
    ) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """What a judge runs and compares: the eval feeds of the first ``limit`` samples (0: every sample the
        reference ran) at ``batch_size``, and the reference's outputs on exactly those samples. Refused in one line
        where the reference was made from other eval inputs than ``data`` (a stage run by hand after they changed).

        Args:
            model: the model's config section (its inputs).
            data: the eval split as the judge loaded it.
            batch_size: samples per feed.
            limit: the samples to judge (0: all the reference ran).
            least: the smallest batch the judged engine serves (its range's first): a shorter last feed is left
                out, as the engine would never be given it (a TensorRT profile refuses it).

        Returns:
            tuple: the feeds, and output name -> the reference's outputs on them, concatenated.
        """
        if inputs_digest(model, data) != self.inputs_sha256:
            raise PipelineError("the reference run was made from other eval data: run `dvc repro`")
        batches = feeds(model, dict(data), batch_size, limit=min(limit, self.samples) if limit else self.samples)
        if len(batches) > 1 and samples_in(batches[-1:]) < least:
            batches = batches[:-1]
        return batches, self.first(samples_in(batches))


def inputs_digest(model: "DictConfig", data: Mapping[str, np.ndarray]) -> str:
    """sha256 of the eval split's model inputs (each name, dtype, shape and bytes, in input order).

    Args:
        model: the model's config section (its inputs).
        data: array name -> array (other arrays, such as labels, are left out).

    Returns:
        str: the hex digest.
    """
    digest = hashlib.sha256()
    for spec in input_specs(model):
        array = np.ascontiguousarray(data[spec.name])
        digest.update(f"{spec.name}:{array.dtype.str}:{array.shape}".encode() + array.tobytes())
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

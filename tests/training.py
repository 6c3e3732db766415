"""Test helpers for the training records committed beside the built-in models' weights (``engineforge.train``
writes them): which record is committed, and where a retraining must reproduce it bit for bit."""

from typing import Any

from engineforge.train import WEIGHTS
from stages.core.artifacts import read_json
from stages.core.device import cpu_kind


def same_training_kind(record: dict[str, Any], torch_version: str, cpu: dict[str, Any]) -> bool:
    """Whether a retraining here must give the recorded weights bit for bit: same torch, same kind of CPU.

    Args:
        record: a ``<name>.json`` training record.
        torch_version: the installed torch's version.
        cpu: this machine's ``cpu_fingerprint()``.

    Returns:
        True where bit-for-bit equality is the guarantee; False where only ``engineforge.train.FLOOR`` is.
    """
    return record["torch"] == torch_version and cpu_kind(record["trained_on"]) == cpu_kind(cpu)


def committed_record(name: str) -> dict[str, Any]:
    """The training record committed beside model ``name``'s weights.

    Args:
        name: one of ``engineforge.train.MODELS``.

    Returns:
        dict: ``models/weights/<name>.json``'s content (sha256, top1, torch, trained_on).
    """
    return read_json(WEIGHTS / f"{name}.json")

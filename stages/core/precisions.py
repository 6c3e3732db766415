"""The precisions a graph can be written at, and ``precision=auto``: each of them a candidate with its own option
(conf/precision/<name>.yaml composed under ``precision.candidates``). Plain data only: the env stage imports it."""

from collections.abc import Mapping
from typing import Any

from stages.core.errors import PipelineError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
AUTO = "auto"


def names(name: str) -> tuple[str, ...]:
    """The precisions ``precision.name=name`` races: itself, or every precision for ``auto``.

    Args:
        name: ``precision.name``.

    Returns:
        tuple[str, ...]: one precision, or all of them in order.
    """
    if name == AUTO:
        return PRECISIONS
    if name not in PRECISIONS:
        raise PipelineError(f"precision.name: {name!r} is not one of {', '.join([*PRECISIONS, AUTO])}")
    return (name,)


def options(precision: Mapping[str, Any]) -> dict[str, Any]:
    """Precision -> its option (tolerance, task budget and own settings) for the ``precision`` config group.

    Args:
        precision: the ``precision`` group (``cfg.precision``).

    Returns:
        dict: ``{name: precision}``, or for ``auto`` each candidate's own option.
    """
    if names(precision["name"]) == PRECISIONS and precision["name"] == AUTO:
        return dict(precision["candidates"])
    return {precision["name"]: precision}

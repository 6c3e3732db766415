"""dvc.yaml as the stages read it: a stage's definition and the params it declares (a stage sees only those)."""

import os
from pathlib import Path
from typing import Any

import yaml

from stages.core.errors import PipelineError
from stages.core.fleet import split_stage

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"


def definition(stage: str, dvc_file: str | os.PathLike[str] = DVC_FILE) -> dict[str, Any]:
    """``stage``'s entry in dvc.yaml (``build@avx2``: the ``build`` entry, a ``foreach``).

    Args:
        stage: the stage's name as DVC prints it.
        dvc_file: the pipeline file.

    Returns:
        dict: the entry.
    """
    try:
        found = yaml.safe_load(Path(dvc_file).read_text(encoding="utf-8"))["stages"][split_stage(stage)[0]]
    except (OSError, KeyError, TypeError) as e:
        raise PipelineError(f"{dvc_file} has no stage {stage!r}: run from the repository root") from e
    return dict(found)


def declared_params(stage: str, dvc_file: str | os.PathLike[str] = DVC_FILE) -> list[str]:
    """The params.yaml keys that ``stage`` declares in dvc.yaml (for ``build@avx2``, its ``foreach`` body's, with
    ``${key}`` read as ``avx2``).

    Args:
        stage: the stage's name as DVC prints it.
        dvc_file: the pipeline file.

    Returns:
        list[str]: dotted keys, in dvc.yaml's order.
    """
    target, found = split_stage(stage)[1], definition(stage, dvc_file)
    keys: list[str] = []
    for entry in found.get("do", found).get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
        else:
            keys += [k for file, ks in entry.items() if file == PARAMS_FILE for k in ks]
    return [key.replace("${key}", target or "${key}") for key in keys]

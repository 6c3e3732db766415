"""Check ``-S`` overrides against conf/, then hand them to ``dvc exp run``: a typo costs one line, not a run.

    python -m engineforge.run -S precision=int8            # checks, then: dvc exp run -S precision=int8
    python -m engineforge.run --check -S model=custom ...   # checks only

``dvc exp run -S`` composes conf/ the same way, but a wrong option or key ends there in Hydra's multi-line message
and exit code 255, and a wrong type or an unset value only when a stage reads it. Here each is one line naming the
key, what was given and what is valid (the options of a group, the keys of a node, the type conf/ uses), exit 1.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from stages.core.errors import PipelineError, first_line
from stages.core.run import compose, plain
from stages.core.schema import check_types, expected

SET = ("-S", "--set-param")
NEEDS = {"factory": ("code", "factory", "weights"), "onnx": ("path",)}  # model.source -> model keys it needs


def split_overrides(argv: list[str]) -> list[str]:
    """The values of every ``-S``/``--set-param`` in ``argv`` (``-S x``, ``-S=x``, ``--set-param=x``)."""
    found, args = [], iter(argv)
    for arg in args:
        if arg in SET:
            found.append(next(args, ""))
        elif arg.startswith(tuple(f"{s}=" for s in SET)):
            found.append(arg.split("=", 1)[1])
    return found


def explain(overrides: list[str], conf_dir: Path) -> PipelineError:
    """The first override that breaks composition, as one line naming the key and what would be valid."""
    for i, override in enumerate(overrides):
        try:
            compose(*overrides[: i + 1], config_dir=conf_dir)
            continue
        except Exception as e:  # Hydra's and OmegaConf's exception types
            detail = first_line(e)
        key, _, value = override.lstrip("+~").partition("=")
        if (conf_dir / key).is_dir():
            options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
            return PipelineError(f"{key}={value}: no option {value!r} in conf/{key}/; options: {', '.join(options)}")
        parent_key, _, leaf = key.rpartition(".")
        parent: Any = OmegaConf.select(compose(*overrides[:i], config_dir=conf_dir), parent_key) if parent_key else None
        if parent is not None and OmegaConf.is_dict(parent) and leaf not in parent:
            return PipelineError(
                f"{key}: no such key; keys of {parent_key}: {', '.join(parent)} (a new key needs +{key}=...)"
            )
        owner = expected(str(conf_dir.resolve())).get(key)
        if owner is not None:
            return PipelineError(
                f"{key}: not a key of the chosen options; {owner[1]} has it (choose that option first)"
            )
        return PipelineError(f"{override}: {detail}")
    return PipelineError(f"{' '.join(overrides)}: the overrides do not compose")


def check(overrides: list[str], conf_dir: str | Path = "conf") -> None:
    """Compose ``conf_dir`` with ``overrides`` as `dvc exp run` will; any problem is a PipelineError."""
    conf_dir = Path(conf_dir)
    try:
        cfg = compose(*overrides, config_dir=conf_dir)
    except Exception as e:  # Hydra's and OmegaConf's exception types
        raise explain(overrides, conf_dir) from e
    check_types(plain(cfg), conf_dir=str(conf_dir))
    for key in NEEDS.get(cfg.model.source, ()):
        if cfg.model[key] is None:
            raise PipelineError(
                f"model.{key} is not set (model.source={cfg.model.source}): set it with -S model.{key}=..."
            )


def main(argv: list[str]) -> int:
    """Check the overrides in ``argv``; unless ``--check``, run ``dvc exp run`` with ``argv`` and return its code."""
    only_check = "--check" in argv
    argv = [a for a in argv if a != "--check"]
    try:
        check(split_overrides(argv))
    except PipelineError as e:
        print(f"engineforge run: error: {e}", file=sys.stderr)
        return 1
    if only_check:
        print("engineforge run: configuration OK")
        return 0
    try:
        command = dvc_command("exp", "run", *argv)
    except PipelineError as e:
        print(f"engineforge run: error: {e}", file=sys.stderr)
        return 1
    return subprocess.call(command, env=os.environ | {"PATH": with_interpreter_path()})


def with_interpreter_path() -> str:
    """PATH with this interpreter's folder first: the stages' ``python -m stages...`` commands then run in the
    environment engineforge is installed in, even when it is not activated."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def dvc_command(*args: str) -> list[str]:
    """``python -m dvc ARGS`` with this interpreter, so DVC need not be on PATH.

    Raises:
        PipelineError: DVC is not installed in this interpreter's environment.
    """
    if importlib.util.find_spec("dvc") is None:
        raise PipelineError(
            f"DVC is not installed for {sys.executable}: run `make setup` and use .venv/bin/python -m engineforge.run"
        )
    return [sys.executable, "-m", "dvc", *args]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

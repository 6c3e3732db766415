"""Running a stage: load the parameters the stage declares in dvc.yaml, run ``main(cfg)``, report one line.

A stage sees only the keys it lists under ``params:`` in dvc.yaml (read-only, struct mode), so DVC's record of
what a stage depends on and what the code actually reads cannot drift apart.
"""

import copy
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from stages.core.dvcfile import DVC_FILE, PARAMS_FILE, declared_params, definition
from stages.core.errors import PipelineError
from stages.core.fleet import SEPARATOR, check_machine, default_target, per_target, retarget, split_stage
from stages.core.resources import cost_line
from stages.core.schema import check_types

if TYPE_CHECKING:
    from omegaconf import DictConfig

PLAIN_STAGES = ("env",)  # stages whose main takes a plain dict: no OmegaConf import on every `dvc repro`


def select(tree: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    """A nested dict holding only ``keys`` (dotted paths) of ``tree``.

    Args:
        tree: the whole config as plain data.
        keys: the dotted keys to keep.

    Returns:
        dict[str, Any]: the subset, nested as in ``tree``.
    """
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = tree
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise PipelineError(f"{PARAMS_FILE} has no key {key!r}: recompose it with `dvc exp run`")
            node = node[part]
        *parents, leaf = key.split(".")
        target = out
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = copy.deepcopy(node)
    return out


def load_params(stage: str, params_file: str = PARAMS_FILE, dvc_file: str = DVC_FILE, plain: bool | None = None) -> Any:
    """Load ``params_file`` restricted to what ``stage`` declares in ``dvc_file``.

    Args:
        stage: the stage's name in dvc.yaml.
        params_file: params.yaml.
        dvc_file: dvc.yaml.
        plain: return a dict; None = as the stage takes it (``PLAIN_STAGES``: the env stage, which runs on every
            `dvc repro`, imports no OmegaConf).

    Returns:
        DictConfig | dict: read-only and in struct mode unless ``plain``, checked against conf/'s types.

    Raises:
        PipelineError: params.yaml is missing, or a value has the wrong type or is unset.
    """
    try:
        tree = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    except OSError as e:
        raise PipelineError(
            f"missing {params_file}: run from the repository root (or `dvc exp run` to compose it)"
        ) from e
    return stage_config(stage, tree or {}, dvc_file, plain)


def stage_config(
    stage: str, tree: Mapping[str, Any], dvc_file: str | os.PathLike[str] = DVC_FILE, plain: bool | None = None
) -> Any:
    """What ``stage``'s ``main`` gets from the whole config ``tree``: the keys it declares in dvc.yaml, type-checked,
    read-only. The one way a stage's params are made, for ``python -m stages.<name>``, commands and tests alike.

    Args:
        stage: the stage's name in dvc.yaml, with ``@<target>`` for one fleet target's (the default target's
            without).
        tree: the whole config as plain data (params.yaml's content, or a composed config made plain).
        dvc_file: dvc.yaml.
        plain: a dict instead of a DictConfig; None = as the stage takes it (``PLAIN_STAGES``).

    Returns:
        DictConfig | dict: the stage's params.
    """
    base, target = split_stage(stage)
    if per_target(definition(stage, dvc_file)):  # a target's stage reads its target's paths (unnamed: the default's)
        target = target or default_target(tree)
        tree = retarget(tree, target)
        stage = f"{base}{SEPARATOR}{target}"
    chosen = select(tree, declared_params(stage, dvc_file))
    check_types(chosen)
    return chosen if (base in PLAIN_STAGES if plain is None else plain) else frozen(chosen)


def frozen(tree: Mapping[str, Any]) -> "DictConfig":
    """``tree`` as a read-only, struct-mode DictConfig: a stage reading an undeclared key fails loudly.

    Args:
        tree: plain data.

    Returns:
        DictConfig: read-only and in struct mode.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(dict(tree))
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def compose(*overrides: str, config_dir: str | os.PathLike[str] = "conf") -> "DictConfig":
    """Compose ``config_dir`` with Hydra overrides and resolve it, as `dvc exp run -S ...` writes params.yaml.

    Args:
        overrides: Hydra overrides (``precision=int8``, ``benchmark.rounds=3``).
        config_dir: the folder holding ``config.yaml``.

    Returns:
        DictConfig: the resolved config.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def plain(cfg: Any) -> dict[str, Any]:
    """A config (DictConfig, or a dict holding configs) as plain, resolved dicts and lists.

    Args:
        cfg: a composed config or any part of it that is a mapping.

    Returns:
        The same tree with no OmegaConf containers left.
    """
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg, resolve=True)
    if not isinstance(tree, dict):
        raise TypeError(f"expected a mapping, got {type(tree).__name__}")
    return {str(k): v for k, v in tree.items()}


def quiet_libraries() -> None:
    """Keep library chatter (exporter progress, deprecation notes) out of the stage's one-line log.

    Call again after importing torch: its logging set-up on import resets the levels of its loggers.
    """
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    for name in ("torch", "torch.onnx", "torch.onnx._internal.exporter._registration", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_onnxruntime() -> None:
    """ONNX Runtime's default logger at errors only: sessions made inside other libraries (the calibrator, the
    quantizer, Polygraphy's runners) would print warnings such as "Removing initializer … not used" otherwise."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)


def run_stage(name: str, main: Callable[[Any], str], facts: Callable[[], Mapping[str, Any]] | None = None) -> None:
    """Entry point of ``python -m stages.<name> [<target>]``: one line on success, one line and exit 1 on a user
    error. dvc.yaml gives a per-target stage its target as the one argument.

    Args:
        name: the stage's name in dvc.yaml.
        main: the stage's function; it gets the stage's params (``stage_config``) and returns the line to print.
        facts: for a stage that runs engines here, this machine's facts: it stops in one line, before ``main``,
            on a machine its target's ``match`` and ``env`` do not fit.
    """
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    quiet_libraries()
    if name not in PLAIN_STAGES:  # the env stage, on every `dvc repro`, does not import onnxruntime
        quiet_onnxruntime()
    if len(sys.argv) > 1:
        name = f"{name}{SEPARATOR}{sys.argv[1]}"
    try:
        cfg = load_params(name)
        if facts is not None:  # the one target this stage runs for (none for a shared stage)
            for target, declaration in cfg.get("fleet", {}).get("targets", {}).items():
                check_machine(target, declaration, facts)
        message = main(cfg)
    except PipelineError as e:
        print(f"engineforge {name}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"engineforge {name}: interrupted", file=sys.stderr)
        sys.exit(130)
    print(f"engineforge {name}: {message} [{cost_line()}]", flush=True)

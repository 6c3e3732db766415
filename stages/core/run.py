"""Running a stage: load the parameters the stage declares in dvc.yaml, run ``main(cfg)``, report one line.

A stage sees only the keys it lists under ``params:`` in dvc.yaml (read-only, struct mode), so DVC's record of
what a stage depends on and what the code actually reads cannot drift apart.
"""

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from stages.core.errors import PipelineError

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"


def declared_params(stage: str, dvc_file: str | os.PathLike[str] = DVC_FILE) -> list[str]:
    """The params.yaml keys that ``stage`` declares in dvc.yaml."""
    try:
        stages = yaml.safe_load(Path(dvc_file).read_text(encoding="utf-8"))["stages"]
        entries = stages[stage].get("params", [])
    except (OSError, KeyError, TypeError) as e:
        raise PipelineError(f"{dvc_file} has no stage {stage!r}: run from the repository root") from e
    keys: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            keys.append(entry)
        else:
            keys += [k for file, ks in entry.items() if file == PARAMS_FILE for k in ks]
    return keys


def select(cfg: DictConfig, keys: list[str]) -> DictConfig:
    """A read-only config holding only ``keys`` (dotted paths) of ``cfg``."""
    out = OmegaConf.create({})
    for key in keys:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        if value is None and OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise PipelineError(f"{PARAMS_FILE} has no key {key!r}: recompose it with `dvc exp run`")
        OmegaConf.update(out, key, value, force_add=True)
    OmegaConf.set_struct(out, True)
    OmegaConf.set_readonly(out, True)
    return out


def load_params(stage: str, params_file: str = PARAMS_FILE, dvc_file: str = DVC_FILE) -> DictConfig:
    """Load ``params_file`` restricted to what ``stage`` declares in ``dvc_file``."""
    if not Path(params_file).is_file():
        raise PipelineError(f"missing {params_file}: run from the repository root (or `dvc exp run` to compose it)")
    return select(OmegaConf.load(params_file), declared_params(stage, dvc_file))


def compose(*overrides: str, config_dir: str | os.PathLike[str] = "conf") -> DictConfig:
    """Compose ``config_dir`` with Hydra overrides and resolve it, as `dvc exp run -S ...` writes params.yaml."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def quiet_libraries() -> None:
    """Keep library chatter (exporter progress, deprecation notes) out of the stage's one-line log.

    Call again after importing torch: its logging set-up on import resets the levels of its loggers.
    """
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    for name in ("torch", "torch.onnx", "torch.onnx._internal.exporter._registration", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_stage(name: str, main: Callable[[DictConfig], str]) -> None:
    """Entry point of ``python -m stages.<name>``: one line on success, one line and exit 1 on a user error."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    quiet_libraries()
    start = time.perf_counter()
    try:
        message = main(load_params(name))
    except PipelineError as e:
        print(f"engineforge {name}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"engineforge {name}: interrupted", file=sys.stderr)
        sys.exit(130)
    print(f"engineforge {name}: {message} [{time.perf_counter() - start:.1f}s]", flush=True)

"""Test helpers: config composition like DVC's, copying the repo, running commands, readable skips."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from omegaconf import DictConfig, OmegaConf

from stages.core.run import compose as run_compose
from stages.runtime import records, registry
from stages.runtime.base import Backend

ROOT = Path(__file__).resolve().parents[1]
# dvc.yaml's stages in pipeline order (the per-target ones as dvc.yaml defines them: build, not build@local).
STAGES = [
    "env",
    "export",
    "simplify",
    "reference",
    "precision",
    "build",
    "compare",
    "benchmark",
    "deploy",
    "report",
    "fleet",
]
# `dvc exp run` overrides that keep an end-to-end run's benchmark short.
QUICK = [
    "-S",
    "benchmark.duration_s=0.3",
    "-S",
    "benchmark.warmup_ms=20",
    "-S",
    "benchmark.rounds=1",
    "-S",
    "backend.tune_s=2",
    "-S",
    "backend.race.duration_s=0.2",
    "-S",
    "backend.race.rounds=1",
    "-S",
    "backend.race.warmup_ms=20",
    "-S",
    "backend.race.samples=64",
]
# PyTorch forced onto other kernels than this CPU's best (ATen's baseline, oneDNN and MKL at SSE4): float results
# move in their last bits as on another kind of CPU, which no test machine can be switched to.
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
# Benchmark overrides for tests that need the stage's outputs, not its numbers.
AUTO = registry.candidates("auto")[0][0]  # the first backend backend=auto races on this machine
FAST_BENCH = (
    "backend.tune_s=1",
    "backend.race.duration_s=0.1",
    "backend.race.rounds=1",
    "backend.race.warmup_ms=5",
    "backend.race.min_iterations=2",
    "backend.race.samples=64",
    "benchmark.duration_s=0.05",
    "benchmark.warmup_ms=5",
    "benchmark.min_iterations=4",
    "benchmark.rounds=2",
)


def compose(*overrides: str, config_dir: Path = ROOT / "conf") -> DictConfig:
    """Compose conf/ with Hydra overrides and resolve it, exactly as `dvc exp run -S ...` writes params.yaml."""
    return run_compose(*overrides, config_dir=config_dir)


def copy_repo(dest: Path) -> Path:
    """Copy the project's files (tracked, or untracked but not ignored) into ``dest``; no build/ or caches."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def add_fixture_model(root: Path, name: str) -> None:
    """Make tests/fixtures/<name>.yaml a model option of the repo copy at ``root``; write its weights if it has
    a weights file of its own (seeded ``build()`` state)."""
    import torch

    (root / f"conf/model/{name}.yaml").write_text((ROOT / f"tests/fixtures/{name}.yaml").read_text())
    weights = OmegaConf.load(root / f"conf/model/{name}.yaml").weights
    if weights.endswith(".pt"):
        spec = importlib.util.spec_from_file_location(f"fixture_{name}", ROOT / f"tests/fixtures/{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.manual_seed(0)
        (root / weights).parent.mkdir(parents=True, exist_ok=True)
        torch.save(module.build().state_dict(), root / weights)


def env_record(backend: Backend, cfg: DictConfig, fingerprint: bool = True) -> dict:
    """The record the env stage writes to env.json's candidates for ``backend`` under ``cfg``: its name,
    capabilities, own settings and tuning budget (``records.engine_settings``), and (where it runs here) its
    fingerprint."""
    record = {"backend": backend.name, "capabilities": backend.capabilities.record()}
    record["code"] = records.code_digest(backend.name)
    record |= records.engine_settings(backend, OmegaConf.to_container(cfg.backend, resolve=True))
    return record | ({"fingerprint": backend.fingerprint()} if fingerprint else {})


def run_stage(module: ModuleType, cfg: DictConfig) -> str:
    """Call a stage's main() with only the params it declares in dvc.yaml (as `python -m` would)."""
    from stages.core.run import plain, stage_config

    return module.main(stage_config(module.__name__.rsplit(".", 1)[1], plain(cfg)))


def ran_stages(output: str, target: str = "local") -> list[str]:
    """The stages DVC ran (not skipped, not restored), from its own output; ``<stage>@<target>`` of the default
    fleet's one target reads ``<stage>``."""
    return [name.removesuffix(f"@{target}") for name in re.findall(r"Running stage '([\w@.-]+)'", output)]


def run(
    args: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command with the test environment (plus ``env``); on an unexpected exit code show its output."""
    full = os.environ | (env or {})
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=full)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def python_module(module: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m module`` with this interpreter."""
    return run([sys.executable, "-m", module], cwd, check=check)


def run_if(*, tensorrt: bool = False, gpu: bool = False, backend: str | None = None) -> pytest.MarkDecorator:
    """Skip unless the machine has what the test needs, with a reason a person can act on."""
    reasons = []
    if tensorrt and importlib.util.find_spec("tensorrt") is None:
        reasons.append("TensorRT is not installed (pip install -e '.[tensorrt-cu12]' or '.[tensorrt-cu13]')")
    if gpu and not (shutil.which("nvidia-smi") and os.path.exists("/dev/nvidia0")):
        reasons.append("no NVIDIA GPU visible")
    if backend is not None:
        from stages.runtime import registry

        available = registry.get(backend).availability()
        if not available.ok:
            reasons.append(f"backend {backend} unavailable: {available.reason}")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "runs here")


def write_params(root: Path, *overrides: str) -> DictConfig:
    """Compose ``root``/conf with ``overrides`` into ``root``/params.yaml, as `dvc exp run -S` does; return it."""
    import yaml

    cfg = compose(*overrides, config_dir=root / "conf")
    (root / "params.yaml").write_text(yaml.safe_dump(OmegaConf.to_container(cfg), sort_keys=False))
    return cfg


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single error line of a command that failed as a user error should: exit 1, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def graph_entry(cfg: DictConfig) -> dict:
    """precision.json's record of the one candidate graph of a config pinned to one backend and one precision."""
    from stages.core.artifacts import read_json

    (entry,) = read_json(cfg.paths.precision_report)["candidates"]
    return entry


def only_graph(cfg: DictConfig) -> Path:
    """The one candidate graph the precision stage wrote under ``cfg`` (see ``graph_entry``)."""
    return Path(cfg.paths.precise) / graph_entry(cfg)["file"]


def build_candidate(backend: Backend, cfg: DictConfig, onnx: Path, out: Path, precision: str | None = None) -> dict:
    """Build ``onnx`` with ``backend`` alone into ``out`` as the build stage builds one candidate, with the env.json
    record ``env_record`` gives (its own settings and tuning budget under ``cfg``); the manifest written."""
    from stages.select.candidate import Candidate, build_engine, build_spec

    record = env_record(backend, cfg)
    chosen = Candidate(backend, precision or cfg.precision.name, record)
    spec = build_spec(cfg.model, chosen.precision, cfg.benchmark.batch_sizes, record, Path(cfg.paths.timing_cache))
    return build_engine(chosen, onnx, spec, cfg.model.name, None, out)

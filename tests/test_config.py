"""conf/ composes the way DVC composes it; params.yaml is its composition; dvc.yaml takes every path from it."""

import json
import re
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from stages.core.dvcfile import declared_params
from stages.core.run import select
from stages.runtime import registry
from tests.helpers import ROOT, STAGES, compose

PER_TARGET = {"env", "precision", "build", "compare", "benchmark", "deploy", "report"}  # foreach over fleet.targets


def test_committed_params_yaml_is_the_composition_of_conf():
    committed = OmegaConf.to_container(OmegaConf.load(ROOT / "params.yaml"))
    assert committed == OmegaConf.to_container(compose()), "recompose with `make params`"


def test_overrides_compose_like_dvc_exp_run_set_param():
    cfg = compose("model=textenc", "benchmark.batch_sizes=[1,8]", "backend=onnxruntime")
    assert cfg.model.name == "textenc"
    assert [i.name for i in cfg.model.inputs] == ["input_ids", "attention_mask"]
    assert list(cfg.benchmark.batch_sizes) == [1, 8]
    assert cfg.backend.name == "onnxruntime"
    assert cfg.paths.onnx == "build/textenc/export/model.onnx"  # paths follow the model
    assert cfg.paths.precise == "build/textenc/fp32/local/graphs"  # a folder: a graph per candidate, per target


def test_auto_backend_carries_every_backends_settings():
    """Each backend package has its conf option, and auto.yaml composes this repository's sections (so their keys are
    set under auto too; a backend it does not compose races with its own defaults: tests/test_race.py's toy)."""
    auto = compose("backend=auto").backend
    options = {p.stem for p in (ROOT / "conf/backend").glob("*.yaml")} - {"auto"}
    assert auto.name == "auto" and options == set(registry.names()), f"conf/backend/ vs {registry.names()}"
    for name in registry.names():
        assert auto[name] == compose(f"backend={name}").backend[name], f"conf/backend/auto.yaml: add - {name}"


def test_unknown_group_option_is_rejected_by_composition():
    with pytest.raises(ConfigCompositionException, match="precision"):
        compose("precision=int4")


def test_every_yaml_key_in_conf_has_a_comment():
    missing = []
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if re.match(r"^(- )?[\w.-]+:", stripped) and "#" not in line:
                missing.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
    assert not missing, "\n".join(missing)


def test_config_groups_mirror_the_code():
    groups = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()}
    assert {"model", "precision", "backend", "export", "simplify", "compare", "benchmark", "paths"} <= groups
    for model in (ROOT / "conf/model").glob("*.yaml"):
        cfg = compose(f"model={model.stem}")
        if cfg.model.source == "recipe":
            assert Path(ROOT / cfg.model.code).is_file() and Path(ROOT / cfg.model.weights).is_file()


def test_every_runtime_a_benchmark_reports_has_a_colour_and_the_plot_names_none():
    """A backend declares its baseline and colour as data; the latency plot draws a line per runtime its CSVs hold
    (template .dvc/plots/latency.json), so neither dvc.yaml nor the benchmark's defaults list a runtime."""
    plot = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"][0]["${paths.latency}"]
    assert plot == {"template": "latency", "x": "percentile", "y": "latency_ms"}
    assert json.loads((ROOT / ".dvc/plots/latency.json").read_text())["encoding"]["color"]["field"] == "runtime"
    declared = {b.name: {"baseline": b.baseline, "colour": b.colour} for b in registry.importable()}
    colours = registry.palette(declared)
    assert set(colours) == set(registry.runtimes()) and len(set(colours.values())) == len(colours)  # one each
    assert compose().benchmark.baselines == "auto"


def test_dvc_yaml_takes_every_path_from_params():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        for section in ("deps", "outs", "metrics", "plots"):
            for entry in stage.get("do", stage).get(section, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                assert path.startswith(("${paths.", "${model.", "stages/", "pyproject.toml")), (
                    f"{name}.{section}: {path}"
                )
    assert re.search(r"\bbuild/|\breports/", (ROOT / "dvc.yaml").read_text()) is None


def test_each_stage_is_one_module_listed_as_its_own_dependency():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert list(dvc["stages"]) == STAGES
    for name, stage in dvc["stages"].items():
        assert (stage.get("foreach") == "${fleet.targets}") == (name in PER_TARGET), name
        stage = stage.get("do", stage)
        assert stage["cmd"] == f"python -m stages.{name}" + (" ${key}" if name in PER_TARGET else "")
        assert f"stages/{name}.py" in stage["deps"]
        assert (ROOT / f"stages/{name}.py").is_file()


@pytest.mark.parametrize("stage", STAGES)
def test_declared_params_exist(stage):
    for option in ("local", "cpus"):
        cfg = compose(f"fleet={option}")
        for target in cfg.fleet.targets if stage in PER_TARGET else [None]:
            select(cfg, declared_params(f"{stage}@{target}" if target else stage, ROOT / "dvc.yaml"))


def test_hydra_is_enabled_for_dvc():
    assert re.search(r"\[hydra\]\s+enabled = true", (ROOT / ".dvc/config").read_text())


def test_the_latency_plot_draws_a_line_per_runtime_the_benchmark_wrote(tmp_path):
    """`dvc plots show` renders the benchmark's curves with the project's template: one line per runtime found in
    the CSV, a runtime no file of the project names among them."""
    import numpy as np

    from stages.core.timing import write_curves
    from tests.helpers import copy_repo, run

    root = copy_repo(tmp_path)
    latency = compose().paths.latency
    write_curves(str(root / latency), {1: {"engine": np.array([1.0, 2.0]), "toy_default": np.ones(3)}})
    run(["git", "init", "-q"], root)
    shown = json.loads(run(["dvc", "plots", "show", "--json"], root).stdout)["data"][f"{latency}/bs1.csv"][0]
    content = shown["content"]
    assert content["encoding"]["color"]["field"] == "runtime" and content["encoding"]["y"]["field"] == "latency_ms"
    assert {row["runtime"] for row in content["data"]["values"]} == {"engine", "toy_default"}

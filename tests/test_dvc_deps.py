"""dvc.yaml lists every file of this repository a stage's command loads, derived from the code's own imports: a
module DVC does not depend on would change without rerunning the stage. Also: no stage module imports another."""

import ast
import copy
from pathlib import Path

import yaml

from tests.helpers import ROOT


def local_module(name: str) -> Path | None:
    """The file of this repository that module ``name`` is, if it is one of ours."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere (top level or inside functions: lazy imports load too), with the
    packages each import loads on the way (``a.b.c`` loads ``a`` and ``a.b``)."""
    names = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(filter(None, [*parts, module]))
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return {".".join(n.split(".")[:i]) for n in names for i in range(1, len(n.split(".")) + 1)}


def loaded_files(module: str) -> set[Path]:
    """The files of this repository that ``python -m module`` loads, following imports transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = local_module(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += sorted(imported(path))
    return seen


def code_only_docstring(path: Path) -> bool:
    """A package's ``__init__.py`` holding nothing but its docstring changes no behaviour."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in body)


def uncovered(dvc: dict) -> dict[str, list[str]]:
    """Stage -> the files its command loads that none of its deps (a file or a folder above it) covers."""
    missing = {}
    for name, definition in dvc["stages"].items():
        stage = definition.get("do", definition)  # once per fleet target: the foreach body
        module = stage["cmd"].removeprefix("python -m ").split()[0]
        deps = [ROOT / d for d in stage.get("deps", []) if "${" not in d]
        files = sorted(loaded_files(module))
        left = [
            str(f.relative_to(ROOT))
            for f in files
            if not any(f == d or d in f.parents for d in deps)
            and not (f.name == "__init__.py" and code_only_docstring(f))
        ]
        if left:
            missing[name] = left
    return missing


def dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_file_a_stage_loads_is_a_dependency_of_that_stage():
    dvc = dvc_yaml()
    commands = {s.get("do", s)["cmd"] for s in dvc["stages"].values()}
    assert commands >= {"python -m stages.report ${key}", "python -m stages.build ${key}", "python -m stages.fleet"}
    assert uncovered(dvc) == {}


def test_a_removed_dependency_is_found():
    dvc = dvc_yaml()
    assert len(loaded_files("stages.report")) > 3  # the stage, core's modules, the packages on the way
    for stage, dep in (("build", "stages/select"), ("report", "stages/core"), ("benchmark", "stages/benchmark.py")):
        broken = copy.deepcopy(dvc)
        broken["stages"][stage]["do"]["deps"].remove(dep)
        found = uncovered(broken)
        assert list(found) == [stage] and all(f.startswith(dep) for f in found[stage]), found


def test_no_stage_module_imports_another():
    stages = {p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    for name in stages:
        others = {m.split(".")[1] for m in imported(ROOT / "stages" / f"{name}.py") if m.startswith("stages.")}
        assert not (others & stages) - {name}, f"stages/{name}.py imports stages.{(others & stages) - {name}}"


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    """Layers, lowest first: models/ (plain PyTorch recipes), stages/core, stages/runtime (the Backend interface,
    the registry, Engine), stages/backends/<name>/ (one package per backend), stages/select (candidates, the race),
    the stages, the commands (engineforge/). A module imports only from its own layer or below, top level or inside
    a function; a backend package imports no other backend's."""
    stages = {f"stages.{p.stem}" for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    above = {
        "models": ("stages", "engineforge"),
        "stages/core": ("stages.runtime", "stages.backends", "stages.select", *stages, "engineforge"),
        "stages/runtime": ("stages.backends", "stages.select", *stages, "engineforge"),
        "stages/select": (*stages, "engineforge"),
    }
    for package in (ROOT / "stages/backends").iterdir():
        if (package / "__init__.py").is_file():
            others = [f"stages.backends.{p.name}" for p in (ROOT / "stages/backends").iterdir() if p != package]
            above[f"stages/backends/{package.name}"] = ("stages.select", *others, *stages, "engineforge")
    assert {"stages/backends/openvino", "stages/backends/onnxruntime", "stages/backends/tensorrt"} <= set(above)
    for folder, higher in above.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            wrong = sorted(m for m in imported(path) if any(m == h or m.startswith(f"{h}.") for h in higher))
            assert not wrong, f"{path.relative_to(ROOT)} imports {wrong[0]}, a higher layer"


def test_the_coverage_command_takes_the_dag_from_dvc_yaml():
    """Once per model what no precision reaches; per precision the rest, in dvc.yaml's order (reports aside)."""
    from engineforge.coverage import stage_plan

    once, per = stage_plan(str(ROOT / "dvc.yaml"))
    assert once == ["export", "simplify", "reference"]  # reference reads no machine record: every target shares it
    assert per == ["env", "precision", "build", "compare", "benchmark", "deploy"]


def test_no_function_in_stages_is_over_60_lines():
    """Functions a reader takes in at once: every function and method under stages/ is 60 lines at most."""
    long = []
    for path in sorted((ROOT / "stages").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long

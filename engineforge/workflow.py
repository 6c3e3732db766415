"""The GitHub Actions workflow of the fleet (.github/workflows/fleet.yml), made from params.yaml's fleet: a job
for the shared stages, a job per target on the target's runner label, and a collect job (docs/fleet.md)."""

import json
from collections.abc import Mapping
from typing import Any

HEADER = """# Made by `python -m engineforge.fleet workflow` from params.yaml's fleet (conf/fleet/): do not edit by hand.
# shared: the stages every target shares, once. targets: one job per target on its runner label, each building
# only its own engines (`dvc repro` of <stage>@<target>) and pushing the DVC cache and run-cache, never dvc.lock.
# collect: merges the runners' lock entries and reports, pulls, `dvc repro` with every target's env stage keeping its
# runner's record (ENGINEFORGE_COLLECT=1: nothing builds), commits dvc.lock and reports/ (reports/fleet.md). The
# remote is the repository's DVC default remote; its credentials come from the repository's secrets.
"""

SETUP = [
    {"uses": "actions/checkout@v4"},
    {"uses": "actions/setup-python@v5", "with": {"python-version": "3.11"}},
    {"run": "make setup"},
]
ENV = {
    "DVC_NO_ANALYTICS": "1",
    "AWS_ACCESS_KEY_ID": "${{ secrets.AWS_ACCESS_KEY_ID }}",
    "AWS_SECRET_ACCESS_KEY": "${{ secrets.AWS_SECRET_ACCESS_KEY }}",
}
BIN = ".venv/bin/"


def jobs(targets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The workflow's jobs for ``targets`` (name -> runner, env, match)."""
    include = [{"target": name, "runner": t["runner"]} for name, t in targets.items()]  # a label or a list
    shared_runner = include[0]["runner"]
    pull = {"run": f"{BIN}dvc pull --run-cache --allow-missing"}  # a first run finds an empty remote
    return {
        "shared": {
            "runs-on": shared_runner,
            "steps": [*SETUP, pull, {"run": f"{BIN}python -m engineforge.fleet repro --shared"}, push()],
        },
        "targets": {
            "needs": "shared",
            "strategy": {"fail-fast": False, "matrix": {"include": include}},
            "runs-on": "${{ matrix.runner }}",
            "steps": [
                *SETUP,
                pull,
                {"run": f"{BIN}python -m engineforge.fleet repro ${{{{ matrix.target }}}}"},
                push(),
                {"run": f"{BIN}python -m engineforge.fleet pack ${{{{ matrix.target }}}} pack"},
                {
                    "uses": "actions/upload-artifact@v4",
                    "with": {"name": "fleet-${{ matrix.target }}", "path": "pack"},
                },
            ],
        },
        "collect": {
            "needs": "targets",
            "if": "${{ !cancelled() }}",  # a target that failed (its gate) leaves the others' engines to collect
            "runs-on": shared_runner,
            "permissions": {"contents": "write"},
            "steps": [
                *SETUP,
                {"uses": "actions/download-artifact@v4", "with": {"path": "packs", "pattern": "fleet-*"}},
                {"run": f"{BIN}python -m engineforge.fleet collect packs/*"},
                {"run": f"{BIN}dvc pull --run-cache --allow-missing"},
                {"run": f"{BIN}dvc repro", "env": {"ENGINEFORGE_COLLECT": "1"}},  # keep each runner's record
                {
                    "run": "git add dvc.lock reports && git -c user.name=engineforge -c user.email=ci@localhost "
                    'commit -m "fleet: dvc.lock and reports from every target" && git push'
                },
            ],
        },
    }


def push() -> dict[str, str]:
    """The step that shares a job's builds: the DVC cache and run-cache to the remote."""
    return {"run": f"{BIN}dvc push --run-cache"}


def render_workflow(targets: Mapping[str, Mapping[str, Any]]) -> str:
    """fleet.yml's text: JSON-style flow values in YAML (every value quoted, nothing read as a bool or a number).

    Args:
        targets: ``fleet.targets``.

    Returns:
        str: the workflow file.
    """
    lines = [HEADER, "name: fleet", '"on": {"workflow_dispatch": {}, "push": {"branches": ["main"]}}']
    lines.append(f"env: {json.dumps(ENV)}")
    lines.append("jobs:")
    for name, job in jobs(targets).items():
        lines.append(f"  {name}:")
        for key, value in job.items():
            if key == "steps":
                lines.append("    steps:")
                lines += [f"      - {json.dumps(step)}" for step in value]
            else:
                lines.append(f"    {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"

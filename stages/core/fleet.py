"""Fleet targets (conf/fleet/): which target a stage runs for, its paths, and whether this machine is one.

dvc.yaml runs env, precision, build, compare, benchmark, deploy and report once per target (``foreach`` over
``fleet.targets``, stage names ``build@<target>``). params.yaml's per-target paths are the default target's; a stage
run for target X reads X's: ``retarget`` renames the target's folder in every path below ``paths.target`` or
``paths.target_reports`` (and ``paths.machine``). A target's ``match`` lists the fingerprint fields a machine must have to build for it: a
stage that would run on another machine stops in one line naming the first difference (``check_machine``).
"""

import copy
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from stages.core.errors import PipelineError

SEPARATOR = "@"  # DVC's foreach stage names: <stage>@<key>
FOLDERS = ("machine", "target", "target_reports")  # paths.* keys whose last part is the target's name


def split_stage(name: str) -> tuple[str, str | None]:
    """``build@avx2`` -> ``("build", "avx2")``; ``export`` -> ``("export", None)``.

    Args:
        name: a stage name as DVC prints it.

    Returns:
        tuple: the stage's definition in dvc.yaml and the target it runs for, if any.
    """
    stage, _, target = name.partition(SEPARATOR)
    return stage, target or None


def default_target(tree: Mapping[str, Any]) -> str:
    """``fleet.default``, refused in one line unless it names one of ``fleet.targets``.

    Args:
        tree: the whole config as plain data.

    Returns:
        str: the target params.yaml's per-target paths belong to.
    """
    fleet = tree.get("fleet") or {}
    name, targets = fleet.get("default"), fleet.get("targets") or {}
    if name not in targets:
        raise PipelineError(f"fleet.default: {name!r} is not one of fleet.targets ({', '.join(targets) or 'none'})")
    return str(name)


def retarget(tree: Mapping[str, Any], target: str) -> dict[str, Any]:
    """``tree`` with every per-target path naming ``target`` instead of the default target.

    Args:
        tree: the whole config as plain data.
        target: one of ``fleet.targets``.

    Returns:
        dict: a copy; per-target paths are those below ``FOLDERS``.
    """
    targets = (tree.get("fleet") or {}).get("targets") or {}
    if target not in targets:
        raise PipelineError(f"no fleet target {target!r}: fleet.targets has {', '.join(targets) or 'none'}")
    out = copy.deepcopy(dict(tree))
    paths = out.get("paths") or {}
    moves = [(PurePosixPath(paths[k]), PurePosixPath(paths[k]).with_name(target)) for k in FOLDERS if k in paths]
    for key, value in paths.items():
        if not isinstance(value, str):
            continue
        for old, new in moves:
            path = PurePosixPath(value)
            if path == old or old in path.parents:
                paths[key] = str(new / path.relative_to(old))
                break
    return out


def lookup(facts: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` (``cpu.isa_cap``, ``openvino.version``) in nested ``facts``, None where absent."""
    node: Any = facts
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def agrees(wanted: Any, have: Any) -> bool:
    """Whether a machine's value ``have`` meets a target's ``wanted``: a list is met by a list holding all of it, a
    version-like text also by a longer one it begins (``2026.4`` by ``2026.4.1-22982``), anything else by equality
    of text (``none`` stands for an unset field)."""
    if isinstance(wanted, Sequence) and not isinstance(wanted, str):
        return (
            isinstance(have, Sequence)
            and not isinstance(have, str)
            and {str(w) for w in wanted} <= {str(h) for h in have}
        )
    want, got = str(wanted), "none" if have is None else str(have)
    return got == want or (got.startswith(want) and got[len(want)] in ".-+ ")


def shown(value: Any) -> str:
    """A fact as a message shows it: a list as its items, an unset field as ``none``."""
    if value is None:
        return "none"
    return str(value) if isinstance(value, str) or not isinstance(value, Sequence) else " ".join(map(str, value))


def mismatch(match: Mapping[str, Any], facts: Mapping[str, Any]) -> str | None:
    """The first field of ``match`` this machine's ``facts`` does not meet, as one readable clause, else None."""
    for key, wanted in match.items():
        have = lookup(facts, str(key))
        if not agrees(wanted, have):
            return f"{key} is {shown(have)}, the target needs {shown(wanted)}"
    return None


def check_machine(target: str, declaration: Mapping[str, Any], facts: Mapping[str, Any]) -> None:
    """Refuse in one line to build for ``target`` on a machine that is not one of its kind.

    Args:
        target: the target's name.
        declaration: its entry in ``fleet.targets`` (``env``, ``match``; ``runner`` where the stage declares it).
        facts: this machine's (``machine_facts``).

    Raises:
        PipelineError: the first field that differs, and where the target's jobs run.
    """
    problem = mismatch(declaration.get("match") or {}, facts)
    if problem:
        env = " ".join(f"{k}={v}" for k, v in (declaration.get("env") or {}).items())
        runner = declaration.get("runner")
        where = (f"its runner '{runner}'" if runner else "its runners") + (f" with {env}" if env else "")
        raise PipelineError(f"target {target}: this machine is not one: {problem}; run its stages on {where}")


def machine_facts(cpu: Mapping[str, Any], runtimes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a target's ``match`` is checked against: ``cpu.*`` and each runtime's fingerprint under its name.

    Args:
        cpu: a ``device.cpu_fingerprint``.
        runtimes: backend name -> its runtimes.json record (``fingerprint``).

    Returns:
        dict: ``{"cpu": ..., "<backend>": <fingerprint>, ...}``.
    """
    return {"cpu": dict(cpu)} | {name: dict(record["fingerprint"]) for name, record in runtimes.items()}

"""Fleet targets (conf/fleet/): which target a stage runs for, its paths, and whether this machine is one.

dvc.yaml runs env, precision, build, compare, benchmark, deploy and report once per target (``foreach`` over
``fleet.targets``, stage names ``build@<target>``). params.yaml's per-target paths are the default target's; a stage
run for target X reads X's: ``retarget`` renames the target's folder in every path below ``FOLDERS``. A target's
``match`` lists the fingerprint fields a machine must have to build for it, and its ``env`` the variables its jobs
export: a stage that would run on another machine stops in one line naming the first difference (``check_machine``).
"""

import copy
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from stages.core.errors import PipelineError

SEPARATOR = "@"  # DVC's foreach stage names: <stage>@<key>
FOLDERS = ("machine", "target", "target_reports")  # paths.* keys whose last part is the target's name
NAME = re.compile(r"[A-Za-z0-9_-]+")  # a target's name: a path part, a params key, a DVC stage suffix, a glob


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
    for key in targets:
        if not isinstance(key, str) or not NAME.fullmatch(key):
            raise PipelineError(f"fleet.targets: {key!r} is not a target name: use letters, digits, '-' and '_'")
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
    """The value at ``dotted`` in nested ``facts``.

    Args:
        facts: a machine's facts (``machine_facts``).
        dotted: a field, ``cpu.isa_cap`` or ``openvino.version``.

    Returns:
        Any: its value, None where absent.
    """
    node: Any = facts
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def shown(value: Any) -> str:
    """A value as a message and a comparison read it: a list as its items, None as ``none``, a bool in lower case.

    Args:
        value: a fact or a wanted value.

    Returns:
        str: its text.
    """
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, str) or not isinstance(value, Sequence) else " ".join(map(str, value))


def listed(value: Any) -> bool:
    """Whether ``value`` is a list of values (not text)."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def agrees(wanted: Any, have: Any) -> bool:
    """Whether a machine's value ``have`` meets a target's ``wanted``.

    Args:
        wanted: a list (met by a list holding all of it), a text (met by a list holding it, by equal text, or, as a
            version, by a longer text it begins at a ``.``, ``-`` or ``+``: ``2026.4`` by ``2026.4.1-22982``), or
            ``none`` for an unset field.
        have: the machine's value.

    Returns:
        bool: met or not.
    """
    if listed(wanted):
        return listed(have) and {shown(w) for w in wanted} <= {shown(h) for h in have}
    want = shown(wanted)
    if listed(have):
        return want in {shown(h) for h in have}
    got = shown(have)
    return got == want or (got.startswith(want) and got[len(want)] in ".-+")


def mismatch(match: Mapping[str, Any], facts: Mapping[str, Any], env: Mapping[str, Any] | None = None) -> str | None:
    """The first field of ``match`` this machine's ``facts`` does not meet, or variable of ``env`` this process
    does not have, as one readable clause.

    Args:
        match: a target's ``match``.
        facts: this machine's (``machine_facts``).
        env: a target's ``env``; None skips it (a record made elsewhere).

    Returns:
        str | None: the clause, None where the machine is one of the target's kind.
    """
    for key, value in (env or {}).items():
        if os.environ.get(str(key)) != str(value):
            return f"{key} is {os.environ.get(str(key), 'unset')}, the target's jobs export {value}"
    for key, wanted in match.items():
        if isinstance(wanted, Mapping):
            raise PipelineError(f"fleet match {key}: give dotted fields ({key}.<field>: value), not a mapping")
        have = lookup(facts, str(key))
        if not agrees(wanted, have):
            return f"{key} is {shown(have)}, the target needs {shown(wanted)}"
    return None


def check_machine(target: str, declaration: Mapping[str, Any], facts: Callable[[], Mapping[str, Any]]) -> None:
    """Refuse in one line to build for ``target`` on a machine that is not one of its kind.

    Args:
        target: the target's name.
        declaration: its entry in ``fleet.targets`` (``env``, ``match``).
        facts: gives this machine's (``machine_facts``), called only where the target has a ``match``.

    Raises:
        PipelineError: the first field that differs, and what the target's jobs export.
    """
    env, match = declaration.get("env") or {}, declaration.get("match") or {}
    problem = mismatch(match, facts() if match else {}, env)
    if problem:
        exported = " with " + " ".join(f"{k}={v}" for k, v in env.items()) if env else ""
        raise PipelineError(
            f"target {target}: this machine is not one: {problem}; run its stages on its CI runner{exported} "
            f"(python -m engineforge.fleet repro {target})"
        )


def machine_facts(cpu: Mapping[str, Any], runtimes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a target's ``match`` is checked against: ``cpu.*`` and each runtime's fingerprint under its name.

    Args:
        cpu: a ``device.cpu_fingerprint``.
        runtimes: backend name -> its runtimes.json record (``fingerprint``).

    Returns:
        dict: ``{"cpu": ..., "<backend>": <fingerprint>, ...}``.
    """
    return {"cpu": dict(cpu)} | {name: dict(record["fingerprint"]) for name, record in runtimes.items()}


def per_target(definition: Mapping[str, Any]) -> bool:
    """Whether a stage's dvc.yaml definition runs once per fleet target (``foreach``).

    Args:
        definition: the stage's entry in dvc.yaml.

    Returns:
        bool: a ``foreach`` stage.
    """
    return isinstance(definition, Mapping) and "foreach" in definition

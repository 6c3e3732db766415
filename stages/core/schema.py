"""What conf/ says each key may hold, so a wrong type or an unset value is one line naming the key, the value
given and what is expected, before any stage reads it (Hydra itself does not type-check plain YAML configs)."""

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from stages.core.errors import PipelineError

MISSING = "???"  # OmegaConf's mandatory-value marker
OPTIONAL = ("model.data.", "model.files.")  # unset on purpose: fallbacks (docs/models.md)
ANY = "any"  # an interpolation or ???: the type is whatever it resolves to
KINDS = {"null": "null", "bool": "true or false", "int": "an integer", "float": "a number", "str": "text"}


def kind(value: Any) -> str:
    """``null``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``dict`` or ``any`` (interpolation or ???).

    Args:
        value: a config value.

    Returns:
        str: its kind.
    """
    if value is None:
        return "null"
    if isinstance(value, str) and ("${" in value or value == MISSING):
        return ANY
    for name, kinds in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", list)):
        if isinstance(value, kinds):
            return name
    return "dict" if isinstance(value, Mapping) else type(value).__name__


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every node of ``tree``, dicts included (and walked into).

    Args:
        tree: nested mappings.
        prefix: prepended to every key.

    Yields:
        tuple[str, Any]: dotted key and value.
    """
    for key, value in tree.items():
        if key == "defaults" and not prefix:
            continue
        dotted = f"{prefix}{key}"
        yield dotted, value
        if isinstance(value, Mapping):
            yield from leaves(value, f"{dotted}.")


@functools.cache
def expected(conf_dir: str = "conf") -> dict[str, tuple[frozenset[str], str]]:
    """Dotted key -> (the kinds its values have over every option in ``conf_dir``, one file that sets it).

    Args:
        conf_dir: the config folder.

    Returns:
        dict: dotted key -> (kinds, a file that sets it).
    """
    table: dict[str, tuple[set[str], str]] = {}
    root = Path(conf_dir)
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        package = "" if len(rel.parts) == 1 else (rel.stem if rel.parts[0] == "shared" else rel.parts[0]) + "."
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for key, value in leaves(tree, package):
            table.setdefault(key, (set(), str(Path(root.name) / rel)))[0].add(kind(value))
    return {k: (frozenset(v), f) for k, (v, f) in table.items()}


def check_types(tree: Mapping[str, Any], keys: list[str] | None = None, conf_dir: str = "conf") -> None:
    """Each value under ``keys`` (all of ``tree`` if None) must have a kind some option of conf/ gives it, and no
    value but the optional data files may be left unset (???).

    Args:
        tree: the composed config as plain data.
        keys: the dotted keys to check; None checks every key.
        conf_dir: the config folder whose YAML files say which kinds each key takes.

    Raises:
        PipelineError: the first wrong value (its key, the value, what is expected and a file that sets it) or the
            first unset one.
    """
    schema = expected(str(Path(conf_dir).resolve())) if Path(conf_dir).is_dir() else {}
    roots = keys if keys is not None else list(tree)
    for root in roots:
        node: Any = tree
        for part in root.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        pairs = [(root, node), *(leaves(node, f"{root}.") if isinstance(node, Mapping) else [])]
        for key, value in pairs:
            if value == MISSING:
                if not key.startswith(OPTIONAL):
                    raise PipelineError(f"{key} is not set (???): set it with -S {key}=...")
                continue
            if key not in schema or ANY in schema[key][0] or schema[key][0] == {"null"}:
                continue  # unknown to conf/ (Hydra rejects those), an interpolation, or only ever null
            kinds, source = schema[key]
            given = kind(value)
            if given in kinds or (given == "int" and "float" in kinds) or given == ANY:
                continue
            wanted = " or ".join(sorted(KINDS.get(k, f"a {k}") for k in kinds))
            raise PipelineError(f"{key}: {value!r} is {KINDS.get(given, f'a {given}')}, expected {wanted} ({source})")

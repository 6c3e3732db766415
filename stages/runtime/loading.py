"""What ``Engine.open`` does to one engine folder: read its manifest, check the engine file's sha256 and the host it
was built for, and activate its runtime's runner with the certified settings (or, under a fallback, ONNX Runtime's
CPU provider on the bundle's graph). Every failure is one line (``EngineError``)."""

import sys
from pathlib import Path
from typing import Any

from stages.core.errors import PipelineError, first_line
from stages.runtime import registry
from stages.runtime.base import Backend, quiet_polygraphy
from stages.runtime.bundle import EngineError, fallback_graph
from stages.runtime.manifest import MANIFEST, engine_file, host_mismatch, read_manifest

FALLBACKS = {"cpu": registry.REFERENCE}  # Engine.open(fallback=...) -> the backend that runs the bundle's graph


def load(folder: Path, fallback: str | None, name: str) -> tuple[Backend, Any, dict[str, Any], str | None]:
    """Load the engine in ``folder`` as ``Engine.open`` documents.

    Args:
        folder: an engine or deploy folder (one engine: its ``dispatch`` parts are opened by the caller).
        fallback: None, or a key of ``FALLBACKS``.
        name: the runner's name in comparisons.

    Returns:
        tuple: the backend running it, its active runner, the manifest, and the fallback's line (None when the
        engine itself runs).

    Raises:
        EngineError: one line: a missing or altered file, another host's engine (without ``fallback``), a runtime
        that cannot load it.
    """
    if fallback is not None and fallback not in FALLBACKS:
        raise EngineError(f"fallback={fallback!r}: choose None (refuse) or one of {', '.join(FALLBACKS)}")
    quiet_polygraphy()
    try:
        manifest = read_manifest(folder)
        backend = registry.get(manifest["backend"])
        path = engine_file(folder, manifest)
    except EngineError:
        raise
    except PipelineError as e:
        raise EngineError(str(e)) from e
    if "io" not in manifest:
        raise EngineError(f"{folder / 'manifest.json'} predates the engine's I/O record: rebuild with `dvc repro`")
    problem = host_problem(folder, manifest, backend)
    if problem is None:
        return backend, activated(backend, backend.load_runner(manifest, path, name), folder), manifest, None
    if fallback is None:
        raise EngineError(f"{problem}: rebuild it here (`dvc repro`), or open it with fallback='cpu'")
    graph = fallback_graph(folder, manifest)
    runtime = registry.get(FALLBACKS[fallback])
    note = f"{problem}: running its {manifest['precision']} graph {graph.name} on ONNX Runtime's CPU provider"
    print(f"engineforge: {note}", file=sys.stderr)
    return runtime, activated(runtime, runtime.baseline_runner(graph, name), folder), manifest, note


def host_problem(folder: Path, manifest: dict[str, Any], backend: Backend) -> str | None:
    """Why this host cannot run the engine in ``folder``, None where it can.

    Args:
        folder: the engine or deploy folder.
        manifest: its manifest.
        backend: its backend.

    Returns:
        str | None: one line (another host's fingerprint, or the runtime unavailable here), or None.
    """
    available = backend.availability()
    if not available.ok:
        return f"{folder} is a {backend.name} engine and {available.reason}"
    return host_mismatch(folder, manifest, registry.fingerprint(backend.name))


def pick_target(root: Path, fallback: str | None) -> Path:
    """The folder to open for ``root``: ``root`` itself where it holds a manifest, else, on a fleet's deploy root
    (``build/<model>/<precision>/``, each target's ``<target>/deploy/``), the first target (by name) whose engine
    this host runs; with none and a ``fallback``, the first target's, which then runs as the fallback does.

    Args:
        root: an engine or deploy folder, or a deploy root.
        fallback: ``Engine.open``'s.

    Returns:
        Path: the folder to load.

    Raises:
        EngineError: one line naming each target and why it does not fit this host.
    """
    found = sorted(p.parent for p in root.glob(f"*/deploy/{MANIFEST}"))
    if (root / MANIFEST).is_file() or not found:
        return root
    why = {}
    for folder in found:
        try:
            manifest = read_manifest(folder)
            why[folder] = host_problem(folder, manifest, registry.get(manifest["backend"]))
        except (PipelineError, KeyError) as e:
            why[folder] = first_line(e, 120)
        if why[folder] is None:
            return folder
    if fallback is not None:
        return found[0]
    lines = "; ".join(f"{folder.relative_to(root).parts[0]}: {problem}" for folder, problem in why.items())
    raise EngineError(f"{root} holds no engine for this host ({lines})")


def activated(runtime: Backend, runner: Any, folder: Path) -> Any:
    """``runner`` activated, its runtime's own errors turned into one line.

    Args:
        runtime: the backend the runner belongs to.
        runner: a Polygraphy runner, not yet active.
        folder: the engine folder, named in the error.

    Returns:
        the active runner.
    """
    try:
        runner.activate()
    except EngineError:
        raise
    except PipelineError as e:  # a session setting refused in one line (e.g. a provider that does not load)
        raise EngineError(str(e)) from e
    except runtime.runtime_errors() as e:  # each runtime's own types, for a file it cannot load
        raise EngineError(f"{runtime.name} cannot load {folder}: {first_line(e, 200)}") from e
    return runner

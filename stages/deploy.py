"""deploy stage: engine folder + its precision graph + accuracy.json (the gate passed) -> paths.deploy/.

The folder a user copies into a service: the engine file and its manifest (plus the graph's record, for
``Engine.open(folder, fallback="cpu")``), the precision graph, the I/O spec, and a Triton Inference Server model
repository (``triton/<model>/config.pbtxt`` and ``1/<model file>``) carrying the certified settings as far as the
Triton backend can take them. It runs only after compare's gate passed, and ends by opening the folder with
``Engine`` and running it once, as a service would.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stages.core.artifacts import atomic_path, read_json, write_json, write_text
from stages.core.errors import PipelineError
from stages.core.graph_files import copy_graph, files_sha256
from stages.core.profiles import random_feed
from stages.core.run import run_stage
from stages.core.triton import config_text
from stages.runtime import registry
from stages.runtime.dispatch import PRIMARY
from stages.runtime.engine import Engine, fallback_graph
from stages.runtime.manifest import MANIFEST, engine_file, read_manifest
from stages.runtime.records import host_facts

IO_FILE = "io.json"
TRITON = "triton"


def checked_gate(accuracy: dict[str, Any], manifest: dict[str, Any], path: str) -> None:
    """Refuse to deploy an engine whose gate failed or whose accuracy report is about another engine.

    Args:
        accuracy: compare's report.
        manifest: the engine's manifest.
        path: the report's path, for the message.
    """
    if not accuracy.get("passed"):
        raise PipelineError(f"{path}: the accuracy gate failed, nothing is deployed ({accuracy['failures'][0]})")
    if accuracy.get("engine_sha256") != manifest["engine_sha256"]:
        raise PipelineError(f"{path} gated another engine than {manifest['engine']} (sha256): run `dvc repro`")


def smoke_feed(manifest: dict[str, Any]) -> dict[str, Any]:
    """Seeded inputs at the first profile's optimum shapes (every dynamic axis sized by the profile).

    Args:
        manifest: the engine's manifest (``profiles``, ``io``).

    Returns:
        dict: input name -> array.
    """
    profile = manifest["profiles"][0]
    dtypes = {t["name"]: t["dtype"] for t in manifest["io"]["inputs"]}
    return random_feed({name: edges["opt"] for name, edges in profile.items()}, dtypes)


def bundle(source: Path, manifest: dict[str, Any], folder: Path) -> None:
    """Copy one engine of ``source`` into ``folder``: its file, its precision graph (what ``fallback="cpu"`` runs),
    and its manifest recording the graph's copy.

    Args:
        source: the engine folder (or a part's folder).
        manifest: its manifest.
        folder: the deploy folder (or the part's folder in it).
    """
    engine, graph = engine_file(source, manifest), fallback_graph(source, manifest)
    graph_name = f"model.{manifest['precision']}.onnx"
    copy_graph(engine, folder / engine.name)  # with its sidecar (an ONNX Runtime engine past 2 GiB has one)
    copy_graph(graph, folder / graph_name)  # checked against the manifest by fallback_graph
    deployed = manifest | {"graph": {"file": graph_name, "sha256": files_sha256(folder / graph_name)}}
    write_json(folder / MANIFEST, deployed)


def main(cfg: DictConfig) -> str:
    """Write ``paths.deploy`` from the gated engine, then open it as an application would."""
    source = Path(cfg.paths.engine)
    manifest = read_manifest(source)
    checked_gate(read_json(cfg.paths.accuracy), manifest, cfg.paths.accuracy)
    engine, graph = engine_file(source, manifest), fallback_graph(source, manifest)
    backend = registry.get(manifest["backend"])
    name = manifest["model"]
    out = Path(cfg.paths.deploy)
    with atomic_path(out, directory=True) as tmp:
        bundle(source, manifest, tmp)
        for part in manifest.get("dispatch") or []:  # one engine per batch range: each part's own folder
            if part["folder"] != PRIMARY:
                (tmp / part["folder"]).mkdir()
                bundle(source / part["folder"], read_manifest(source / part["folder"]), tmp / part["folder"])
        write_json(tmp / IO_FILE, manifest["io"])
        triton = backend.triton(manifest)  # the top engine's (the largest batch range's): Triton has no dispatch
        version = tmp / TRITON / name / "1"
        version.mkdir(parents=True)
        backend.write_triton_file(triton, manifest, engine, graph, version / triton.file)
        write_text(
            tmp / TRITON / name / "config.pbtxt", config_text(name, triton, manifest["io"], manifest["profiles"])
        )
    with Engine.open(out) as opened:
        for _, part in opened.parts:  # each engine at its own profile's shapes, through the routing a service uses
            opened(smoke_feed(part.manifest))
    what = f"{manifest['backend']} {manifest['precision']} engine"
    if manifest.get("dispatch"):
        what = f"{len(manifest['dispatch'])} engines (one per batch range)"
    return f"{what}, its graph and a Triton repository ({triton.backend}) -> {out}/"


if __name__ == "__main__":
    run_stage("deploy", main, facts=host_facts)

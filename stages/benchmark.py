"""benchmark stage: engine -> paths.benchmark and paths.latency/ (percentile curves for plots).

trtexec semantics: warm up for ``warmup_ms``, then run back to back for at least ``duration_s`` and at least
``min_iterations`` inferences, per batch size; latency statistics from the individual timings, throughput from
the wall time. The measuring time is split into ``rounds`` slices that alternate between the runtimes, so a shared
machine's drift does not favour whichever runtime ran first. The engine is opened with ``Engine.open`` as an
application opens it and timed through ``Engine.timed_call`` (inputs and outputs bound beforehand);
the baselines (what a user would run instead, on the raw fp32 export: eager PyTorch and each CPU runtime's untuned
default session) are measured in the same run, and what each ran with is recorded.
"""

import os
import platform
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from stages.core.artifacts import read_json, write_json
from stages.core.batches import batch_of, check_batch, served_batches
from stages.core.data import load_dataset
from stages.core.graph_files import files_bytes
from stages.core.metrics import EAGER, ENGINE
from stages.core.model import load_model
from stages.core.progress import Progress
from stages.core.resources import resources
from stages.core.run import run_stage
from stages.core.timing import measure, pool, summarize, write_curves
from stages.runtime.base import TimedCall
from stages.runtime.engine import Engine
from stages.runtime.manifest import MANIFEST
from stages.runtime.measured import cold_start, race_agreement, serving, shipped_precisions
from stages.runtime.records import host_facts
from stages.select.baselines import BaselineFailed, Factory, baseline_factory, baseline_names, judge_baselines


def runtimes(cfg: DictConfig, threads: int, notes: dict[str, Any], engine_notes: dict[str, Any]) -> dict[str, Factory]:
    """Name -> factory(stack, feed) of a timed call, for the engine and each configured baseline.

    A baseline other than eager PyTorch is a backend's untuned default on the raw export (``Backend.baseline``);
    what it ran with (its backend's ``describe``) goes into ``notes``, and what the engine's call ran with (its
    ``TimedCall.notes``: a GPU engine's CUDA graph) into ``engine_notes``."""
    manifest = read_json(Path(cfg.paths.engine) / MANIFEST)
    engine_device = manifest["capabilities"]["device"]  # recorded at build (ONNX Runtime: its providers' device)

    def engine(stack: ExitStack, feed: dict) -> TimedCall:
        opened = stack.enter_context(Engine.open(cfg.paths.engine))
        call = opened.timed_call(feed, cfg.benchmark.cuda_graph, cfg.benchmark.no_data_transfers)
        stack.callback(call.close)
        engine_notes.update(call.notes())  # the same at every batch size
        return call

    nets: list[Any] = []  # the eager model, loaded once for every batch size

    def eager(stack: ExitStack, feed: dict) -> TimedCall:
        import torch

        torch.set_num_threads(threads)
        nets[:] = nets or [load_model(cfg.model)]
        on_cuda = engine_device == "cuda" and torch.cuda.is_available()
        device = "cuda" if on_cuda else "cpu"  # the engine's device
        net, tensors = nets[0].to(device), [torch.from_numpy(a).to(device) for a in feed.values()]
        stack.enter_context(torch.inference_mode())
        notes[EAGER] = {"device": device, "threads": threads, "torch": torch.__version__}
        if device == "cuda":  # the same GPU as the engine; wait for it, as the engine's timed call does

            def on_gpu() -> None:
                net(*tensors)
                torch.cuda.synchronize()

            return TimedCall(on_gpu)
        return TimedCall(lambda: net(*tensors))

    factories: dict[str, Factory] = {ENGINE: engine}
    for name in baseline_names(cfg.benchmark.baselines, cfg.paths.runtimes):
        if name == EAGER:
            if cfg.model.source != "onnx":  # an ONNX file has no PyTorch model to run
                factories[name] = eager
        else:
            factories[name] = baseline_factory(cfg, name, notes)
    return factories


def time_all(
    cfg: DictConfig, factories: dict[str, Factory], batches: list[int], notes: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, np.ndarray]]]:
    """Time every runtime at every batch size in interleaved rounds; a baseline whose runtime cannot take the
    model is dropped with its one line in ``notes`` (the benchmark goes on without it).

    Args:
        cfg: the stage's params (``benchmark``, ``model``).
        factories: runtime name -> factory of its timed call (``runtimes``); failed baselines are removed.
        batches: the batch sizes (``served_batches``).
        notes: baseline name -> what it ran with, or ``failed``: its line.

    Returns:
        tuple: runtime -> ``bs<N>`` -> statistics, and batch -> runtime -> pooled latencies (ms).
    """
    bench, data = cfg.benchmark, load_dataset(cfg.model, "test")
    results: dict[str, dict[str, Any]] = {}
    curves: dict[int, dict[str, np.ndarray]] = {}
    rounds, warmup_s = bench.rounds, bench.warmup_ms / 1e3
    share = (bench.duration_s / rounds, -(-bench.min_iterations // rounds))
    with Progress("benchmark", len(batches) * rounds * len(factories), "runs") as progress:
        for batch in batches:
            feed = batch_of(cfg.model, data, batch)
            with ExitStack() as stack:
                calls = {}
                for name, factory in list(factories.items()):
                    try:
                        calls[name] = factory(stack, feed)
                    except BaselineFailed as e:  # at any batch size: the baseline leaves every table
                        notes[name] = {"failed": str(e)}
                        del factories[name]
                        results.pop(name, None)
                        for timed in curves.values():
                            timed.pop(name, None)
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in calls}
                for r in range(rounds):  # interleaved, so drift of a shared machine hits every runtime alike
                    for name, call in calls.items():
                        runs[name].append(measure(call, warmup_s if r == 0 else 0.0, *share))
                        progress.step(f"bs{batch} {name} round {r + 1}/{rounds}")
            for name, parts in runs.items():
                pooled = pool(parts)
                results.setdefault(name, {})[f"bs{batch}"] = summarize(pooled, batch)
                curves.setdefault(batch, {})[name] = pooled["latency_ms"]
    return results, curves


def main(cfg: DictConfig) -> str:
    """Measure every runtime at every batch size; write ``paths.benchmark`` and ``paths.latency``."""
    import onnxruntime
    import torch

    bench, model = cfg.benchmark, cfg.model
    batches = served_batches(model, bench.batch_sizes)
    for batch in batches:
        check_batch(model, batch, "benchmark.batch_sizes")
    manifest = read_json(Path(cfg.paths.engine) / "manifest.json")
    threads = len(os.sched_getaffinity(0))  # eager PyTorch as a user runs it: every core
    notes: dict[str, Any] = {}
    engine_notes: dict[str, Any] = {}
    cold = cold_start(cfg.paths.engine, manifest, batch_of(model, load_dataset(model, "test"), batches[0]))
    results, curves = time_all(cfg, runtimes(cfg, threads, notes, engine_notes), batches, notes)
    write_curves(cfg.paths.latency, curves)
    timed = [n for n in results if n != ENGINE]
    for name, verdicts in judge_baselines(cfg, timed, shipped_precisions(manifest)).items():
        notes.setdefault(name, {})["gate"] = verdicts  # each precision the engine ships: its gate on the baseline
    report = {
        "model": model.name,
        "backend": manifest["backend"],
        "precision": manifest["precision"],
        "threads": threads,
        "settings": OmegaConf.to_container(bench),
        "batch_sizes": batches,  # benchmark.batch_sizes, or the one batch a graph fixes
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "runtimes": results,
        "baselines": notes,
        "engine_settings": manifest["settings"],
        "engine_call": engine_notes,
        "cold_start": cold,
        "serving": serving(manifest, batches),  # which engine serves each batch size
        "race_agreement": race_agreement(manifest, results),  # the race's p50 of the shipped engine beside ours
        "engine_bytes": sum(  # every batch range's engine, each with its sidecar
            files_bytes(where / read_json(where / MANIFEST)["engine"])
            for where in (Path(cfg.paths.engine) / p["folder"] for p in manifest.get("dispatch") or [{"folder": "."}])
        ),
    }
    write_json(cfg.paths.benchmark, report | {"resources": resources()})
    first = f"bs{batches[0]}"
    p50 = {name: r[first]["latency_ms"]["p50"] for name, r in results.items()}
    shown = ", ".join(f"{n} {v:.3f} ms" for n, v in p50.items())
    failed = "".join(f"; {n} could not run the model ({v['failed']})" for n, v in notes.items() if "failed" in v)
    fixed = f" (the graph fixes batch {batches[0]})" if list(batches) != list(bench.batch_sizes) else ""
    return f"p50 at {first}{fixed}: {shown}{failed} -> {cfg.paths.benchmark}"


if __name__ == "__main__":
    run_stage("benchmark", main, facts=host_facts)

"""An outside check of the benchmark: OpenVINO's own ``benchmark_app`` (it ships in the ``openvino`` wheel) on an
OpenVINO engine's graph with the engine's certified settings, its median beside the benchmark stage's p50.

``benchmark_app`` refuses an exported blob with any precision option ("Cannot set precision for a compiled model")
and would import it in OpenVINO's default precision (bf16 on AVX-512 CPUs), so it gets the graph the engine was
built from and the engine's settings: ``-hint none -nthreads N -nstreams S -infer_precision P -api sync``, one
synchronous request at a time as the benchmark stage times it.

    python -m engineforge.outside_check build/resnet18/fp32/local/deploy [--benchmark reports/targets/local/benchmark.json] [--seconds 3]
    python -m engineforge.outside_check build/resnet18/fp32/local/deploy --rounds 3   # both timed here, alternating
"""

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from stages.core.artifacts import read_json
from stages.core.dvcfile import PARAMS_FILE
from stages.core.errors import PipelineError
from stages.runtime.engine import fallback_graph
from stages.runtime.manifest import read_manifest

MEDIAN = re.compile(r"Median:\s+([0-9.]+) (ms|us)")


def command(graph: Path, manifest: dict[str, Any], batch: int, seconds: int) -> list[str]:
    """benchmark_app's command line for ``graph`` at ``batch`` with the engine's settings (every other dynamic
    axis at its profile's optimum).

    Args:
        graph: the precision graph the engine was built from.
        manifest: the engine's manifest.
        batch: the batch size.
        seconds: benchmark_app's ``-t``.

    Returns:
        list[str]: the command.
    """
    settings = manifest["settings"]
    profile = manifest["profiles"][0]
    shapes = ",".join(f"{name}[{','.join(map(str, [batch, *edges['opt'][1:]]))}]" for name, edges in profile.items())
    return [
        shutil.which("benchmark_app") or "benchmark_app",
        *("-m", str(graph), "-d", "CPU", "-api", "sync", "-hint", "none"),
        *("-nthreads", str(settings["inference_num_threads"]), "-nstreams", str(settings["num_streams"])),
        *("-infer_precision", str(settings["inference_precision"]), "-data_shape", shapes, "-t", str(seconds)),
    ]


def median_ms(args: list[str]) -> float:
    """Run benchmark_app and read its median latency.

    Args:
        args: its command line.

    Returns:
        float: the median in ms.
    """
    proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    found = MEDIAN.search(proc.stdout)
    if proc.returncode or not found:
        raise PipelineError(f"benchmark_app failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-300:]}")
    return float(found.group(1)) / (1e3 if found.group(2) == "us" else 1.0)


def interleaved(folder: Path, manifest: dict[str, Any], graph: Path, batch: int, seconds: int) -> tuple[float, float]:
    """One round: the engine opened with ``Engine`` and timed by the benchmark's ``measure`` on the model's eval
    batch, then benchmark_app; run from the repository whose params.yaml built the engine.

    Args:
        folder: the engine or deploy folder.
        manifest: its manifest.
        graph: its precision graph.
        batch: the batch size.
        seconds: how long each side measures.

    Returns:
        tuple: (engineforge p50, benchmark_app median), in ms.
    """
    import numpy as np

    from stages.core.batches import batch_of
    from stages.core.data import load_dataset
    from stages.core.run import load_params
    from stages.core.timing import measure
    from stages.runtime.engine import Engine

    model = load_params("benchmark").model
    with Engine.open(folder) as engine:
        call = engine.timed_call(batch_of(model, load_dataset(model, "test"), batch))
        ours = float(np.median(measure(call, 0.2, seconds, 10)["latency_ms"]))
        call.close()
    return ours, median_ms(command(graph, manifest, batch, seconds))


def main(argv: list[str] | None = None) -> None:
    """Print, per batch size, benchmark_app's median beside the benchmark stage's p50 of the same engine, or with
    ``--rounds N`` beside this command's own timing of the engine, interleaved in N rounds.

    Args:
        argv: the command line (None: ``sys.argv``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="an OpenVINO engine folder or deploy folder")
    parser.add_argument("--benchmark", help="the benchmark stage's report (default: params.yaml's paths.benchmark)")
    parser.add_argument("--seconds", type=int, default=3, help="benchmark_app's -t (whole seconds)")
    parser.add_argument("--rounds", type=int, default=0, help="time both sides here, alternating, N rounds")
    args = parser.parse_args(argv)
    try:
        manifest = read_manifest(args.folder)
        if manifest["backend"] != "openvino":
            raise PipelineError(f"{args.folder} is a {manifest['backend']} engine: benchmark_app runs OpenVINO's")
        graph = fallback_graph(args.folder, manifest)
        args.benchmark = (
            args.benchmark or yaml.safe_load(Path(PARAMS_FILE).read_text(encoding="utf-8"))["paths"]["benchmark"]
        )
        bench = read_json(args.benchmark)
        if (bench["model"], bench["backend"], bench["precision"]) != (
            manifest["model"],
            manifest["backend"],
            manifest["precision"],
        ):
            raise PipelineError(f"{args.benchmark} is about another engine: run the pipeline for this one first")
        for key, run in bench["runtimes"]["engine"].items():
            batch = int(key[2:])
            pairs = [interleaved(args.folder, manifest, graph, batch, args.seconds) for _ in range(args.rounds)]
            pairs = pairs or [(run["latency_ms"]["p50"], median_ms(command(graph, manifest, batch, args.seconds)))]
            for ours, theirs in pairs:
                print(
                    f"{manifest['model']} {manifest['precision']} bs{batch}: benchmark_app median {theirs:.3f} ms, "
                    f"engineforge p50 {ours:.3f} ms ({100 * (ours / theirs - 1):+.1f} %)"
                )
    except PipelineError as e:
        print(f"engineforge outside_check: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

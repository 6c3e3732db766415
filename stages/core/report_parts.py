"""The report's parts that read one record each: the race table, the export line, the device line, the cold start
and a GPU engine's phase times (values from benchmark.json, the manifest and export.json in, Markdown out)."""

from typing import Any

from stages.core.markdown import table
from stages.core.metrics import ENGINE


def race_table(manifest: dict[str, Any]) -> str:
    """The build's race, a row per candidate (its gate, p50 per batch, result), or a line saying there was none.

    Args:
        manifest: the engine's manifest.

    Returns:
        str: the table's Markdown, or the one line.
    """
    race = manifest.get("race")
    if not race:
        return f"One candidate ({manifest['precision']} on {manifest['backend']}): nothing raced."
    batches = sorted({b for e in race for b in e.get("p50_ms", {})}, key=lambda b: int(b[2:]))
    heats = len({tuple(e.get("serves", ())) for e in race}) > 1  # one race per batch range (objective per_batch)
    rows = [
        [
            e["candidate"],
            *([f"{e['serves'][0]}-{e['serves'][1]}"] if heats else []),
            ("pass" if e["gate"]["passed"] else "FAIL") if "gate" in e else "—",
            f"{e['gate']['candidate']:.4f}" if "gate" in e else "—",
            *(f"{e['p50_ms'][b]:.3f}" if b in e.get("p50_ms", {}) else "—" for b in batches),
            e["result"],
        ]
        for e in race
    ]
    metric = next((e["gate"]["metric"] for e in race if "gate" in e), "metric")
    serves = ["serves batches"] if heats else []
    return table(["candidate", *serves, "gate", metric, *(f"p50 ms {b}" for b in batches), "result"], rows)


def exported(record: dict[str, Any]) -> tuple[str, str]:
    """export.json as the Engine list's line and, where an exporter failed before another wrote the file, a note.

    Args:
        record: export.json's content.

    Returns:
        tuple[str, str]: the export line, and the note's Markdown (empty when no exporter failed).
    """
    if record["exporter"] is None:
        return f"given ONNX file ({record['source']})", ""
    failed = "; ".join(f"{f['exporter']}: {f['error']}" for f in record.get("exporter_failed", []))
    line = f"torch.onnx.export ({record['exporter']} exporter, torch {record['torch']})"
    note = f"> **Exported by the {record['exporter']} exporter** after {failed}.\n\n" if failed else ""
    return line, note


def gpu_times(bench: dict[str, Any]) -> str:
    """A GPU engine's paragraph under the latency table: each phase's GPU time from CUDA events, as trtexec splits
    it, whether a CUDA graph was replayed, and what the table's latency is (empty for a CPU engine).

    Args:
        bench: benchmark.json's content.

    Returns:
        str: the paragraph's Markdown (with the blank line before it), or "".
    """
    gpu = [
        f"bs{b[2:]}: " + ", ".join(f"{phase} p50 {v['p50']:.3f} ms" for phase, v in r["gpu_ms"].items())
        for b, r in bench["runtimes"][ENGINE].items()
        if "gpu_ms" in r
    ]
    if not gpu:
        return ""
    graph = bench.get("engine_call", {}).get("cuda_graph", "off")
    return (
        f"\n\nGPU time of the engine (CUDA events; CUDA graph {graph}): " + "; ".join(gpu) + ". The table's "
        "engine latency is the host's wall clock around its Python-driven copies, enqueue and wait, not trtexec's "
        "host latency (from events): compare these GPU times with trtexec's."
    )


def cold_start(bench: dict[str, Any], deploy: str) -> str:
    """The cold start beside the steady state (build once, then open and first answer, as benchmark_app reports
    "compile model took" and "first inference took"), and how an application opens the deploy folder.

    Args:
        bench: benchmark.json's content.
        deploy: the deploy folder's path.

    Returns:
        str: the section's markdown, empty for a benchmark without a cold start.
    """
    cold = bench.get("cold_start")
    if not cold:
        return ""
    opened = ", ".join(
        f"{name} {notes['open_ms']:.0f} ms" for name, notes in bench.get("baselines", {}).items() if "open_ms" in notes
    )
    rows = table(
        [
            "engine build s (once; a restore skips it)",
            "open ms (Engine.open)",
            f"first inference ms (batch {cold['batch']})",
        ],
        [
            [
                "n/a" if cold["build_s"] is None else f"{cold['build_s']}",
                f"{cold['open_ms']:.1f}",
                f"{cold['first_inference_ms']:.2f}",
            ]
        ],
    )
    compiled = f" The baselines' session creation or compile from ONNX: {opened}." if opened else ""
    return (
        f"## Cold start and deployment\n\n{rows}\n\n`{deploy}/` holds the engine, its manifest, its graph and a Triton "
        "model repository; an application runs it with `engineforge.Engine.open(folder)` as certified "
        f"(docs/deploy.md).{compiled}\n\n"
    )


def device_line(fingerprint: dict[str, Any]) -> str:
    """The Engine list's device line, from the fingerprint the engine was built for: a CPU's model, architecture,
    cores and instruction set (ONNX Runtime, OpenVINO), or a GPU's name, compute capability, driver and the CUDA
    versions a TensorRT engine depends on (``TensorRTBackend.fingerprint``).

    Args:
        fingerprint: the manifest's ``fingerprint``.

    Returns:
        str: the Markdown list item, ``- device: ...``, without a newline.
    """
    device = fingerprint["device"]
    if "gpu" in device and "cpu" not in device:
        cuda = fingerprint.get("cuda", {})
        trt_cuda = cuda.get("tensorrt_build", "unknown")
        built = f", TensorRT built for CUDA {trt_cuda}" if trt_cuda != "unknown" else ""
        supports = f" supporting CUDA {cuda['driver_api']}" if "driver_api" in cuda else ""
        return (
            f"- device: {device['gpu']} (compute {device.get('compute_capability', '?')}, "
            f"driver {device.get('driver', '?')}{supports}{built})"
        )
    cpu = device.get("cpu", {})
    return (
        f"- device: {cpu.get('model', '?')} ({cpu.get('arch', '?')}, {cpu.get('cores', '?')} cores, "
        f"ISA {' '.join(cpu.get('isa', [])) or 'baseline'})"
    )

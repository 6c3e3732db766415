"""measure: trtexec-style timing honours its duration and its minimum count."""

from stages.core.timing import TimedCall, measure, summarize


def test_measure_honours_duration_and_minimum_iterations():
    calls = []
    run = measure(TimedCall(lambda: calls.append(1)), warmup_s=0.0, duration_s=0.0, min_iterations=25)
    assert len(run["latency_ms"]) == 25 and len(calls) == 26  # one warm-up call first
    run = measure(TimedCall(lambda: None), warmup_s=0.01, duration_s=0.05, min_iterations=1)
    assert run["wall_s"] >= 0.05 and len(run["latency_ms"]) > 1


def test_summarize_reports_percentiles_and_throughput_per_sample():
    import numpy as np

    run = {"latency_ms": np.array([1.0, 2.0, 3.0, 4.0]), "wall_s": 0.01}
    summary = summarize(run, batch=8)
    assert summary["latency_ms"]["p50"] == 2.5 and summary["latency_ms"]["max"] == 4.0
    assert summary["qps"] == 400.0 and summary["samples_per_s"] == 3200.0 and summary["iterations"] == 4

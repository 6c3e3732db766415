"""The engine against every baseline that passes its gate, per batch size: the table docs/performance.md carries, from
the ``reports/`` of runs kept by ``engineforge.sizes --keep``::

    python -m engineforge.sizes digits:auto textenc:auto resnet18:auto resnet18:int8 --keep /tmp/runs
    python -m engineforge.speedups /tmp/runs/digits-auto /tmp/runs/textenc-auto ...

A cell is the engine's speed-up over the baseline (baseline p50 / engine p50, same run) and the baseline's gate
verdict under the engine's gate; the last column checks the issue's target: at least 0.95× every baseline that
passes the gate.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json
from stages.core.markdown import table
from stages.core.metrics import ENGINE
from stages.core.report_speed import SAME, baseline_gate, serving, speedups


def rows(name: str, bench: dict[str, Any], baselines: list[str]) -> list[list[str]]:
    """One row per batch size of one run's benchmark.json.

    Args:
        name: the run's name (its folder).
        bench: its benchmark.json.
        baselines: the columns.

    Returns:
        list: the rows.
    """
    ups = speedups(bench)
    found = []
    for batch, stats in bench["runtimes"][ENGINE].items():
        engine = serving(bench, batch)
        cells, worst = [], []
        for base in baselines:
            if base not in ups:
                cells.append("not timed")
                continue
            verdict = baseline_gate(bench, base, batch)
            passed = verdict is None or verdict["passed"]
            cells.append(f"{ups[base][batch]:.2f}× ({'passes' if passed else 'fails'} the gate)")
            worst += [ups[base][batch]] if passed else []
        agree = bench.get("race_agreement", {}).get(batch)
        met = "✔" if min(worst, default=1.0) >= SAME else "✘"
        found.append(
            [
                name,
                batch[2:],
                f"{engine['precision']}.{engine['backend']}",
                f"{stats['latency_ms']['p50']:.3f}",
                *cells,
                f"{agree['ratio']:.2f}" if agree else "—",
                f"{met} {min(worst, default=float('nan')):.2f}×",
            ]
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """Print the table for the given kept runs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="a kept run's reports/ folder (engineforge.sizes --keep)")
    args = parser.parse_args(argv)
    benches = {run.name: read_json(run / "benchmark.json") for run in args.runs}
    baselines = list(dict.fromkeys(b for bench in benches.values() for b in bench["runtimes"] if b != ENGINE))
    body = [r for name, bench in benches.items() for r in rows(name, bench, baselines)]
    head = ["run", "batch", "engine serving it", "p50 ms", *(f"vs {b}" for b in baselines)]
    print(table([*head, "benchmark / race p50", f"≥ {SAME}× every passing baseline"], body))
    return 0


if __name__ == "__main__":
    sys.exit(main())

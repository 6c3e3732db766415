"""latency.png (paths.latency_plot): a picture read in seconds. One panel per batch size, a bar per runtime on a log axis (a slow
eager baseline next to a 0.03 ms engine leaves every bar readable): p50 with a p90 whisker, the engine highlighted,
each baseline labelled with the engine's speed-up over it and hatched where it fails the engine's gate; a second row
does the same for the race's candidates at each batch size, the shipped one highlighted."""

from collections.abc import Sequence
from typing import Any

from stages.core.artifacts import atomic_path
from stages.core.metrics import ENGINE
from stages.core.report_speed import baseline_gate

Bar = tuple[str, float, float, str, bool, bool]  # label, p50, p90, colour, highlighted, fails the gate


def runtime_bars(bench: dict[str, Any], batch: str, colours: dict[str, str]) -> list[Bar]:
    """The benchmark's bars at ``batch``: the engine first, then each baseline with the engine's speed-up over it."""
    engine = bench["runtimes"][ENGINE][batch]["latency_ms"]
    bars: list[Bar] = []
    for name, runs in bench["runtimes"].items():
        lat = runs[batch]["latency_ms"]
        verdict = baseline_gate(bench, name, batch) if name != ENGINE else None
        fails = verdict is not None and not verdict["passed"]
        up = lat["p50"] / engine["p50"]
        label = name if name == ENGINE else f"{name}  (engine {up:.2f}× {'faster' if up >= 1 else 'as fast'})"
        label += "  fails gate" if fails else ""
        bars.append((label, lat["p50"], lat["p90"], colours.get(name, "#999"), name == ENGINE, fails))
    return bars


def race_bars(manifest: dict[str, Any], batch: str, colours: dict[str, str]) -> list[Bar]:
    """The race's candidates timed at ``batch`` (those that passed their gates), the shipped one highlighted."""
    timed = [e for e in manifest.get("race") or [] if batch in e.get("p50_ms", {})]
    return [
        (
            e["candidate"] + ("  shipped" if e["result"] == "shipped" else ""),
            e["p50_ms"][batch],
            e.get("p90_ms", e["p50_ms"])[batch],
            colours.get(e["backend"], "#999"),
            e["result"] == "shipped",
            False,
        )
        for e in timed
    ]


def draw(ax: Any, bars: Sequence[Bar], title: str) -> None:
    """Horizontal bars on a log axis, p50 (its value at the bar's end) with a p90 whisker."""
    from matplotlib import ticker

    labels, p50, p90 = [b[0] for b in bars], [b[1] for b in bars], [b[2] for b in bars]
    drawn = ax.barh(
        range(len(bars)),
        p50,
        xerr=[[0.0] * len(bars), [max(0.0, q - p) for p, q in zip(p50, p90, strict=True)]],
        color=[b[3] for b in bars],
        alpha=1.0,
        capsize=3,
    )
    for bar, (_, value, whisker, _, highlighted, fails) in zip(drawn, bars, strict=True):
        bar.set_alpha(1.0 if highlighted else 0.55)
        bar.set_edgecolor("black" if highlighted else "none")
        bar.set_linewidth(1.6 if highlighted else 0.0)
        bar.set_hatch("//" if fails else "")
        ax.annotate(
            f"{value:.3g}",
            (max(value, whisker), bar.get_y() + bar.get_height() / 2),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(range(len(bars)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")  # bars from a third of the fastest p50: lengths compare on the log scale
    ax.set_xlim(min(p50) / 3, max(p90) * 2.5)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("latency ms, log scale (bar p50, whisker p90)", fontsize=8)
    ax.set_title(title, fontsize=9)


def plot(bench: dict[str, Any], manifest: dict[str, Any], path: str, colours: dict[str, str]) -> None:
    """Write the picture: the benchmark's runtimes per batch size, then the race's candidates.

    Args:
        bench: benchmark.json's content.
        manifest: the engine's manifest (its race).
        path: the PNG to write.
        colours: runtime name (``registry.palette``) and backend name -> colour.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = list(bench["runtimes"][ENGINE])
    rows = [("benchmark", lambda b: runtime_bars(bench, b, colours))]
    if any(race_bars(manifest, b, colours) for b in batches):
        rows.append(("race at build", lambda b: race_bars(manifest, b, colours)))
    fig, axes = plt.subplots(len(rows), len(batches), figsize=(5.4 * len(batches), 2.6 * len(rows)), squeeze=False)
    for row, (what, bars_of) in enumerate(rows):
        for col, batch in enumerate(batches):
            bars = bars_of(batch)
            if bars:
                draw(axes[row][col], bars, f"{what}, batch {batch[2:]}")
            else:
                axes[row][col].set_axis_off()
    served = bench.get("serving") or {
        b: {"backend": bench["backend"], "precision": bench["precision"]} for b in batches
    }
    shown = ", ".join(f"batch {b[2:]} {e['precision']}.{e['backend']}" for b, e in served.items())
    fig.suptitle(f"{bench['model']}: the engine ({shown}) against each baseline, and the race", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)

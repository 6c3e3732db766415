"""What a stage cost: wall time since it started and its peak resident memory (its own and its subprocesses')."""

import resource
import time
from typing import Any

_START = time.perf_counter()  # imported by stages.core.run before the stage's work begins


def peak_rss_bytes() -> int:
    """The largest resident set this process, or any subprocess it waited for, has held (Linux: ru_maxrss in KiB).

    Returns:
        int: bytes.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


def resources() -> dict[str, Any]:
    """The stage's cost so far, as its report records it (``reproduce`` does not compare these: they are measured).

    Returns:
        dict: ``seconds`` (wall time since the stage started) and ``peak_rss_mb``.
    """
    return {"seconds": round(time.perf_counter() - _START, 1), "peak_rss_mb": round(peak_rss_bytes() / 2**20)}


def cost_line() -> str:
    """``12.3s, peak 1.24 GB``: what the stage's one line ends with.

    Returns:
        str: wall time and peak resident memory.
    """
    return f"{time.perf_counter() - _START:.1f}s, peak {peak_rss_bytes() / 1e9:.2f} GB"

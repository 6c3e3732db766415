"""One candidate's build and gate run in a process of its own: a native crash in a runtime (a segfault in its
graph optimizer, an abort in its compiler) is that candidate's record, never the end of the stage that raced it.

The child builds the engine into its folder and runs the judge's batches through it; the parent gets the outputs
back, or the runtime's one-line refusal, or, when the child died, which signal killed it and in which phase.
"""

import multiprocessing
import signal
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import PipelineError, first_line
from stages.core.gate import run_batches
from stages.core.run import quiet_libraries, quiet_onnxruntime
from stages.runtime.base import BuildSpec
from stages.runtime.engine import Engine
from stages.select.candidate import Candidate, build_engine


class CandidateFailed(Exception):
    """The candidate's runtime refused it, or its process died (``crashed``): the one line of its record."""

    def __init__(self, line: str, crashed: bool = False) -> None:
        super().__init__(line)
        self.crashed = crashed


def _child(conn: Connection, chosen: Candidate, graph: Path, spec: BuildSpec, names: tuple, batches: list) -> None:
    quiet_libraries()  # as the stage that spawned it: its one line is the parent's
    quiet_onnxruntime()
    try:
        conn.send(("phase", "building"))
        build_engine(chosen, graph, spec, *names)
        conn.send(("phase", "running"))
        with Engine.open(names[2], name=chosen.key) as engine:
            got = run_batches(engine, batches)
        conn.send(("done", got))
    except chosen.backend.runtime_errors() as e:  # the runtime's own refusal (or our one-line error): one line
        conn.send(("refused", str(e) if isinstance(e, PipelineError) else first_line(e, 400)))
    except BaseException:
        conn.send(("bug", traceback.format_exc()))
    finally:
        conn.close()


def build_and_run(
    chosen: Candidate,
    graph: Path,
    spec: BuildSpec,
    names: tuple[str, str | None, Path],
    batches: Sequence[dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Build ``chosen`` in a child process and run ``batches`` through the engine there.

    Args:
        chosen: the candidate.
        graph: its graph.
        spec: its build spec.
        names: ``(model.name, target, engine folder)``.
        batches: the judge's feeds.

    Returns:
        dict: output name -> concatenated outputs.

    Raises:
        CandidateFailed: the runtime refused the candidate, or the child died (the signal and the phase named).
        RuntimeError: a bug of this project's own in the child (its traceback).
    """
    context = multiprocessing.get_context("spawn")  # never fork a process whose runtimes started threads
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, chosen, graph, spec, names, list(batches)), daemon=True)
    child.start()
    send.close()
    phase, last = "starting", None
    while True:
        try:
            kind, value = receive.recv()
        except EOFError:
            break
        if kind == "phase":
            phase = value
        else:
            last = (kind, value)
    child.join()
    return _outcome(last, child.exitcode, phase, chosen)


def _outcome(last: tuple[str, Any] | None, code: int | None, phase: str, chosen: Candidate) -> Any:
    if last is not None and last[0] == "done":
        return last[1]
    if last is not None and last[0] == "refused":
        raise CandidateFailed(last[1])
    if last is not None:
        raise RuntimeError(f"{chosen.key} failed in its build process:\n{last[1]}")
    if phase == "starting":  # it died before it began: a bug of ours (its arguments, its imports), not the runtime
        raise RuntimeError(f"{chosen.key}'s build process exited with code {code} before it started")
    if code is not None and code < 0:
        name = next((s.name for s in signal.Signals if s.value == -code), "unnamed")  # real-time ones have none
        where = f"while {phase} {chosen.precision}"
        raise CandidateFailed(f"{chosen.backend.name}: crashed with signal {-code} ({name}) {where}", crashed=True)
    raise CandidateFailed(f"{chosen.backend.name}: its process exited with code {code} while {phase}", crashed=True)

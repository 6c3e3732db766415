"""Progress of a long step: a bar on a terminal (tqdm), and where no one watches a terminal (CI logs, `dvc repro`
piped), a plain line every ``EVERY_S`` seconds. A step shorter than that prints nothing: a stage keeps one line."""

import sys
import time
from types import TracebackType
from typing import Any

EVERY_S = 10.0  # seconds between plain progress lines


class Progress:
    """``with Progress("build", 4, "candidates") as p: p.step("fp16.onnxruntime")``: counts steps of a stage.

    Args:
        stage: the stage's name, first on every line.
        total: the steps expected.
        unit: what a step is (``batches``, ``candidates``, ``runs``).
    """

    def __init__(self, stage: str, total: int, unit: str) -> None:
        self.stage, self.total, self.unit = stage, total, unit
        self.done, self.started, self.said = 0, time.perf_counter(), time.perf_counter()
        self.bar: Any = None

    def __enter__(self) -> "Progress":
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.stage, unit=self.unit.rstrip("s"), leave=False)
        return self

    def step(self, what: str = "", count: int = 1) -> None:
        """Count ``count`` steps done, the last of them ``what``; say so when a line is due.

        Args:
            what: the step just finished (shown beside the count).
            count: steps finished.
        """
        self.done += count
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(count)
            return
        now = time.perf_counter()
        if now - self.said >= EVERY_S:
            self.said = now
            elapsed = now - self.started
            print(f"  {self.stage}: {self.done}/{self.total} {self.unit} ({elapsed:.0f} s) {what}".rstrip(), flush=True)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.bar is not None:
            self.bar.close()

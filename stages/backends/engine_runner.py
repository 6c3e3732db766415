"""Polygraphy's runner interface over an opened ``Engine``: what compare hands Polygraphy's Comparator, so the
comparison runs the engine exactly as an application does."""

import time

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from stages.backends.engine import Engine


class EngineRunner(BaseRunner):
    """Polygraphy's runner interface over an opened ``Engine``, so the Comparator runs the engine exactly as an
    application does (opened once; activation and deactivation leave it open)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name=engine.name, prefix="engine-runner")
        self.engine = engine

    def get_input_metadata_impl(self) -> TensorMetadata:
        """The engine's inputs (None for a dynamic axis)."""
        meta = TensorMetadata()
        for spec in self.engine.inputs:
            meta.add(
                spec.name, dtype=np.dtype(spec.dtype), shape=[None if isinstance(d, str) else d for d in spec.shape]
            )
        return meta

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference of the engine."""
        start = time.perf_counter()
        outputs = self.engine(feed_dict)
        self.inference_time = time.perf_counter() - start
        return outputs

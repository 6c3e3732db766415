"""engineforge: open a certified engine with ``Engine.open(folder)`` (docs/deploy.md); the modules beside this one
are the commands around the pipeline (why, run, sweep, coverage, reproduce, gpu_check ...).

``Engine`` is imported on first use, so ``python -m engineforge.<command>`` does not load it.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stages.runtime.engine import Engine, EngineError, TensorSpec

__all__ = ["Engine", "EngineError", "TensorSpec"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from stages.runtime import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'engineforge' has no attribute {name!r}")

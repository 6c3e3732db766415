"""One package per backend (``stages/backends/<name>/``, declaring ``BACKEND``): found by ``stages.runtime.registry``.
The interface they implement, ``Engine`` and the registry live in ``stages.runtime``; the race in ``stages.select``."""

"""TensorRT's runner: Polygraphy's TrtRunner that also holds the shape profiles its engine was built with (from the
manifest), so a timed call can pick the profile that holds its inputs. Imported only when an engine is loaded;
Polygraphy imports TensorRT itself only on activation."""

from typing import Any

from polygraphy.backend.trt import TrtRunner


class ProfiledTrtRunner(TrtRunner):
    """A TrtRunner over ``engine`` (a Polygraphy loader) that knows the engine's ``profiles``."""

    def __init__(self, engine: Any, name: str, profiles: list[dict[str, Any]]) -> None:
        super().__init__(engine, name=name)
        self.profiles = profiles

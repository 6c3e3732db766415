"""The Backend interface and the manifest check every engine load goes through (the CPU fingerprint: core.device)."""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from stages.core.artifacts import read_json, sha256
from stages.core.errors import PipelineError

if TYPE_CHECKING:
    from omegaconf import DictConfig

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here; ``reason`` is one line saying why not (or what was found)."""

    ok: bool
    reason: str = ""


class Backend(Protocol):
    """What a backend provides. Implementations live beside this module and register in ``registry``."""

    name: str
    int8_encoding: str  # the Q/DQ form this backend runs fast: u8s8 or s8s8 (stages/core/quantize.py)

    def availability(self) -> Availability:
        """Whether this backend can build and run engines on this machine."""

    def fingerprint(self) -> dict[str, Any]:
        """Everything an engine depends on besides its inputs: versions, providers, device."""

    def build(self, onnx: Path, cfg: "DictConfig", out: Path) -> dict[str, Any]:
        """Build an engine from ``onnx`` into the empty folder ``out``; return the backend's manifest fields
        (at least ``engine``: the engine file's name inside ``out``, and ``settings``)."""

    def runner(self, engine: Path, name: str = "engine") -> Any:
        """A Polygraphy runner for the engine folder ``engine`` (verified against its manifest first)."""

    def timed_call(self, runner: Any, feed: dict[str, Any], settings: Mapping[str, Any]) -> Callable[[], object]:
        """A zero-argument call running one inference of the activated ``runner`` on ``feed``, with inputs and
        outputs bound beforehand, so a benchmark times the runtime's own inference call and nothing else.

        ``settings`` is ``cfg.benchmark`` (GPU backends read ``cuda_graph`` and ``no_data_transfers``). A call
        may also have ``take()``, returning device times per phase since the last take, and ``close()``.
        """


def quiet_polygraphy() -> None:
    """Polygraphy logs every session it creates; a stage reports one line, so keep only its errors."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR


def differences(built: Any, current: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (dotted key, built value, current value) where two nested dicts differ, in sorted key order."""
    if isinstance(built, dict) and isinstance(current, dict):
        for key in sorted(set(built) | set(current)):
            yield from differences(built.get(key), current.get(key), f"{prefix}{key}.")
    elif built != current:
        yield prefix.rstrip("."), built, current


def first_difference(built: Any, current: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted key, built value, current value) where two fingerprints differ, else None."""
    return next(differences(built, current, prefix), None)


def verified_engine(engine_dir: Path, fingerprint: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """Read ``engine_dir``'s manifest and refuse, in one line, an engine that does not match it or this machine.

    Returns the manifest and the engine file's path.
    """
    manifest = read_json(engine_dir / MANIFEST)
    engine = (engine_dir / manifest["engine"]).resolve()
    if engine.parent != engine_dir.resolve():
        raise PipelineError(f"{engine_dir / MANIFEST}: engine file {manifest['engine']!r} is outside its folder")
    if not engine.is_file() or sha256(engine) != manifest["engine_sha256"]:
        raise PipelineError(
            f"{engine_dir / manifest['engine']} does not match its manifest (sha256): "
            "restore it with `dvc checkout` or rebuild with `dvc repro`"
        )
    diff = first_difference(manifest["fingerprint"], fingerprint)
    if diff:
        key, built, now = diff
        raise PipelineError(
            f"{engine_dir} was built for {key}={built}, this machine has {key}={now}: rebuild with `dvc repro`"
        )
    return manifest, engine

"""env stage: the machine -> build/env.json (chosen backend, why, its fingerprint, its own settings) and
build/backend.json (its capabilities), both made by ``registry.env_records``.

Runs on every ``dvc repro`` (``always_changed``); stages after it depend on the file's content, so they rerun only
when the backend, its version, the device or the chosen backend's own settings really changed (env.json holds
only those settings, so another backend's key reruns nothing). backend.json holds the choice and what the backend
can do (its int8 encoding, how bf16 reaches it): the precision stage depends on it, so a new driver or CPU
rebuilds engines but does not re-quantize. Both files have deterministic bytes. Kept light, since every
`dvc repro` runs it: no torch, and its parameters come as a plain dict (no OmegaConf).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.backends import registry
from stages.core.artifacts import sweep_temporaries, to_json, write_text
from stages.core.run import run_stage


def main(cfg: Mapping[str, Any]) -> str:
    """Resolve ``backend.name``; write the chosen backend's fingerprint (plus ``target``, the optional
    deployment-target label) to ``paths.env`` and the choice alone to ``paths.backend_choice``; make sure the
    shared TensorRT timing-cache folder ``paths.timing_cache`` exists; sweep temporaries killed runs left in
    ``paths.build``."""
    files, chosen = registry.env_records(cfg)
    sweep_temporaries(cfg["paths"]["build"])  # half-written files of runs killed mid-write: never loaded, now gone
    for path, content in files.items():
        write_text(path, to_json(content))
    Path(cfg["paths"]["timing_cache"]).mkdir(parents=True, exist_ok=True)  # persist: builds add to it
    return f"{chosen} -> {cfg['paths']['env']}"


if __name__ == "__main__":
    run_stage("env", main)

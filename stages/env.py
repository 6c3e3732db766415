"""env stage: the machine -> build/env.json (the candidate backends, why, and for each its fingerprint,
capabilities and own settings; the race's settings), made by ``records.env_records``.

Runs on every ``dvc repro`` (``always_changed``); stages after it depend on the file's content, so they rerun only
when a candidate, its version, the device or a candidate's own settings really changed (env.json holds only those
settings, so a key of a backend that is not a candidate reruns nothing). The precision stage depends on it too: its
int8 fallback is judged on each candidate's own runtime, so a new runtime version re-measures it. The file has
deterministic bytes. Kept light, since every `dvc repro` runs it: no torch, and its parameters come as a plain dict
(no OmegaConf).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core.artifacts import sweep_temporaries, to_json, write_text
from stages.core.run import run_stage
from stages.runtime import records


def main(cfg: Mapping[str, Any]) -> str:
    """Resolve ``backend.name`` into the candidates; write each one's record to ``paths.env``; make sure the
    shared TensorRT timing-cache folder ``paths.timing_cache`` exists; sweep temporaries killed runs left in
    ``paths.build``."""
    files, chosen = records.env_records(cfg)
    sweep_temporaries(cfg["paths"]["build"])  # half-written files of runs killed mid-write: never loaded, now gone
    for path, content in files.items():
        write_text(path, to_json(content))
    Path(cfg["paths"]["timing_cache"]).mkdir(parents=True, exist_ok=True)  # persist: builds add to it
    return f"{chosen} -> {cfg['paths']['env']}"


if __name__ == "__main__":
    run_stage("env", main)

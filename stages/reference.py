"""reference stage: model.sim.onnx + eval data -> paths.reference/ (the fp32 reference's outputs on the whole eval
split and float32's floors), run once and read by precision (the int8 fallback), build (the race) and compare, each
taking the first samples it judges. It depends on the model alone: no judge's setting reruns it.

The reference is ONNX Runtime's untuned CPU session on the simplified float32 graph (``core.floor``, which also
reads the logits of every Softmax output for its floor).
"""

from pathlib import Path

from omegaconf import DictConfig

from stages.core.batches import feeds
from stages.core.data import data_source, is_synthetic, load_dataset
from stages.core.reference import inputs_digest, write_reference
from stages.core.run import run_stage

BATCH = 32  # samples per reference inference (at most model.max_batch): outputs do not depend on it


def main(cfg: DictConfig) -> str:
    """Run ``paths.simplified`` on the whole eval split and write ``paths.reference``."""
    data = load_dataset(cfg.model, "test")
    batch = min(BATCH, int(cfg.model.max_batch))
    about = {"batch_size": batch, "data": data_source(cfg.model, "test"), "synthetic": is_synthetic(cfg.model, "test")}
    digest = inputs_digest(cfg.model, data)
    run = write_reference(
        Path(cfg.paths.simplified), feeds(cfg.model, data, batch), digest, Path(cfg.paths.reference), about
    )
    floors = f", float32 floors on {', '.join(run.floors)}" if run.floors else ""
    return f"fp32 reference on {run.samples} eval samples{floors} -> {cfg.paths.reference}/"


if __name__ == "__main__":
    run_stage("reference", main)

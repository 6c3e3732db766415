"""reference stage: model.sim.onnx + eval data -> paths.reference/ (the fp32 reference's outputs on compare's eval
samples and float32's floors), run once and read by precision (the int8 fallback), build (the race) and compare.

The reference is ONNX Runtime's untuned CPU session on the simplified float32 graph (``core.floor``, which also
reads the logits of every Softmax output for its floor).
"""

from pathlib import Path

from omegaconf import DictConfig

from stages.core.batches import feeds
from stages.core.data import data_source, is_synthetic, load_dataset
from stages.core.reference import write_reference
from stages.core.run import run_stage


def main(cfg: DictConfig) -> str:
    """Run ``paths.simplified`` on compare's eval samples and write ``paths.reference``."""
    batches = feeds(cfg.model, load_dataset(cfg.model, "test"), cfg.compare.batch_size, limit=cfg.compare.max_samples)
    about = {
        "batch_size": cfg.compare.batch_size,
        "data": data_source(cfg.model, "test"),
        "synthetic": is_synthetic(cfg.model, "test"),
    }
    run = write_reference(Path(cfg.paths.simplified), batches, Path(cfg.paths.reference), about)
    floors = f", float32 floors on {', '.join(run.floors)}" if run.floors else ""
    return f"fp32 reference on {run.samples} eval samples{floors} -> {cfg.paths.reference}/"


if __name__ == "__main__":
    run_stage("reference", main)

"""Run by tests/test_distributed.py under torchrun: train every target mode x objective the config
accepts for a few steps in one process group, and save each run's weights and history under OUT.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_modes.py OUT
"""
import sys
from pathlib import Path

import torch

from jepa_lite.data.datasets import make_shapes
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import train

TINY = dict(model="micro", batch_size=16, log_every=2, device="cpu", image_size=16, patch_size=2,
            warmup_steps=2, checkpoint_every_minutes=100.0, steps=6)
MODES = [("ema", "jepa", "pooled"), ("ema", "pixels", "pooled"), ("ema", "both", "pooled"),
         ("joint", "jepa", "pooled"), ("joint", "both", "pooled"),
         ("sigreg", "jepa", "pooled"), ("sigreg", "jepa", "tokens")]


def run_all(out: Path) -> dict:
    data = make_shapes(64, seed=0, image_size=16)
    results = {}
    for target_mode, objective, sigreg_on in MODES:
        name = f"{target_mode}-{objective}-{sigreg_on}"
        # joint with instance-normed targets: the target encoder's last bias has a zero gradient, which
        # AdamW turns into steps of round-off noise; the layer-normed targets give it a true gradient
        norm = "layer" if target_mode == "joint" else "instance"
        config = TrainConfig(target_mode=target_mode, objective=objective, sigreg_on=sigreg_on, target_norm=norm,
                             **TINY)
        result = train(config, out / name, dataset=data, resume=False, progress=False, log=lambda *a: None)
        results[name] = {"weights": {k: v.clone() for k, v in result.model.state_dict().items()},
                         "history": result.history}
    return results


if __name__ == "__main__":
    out = Path(sys.argv[1])
    results = run_all(out)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        torch.save(results, out / "results.pt")

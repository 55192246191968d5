"""Data parallelism under torchrun (jepa_lite.engine.distributed): the same model as one process in
every mode, exact resume after SIGTERM, clear errors."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jepa_lite.data.datasets import make_shapes
from jepa_lite.engine import distributed
from jepa_lite.engine.checkpoint import load_checkpoint
from jepa_lite.engine.config import TrainConfig

TINY = dict(model="micro", batch_size=16, log_every=1, device="cpu", image_size=16, patch_size=2,
            warmup_steps=2, checkpoint_every_minutes=100.0)
QUIET = dict(progress=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def tiny_data():
    return make_shapes(64, seed=0, image_size=16)


def test_a_run_is_one_process_and_more_come_from_torchrun(tiny_data, tmp_path):
    with pytest.raises(TypeError, match="workers"):          # more processes come from torchrun only
        TrainConfig(workers=2)
    # a config saved when runs could start their own processes still loads, as one process
    assert TrainConfig.from_dict({"workers": 2, "steps": 3}) == TrainConfig(steps=3)
    with pytest.raises(ValueError, match=r"batch_size \(16\) must be divisible by the number of processes \(3\)"):
        distributed.join_group(torch.device("cpu"), 16, 3)


def test_modes_that_cannot_train_are_refused_in_one_line():
    with pytest.raises(ValueError, match="target_mode 'joint' .* objective 'pixels'"):
        TrainConfig(target_mode="joint", objective="pixels")
    with pytest.raises(ValueError, match="target_mode 'sigreg' regularises the embedding objective"):
        TrainConfig(target_mode="sigreg", objective="both")


@pytest.mark.distributed
def test_every_mode_trains_the_same_model_on_two_processes_as_on_one(tmp_path):
    """Every target mode x objective the config accepts, 6 steps under torchrun (2 gloo processes)
    against one process: the same weights (only the order of float additions differs) and the same
    logged loss parts, averaged over the processes. SIGReg's statistic is the global batch's: on
    each process's half alone its value (and so the weights) would differ at the first step."""
    import os

    sys.path.insert(0, str(Path(__file__).parent))
    import ddp_modes

    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(Path(__file__).parent / "ddp_modes.py"), str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = torch.load(tmp_path / "two" / "results.pt", weights_only=False)
    one = ddp_modes.run_all(tmp_path / "one")
    assert sorted(two) == sorted(one) and len(one) == 7
    for name in one:
        a, b = one[name]["weights"], two[name]["weights"]
        worst = max((a[key] - b[key]).abs().max().item() for key in a)
        assert worst < 1e-5, (name, worst)
        parts = [key for key in one[name]["history"][0] if key.endswith("loss")]
        assert len(parts) == {"jepa": 1, "pixels": 2, "both": 3}[name.split("-")[1]] + (name.startswith("sigreg") * 2)
        for x, y in zip(one[name]["history"], two[name]["history"]):
            assert [x[p] for p in parts] == pytest.approx([y[p] for p in parts], rel=1e-5), (name, x["step"])


# -- torchrun -------------------------------------------------------------------------------------

RUN_ARGS = ["--model", "micro", "--batch-size", "16", "--max-train-images", "64", "--image-size", "16",
            "--patch-size", "2", "--device", "cpu", "--quiet", "--log-every", "1", "--warmup-steps", "2"]


def _torchrun(args, out, env_extra=None, wait=True):
    import os
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "jepa_lite", "train", *args, "--out", str(out)]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _losses(out):
    import json
    return [m["loss"] for m in json.loads((out / "metrics.json").read_text())]


@pytest.mark.distributed
def test_torchrun_two_processes_match_one_and_resume_exactly_after_sigterm(tmp_path):
    """torchrun --nproc_per_node=2 -m jepa_lite train: DDP on gloo trains the model a one-process run
    trains (float tolerance: only the order of additions differs); stopped by SIGTERM (what a cluster
    sends), it writes a checkpoint, and the same command ends with the uninterrupted run's weights."""
    import signal
    import time

    steps = ["--steps", "24"]
    one = tmp_path / "one"
    from jepa_lite.cli import main
    assert main(["train", *RUN_ARGS, *steps, "--out", str(one)]) == 0
    whole = tmp_path / "whole"
    done = _torchrun([*RUN_ARGS, *steps], whole)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 24 steps") == 1          # rank 0 alone reports
    assert _losses(whole) == pytest.approx(_losses(one), rel=1e-4)
    a, b = load_checkpoint(one), load_checkpoint(whole)
    for part in ("context_encoder", "target_encoder", "predictor"):
        for key in a[part]:
            assert torch.allclose(a[part][key], b[part][key], rtol=1e-3, atol=1e-5), (part, key)

    # stopped by SIGTERM after its first checkpoint (one every step), then the same command again
    long = ["--steps", "300", "--checkpoint-every-minutes", "0.00001"]
    uninterrupted = tmp_path / "uninterrupted"
    done = _torchrun([*RUN_ARGS, *long], uninterrupted)
    assert done.returncode == 0, done.stderr[-4000:]
    split = tmp_path / "split"
    process = _torchrun([*RUN_ARGS, *long], split, wait=False)
    deadline = time.time() + 120
    while not (split / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)          # torchrun passes it on to both ranks
    out, err = process.communicate(timeout=120)
    stopped = load_checkpoint(split)["step"]
    assert 0 < stopped < 300, (stopped, out, err[-2000:])
    assert f"stopped by SIGTERM at step {stopped}" in out, (out, err[-2000:])
    done = _torchrun([*RUN_ARGS, *long], split)
    assert done.returncode == 0, done.stderr[-3000:]
    c, d = load_checkpoint(split), load_checkpoint(uninterrupted)
    assert c["step"] == d["step"] == 300
    for part in ("context_encoder", "target_encoder", "predictor"):
        for key in d[part]:
            assert torch.equal(d[part][key], c[part][key]), (part, key)

"""Data-parallel CPU training (jepa_lite.engine.distributed): same batches, same model, exact resume, clear errors."""
import subprocess
import sys
import textwrap

import pytest
import torch

from jepa_lite.data.datasets import make_shapes
from jepa_lite.engine import distributed
from jepa_lite.engine.checkpoint import load_checkpoint
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.train import Trainer, train

TINY = dict(model="micro", batch_size=16, log_every=1, device="cpu", image_size=16, patch_size=2,
            warmup_steps=2, checkpoint_every_minutes=100.0)
QUIET = dict(progress=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def tiny_data():
    return make_shapes(64, seed=0, image_size=16)


@pytest.mark.distributed
def test_two_workers_train_the_same_model_as_one(tmp_path, tiny_data):
    one = train(TrainConfig(steps=5, workers=1, **TINY), tmp_path / "one", dataset=tiny_data, **QUIET)
    two = train(TrainConfig(steps=5, workers=2, **TINY), tmp_path / "two", dataset=tiny_data, **QUIET)
    # the same batches, crops and masks split in halves: only the order of float additions differs
    assert [m["loss"] for m in two.history] == pytest.approx([m["loss"] for m in one.history], rel=1e-5)
    assert [m["images_per_second"] > 0 for m in two.history] == [True] * 5
    for (name, a), b in zip(one.model.state_dict().items(), two.model.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    # rank 0 wrote the checkpoint, and the process group is gone again
    assert load_checkpoint(tmp_path / "two")["step"] == 5
    assert not torch.distributed.is_initialized()


@pytest.mark.distributed
def test_two_workers_resume_exactly(tmp_path, tiny_data):
    config = TrainConfig(steps=6, workers=2, **TINY)
    full = train(config, tmp_path / "full", dataset=tiny_data, **QUIET)
    Trainer(config, tmp_path / "split", dataset=tiny_data, **QUIET).run(until_step=3)   # as if interrupted
    resumed = train(config, tmp_path / "split", dataset=tiny_data, **QUIET)
    assert [m["loss"] for m in resumed.history] == [m["loss"] for m in full.history]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_worker_settings_name_the_values(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="workers must be >= 0"):
        TrainConfig(workers=-1)
    with pytest.raises(ValueError, match=r"batch_size \(16\) must be divisible by workers \(3\)"):
        Trainer(TrainConfig(steps=2, workers=3, **TINY), tmp_path, dataset=tiny_data, **QUIET)
    with pytest.raises(ValueError, match="device is cuda"):
        distributed.check_workers(2, 16, torch.device("cuda"))


def test_auto_workers_only_for_long_cpu_runs(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(distributed, "usable_cpus", lambda: 2)
    assert distributed.auto_workers(cpu, 128, total_steps=1000, budget_minutes=None) == 2
    assert distributed.auto_workers(cpu, 128, total_steps=None, budget_minutes=5.0) == 2
    assert distributed.auto_workers(cpu, 128, total_steps=30, budget_minutes=None) == 1      # start-up not repaid
    assert distributed.auto_workers(cpu, 127, total_steps=1000, budget_minutes=None) == 1    # odd batch
    assert distributed.auto_workers(torch.device("cuda"), 128, total_steps=1000, budget_minutes=None) == 1
    monkeypatch.setattr(distributed, "usable_cpus", lambda: 1)
    assert distributed.auto_workers(cpu, 128, total_steps=1000, budget_minutes=None) == 1


def test_usable_cpus_respects_the_affinity_mask():
    assert 1 <= distributed.usable_cpus() <= len(__import__("os").sched_getaffinity(0))


def test_dataset_travels_by_value_when_shared_memory_is_small(monkeypatch, tiny_data):
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(64, 64, 0))
    sent = distributed.shareable(tiny_data)
    assert isinstance(sent, dict)
    back = distributed.unshare(sent)
    assert torch.equal(back.images, tiny_data.images) and torch.equal(back.labels, tiny_data.labels)
    assert torch.equal(back.masks, tiny_data.masks) and back.classes == tiny_data.classes


@pytest.mark.distributed
def test_a_script_without_the_main_guard_gets_a_clear_error_not_a_hang(tmp_path):
    # spawn re-imports the main script in the helper; without the guard the helper fails to start
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from jepa_lite.data.datasets import make_shapes
        from jepa_lite.engine.config import TrainConfig
        from jepa_lite.engine.train import train
        config = TrainConfig(steps=2, workers=2, **{TINY!r})
        train(config, {str(tmp_path / 'out')!r}, dataset=make_shapes(32, image_size=16), progress=False)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "__main__" in done.stderr and "workers=1" in done.stderr


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
    assert main(["train", *RUN_ARGS, *steps, "--workers", "1", "--out", str(one)]) == 0
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


def test_workers_inside_torchrun_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="inside a torchrun group"):
        distributed.check_workers(2, 16, torch.device("cpu"))
    assert distributed.auto_workers(torch.device("cpu"), 128, total_steps=1000, budget_minutes=None) == 1

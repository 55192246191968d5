import dataclasses
import json
import math

import pytest
import torch

from jepa_lite.data.datasets import batch_indices, make_shapes
from jepa_lite.engine.build import param_groups
from jepa_lite.engine.checkpoint import CHECKPOINT_NAME, jepa_from_checkpoint, load_checkpoint, save_atomic
from jepa_lite.engine.config import TrainConfig
from jepa_lite.engine.schedules import lr_at, warmup_length, weight_decay_at
from jepa_lite.engine.train import Trainer, train

TINY = dict(model="micro", batch_size=16, log_every=1, device="cpu", image_size=16, patch_size=2,
            warmup_steps=2, checkpoint_every_minutes=100.0)


@pytest.fixture(scope="module")
def tiny_data():
    return make_shapes(64, seed=0, image_size=16)


def test_lengths_are_exclusive_and_positive():
    with pytest.raises(ValueError, match="only one"):
        TrainConfig(steps=5, epochs=1)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=f"budget_minutes must be > 0, got {bad}"):
            TrainConfig(budget_minutes=bad)
    with pytest.raises(ValueError, match="steps must be > 0"):
        TrainConfig(steps=0)
    assert TrainConfig().budget_minutes is None and TrainConfig().resolve().budget_minutes == 5.0


def test_a_config_is_a_frozen_value_that_replace_changes_and_resolve_fills_once():
    """No field is rewritten after construction: replace() gives the run one asks for, and resolve()
    fills the recipe's, the data set's and the model size's defaults (idempotent)."""
    import dataclasses

    base = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.lr = 1.0
    assert dataclasses.replace(base, steps=500).resolve().steps == 500            # no clash with a budget
    assert dataclasses.replace(base, data="cifar10").resolve().batch_size == 256  # not the shapes batch size
    resolved = base.resolve()
    assert resolved.resolved and not base.resolved and resolved.resolve() == resolved
    assert TrainConfig(model="vit_b_224").resolve().patch_size == 16              # the size's own patch
    assert TrainConfig(model="vit_b_224", patch_size=8).resolve().patch_size == 8


def test_the_paper_recipe_is_the_reference_codes_settings():
    from jepa_lite.engine.config import FAST_DEVIATIONS, RECIPES

    paper = TrainConfig(recipe="paper", steps=300).resolve()
    assert (paper.target_norm, paper.shared_context, paper.hflip, paper.grad_clip) == ("layer", False, False, 0.0)
    assert (paper.ema_start, paper.ema_end, paper.betas, paper.crop_scale) == (0.996, 1.0, (0.9, 0.999), (0.3, 1.0))
    assert (paper.weight_decay, paper.final_weight_decay, paper.lr_schedule) == (0.04, 0.4, "cosine")
    assert paper.floor_mask_tokens and lr_at(0, 300, paper) == pytest.approx(2e-4 + (1e-3 - 2e-4) / 40)
    assert lr_at(39, 300, paper) == pytest.approx(1e-3) and lr_at(300, 300, paper) == pytest.approx(1e-6)
    assert TrainConfig(recipe="paper", lr=5e-4).resolve().lr == 5e-4              # a flag beats the recipe
    fast = RECIPES["fast"]
    differs = {name for name, value in RECIPES["paper"].items() if fast[name] != value}
    assert differs <= set(FAST_DEVIATIONS), differs - set(FAST_DEVIATIONS)     # every deviation has its reason


def test_schedules():
    config = TrainConfig(steps=100, lr=1e-3, min_lr=0.0, warmup_steps=10, weight_decay=0.04, final_weight_decay=0.4,
                         lr_schedule="cosine")
    assert lr_at(0, 100, config) == pytest.approx(1e-4)
    assert lr_at(9, 100, config) == pytest.approx(1e-3)
    assert lr_at(100, 100, config) == pytest.approx(0.0, abs=1e-12)
    lrs = [lr_at(s, 100, config) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert weight_decay_at(0, 100, config) == pytest.approx(0.04)
    assert weight_decay_at(100, 100, config) == pytest.approx(0.4)


def test_constant_lr_schedule_warms_up_then_stays():
    config = TrainConfig(steps=100, lr=1e-3, min_lr=0.0, warmup_steps=10, lr_schedule="constant")
    assert lr_at(0, 100, config) == pytest.approx(1e-4)
    assert [lr_at(s, 100, config) for s in (9, 50, 99, 100)] == pytest.approx([1e-3] * 4)
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        TrainConfig(lr_schedule="linear")


def test_param_groups_exclude_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model)
    assert [p.shape for p in decay["params"]] == [(4, 3)]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(40, 8, seed=1, step=s) for s in range(5)])
    assert sorted(seen.tolist()) == list(range(40))
    assert not torch.equal(batch_indices(40, 8, 1, 0), batch_indices(40, 8, 1, 5))  # next epoch reshuffles


def test_training_runs_and_writes_outputs(tmp_path, tiny_data):
    result = train(TrainConfig(steps=4, **TINY), tmp_path, dataset=tiny_data, progress=False, log=lambda *a: None)
    assert result.steps == 4
    assert (tmp_path / CHECKPOINT_NAME).exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for key in ("loss", "lr", "momentum", "target_std", "target_rankme", "target_image_share", "images_per_second"):
        assert math.isfinite(metrics[-1][key])
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 4
    checkpoint = load_checkpoint(tmp_path)
    model = jepa_from_checkpoint(checkpoint)
    assert torch.equal(model.target_encoder.patch_embed.proj.weight,
                       result.model.target_encoder.patch_embed.proj.weight)


def test_same_seed_same_losses_and_resume_is_exact(tmp_path, tiny_data):
    quiet = dict(dataset=tiny_data, progress=False, log=lambda *a: None)
    full = train(TrainConfig(steps=6, **TINY), tmp_path / "full", **quiet)
    again = train(TrainConfig(steps=6, **TINY), tmp_path / "again", **quiet)
    assert [m["loss"] for m in full.history] == [m["loss"] for m in again.history]

    # stop after 3 steps (as if interrupted), then resume to 6 in a fresh Trainer
    trainer = Trainer(TrainConfig(steps=6, **TINY), tmp_path / "split", **quiet)
    for _ in range(3):
        trainer.train_step(trainer.step, trainer.total_steps)
        trainer.step += 1
    trainer.save()
    resumed = train(TrainConfig(steps=6, **TINY), tmp_path / "split", **quiet)
    losses_full = [m["loss"] for m in full.history][3:]
    losses_resumed = [m["loss"] for m in resumed.history]
    assert losses_resumed == losses_full
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_refuses_a_different_run(tmp_path, tiny_data):
    train(TrainConfig(steps=2, **TINY), tmp_path, dataset=tiny_data, progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="batch_size=16"):
        Trainer(TrainConfig(steps=2, **{**TINY, "batch_size": 8}), tmp_path, dataset=tiny_data, progress=False)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path, tiny_data):
    train(TrainConfig(steps=2, **TINY), tmp_path, dataset=tiny_data, progress=False, log=lambda *a: None)
    good = load_checkpoint(tmp_path)
    trainer = Trainer(TrainConfig(steps=6, **TINY), tmp_path, dataset=tiny_data, progress=False, log=lambda *a: None)
    with torch.no_grad():
        trainer.model.context_encoder.patch_embed.proj.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan by step 3"):
        trainer.run()
    kept = load_checkpoint(tmp_path)
    assert kept["step"] == good["step"] == 2
    assert torch.isfinite(kept["context_encoder"]["patch_embed.proj.weight"]).all()


def test_budget_run_stops_on_time(tmp_path, tiny_data):
    import time
    start = time.perf_counter()
    result = train(TrainConfig(budget_minutes=0.05, **TINY), tmp_path, dataset=tiny_data, progress=False,
                   log=lambda *a: None)
    assert time.perf_counter() - start < 3 * 0.05 * 60 + 5
    assert result.steps > 0
    assert load_checkpoint(tmp_path)["total_steps"] == result.steps


def test_atomic_save_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.pt"
    save_atomic({"a": torch.ones(2)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"a": Unpicklable()}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_checkpoint_from_other_architecture_lists_mismatched_keys(tmp_path, tiny_data):
    train(TrainConfig(steps=1, **TINY), tmp_path, dataset=tiny_data, progress=False, log=lambda *a: None)
    checkpoint = load_checkpoint(tmp_path)
    checkpoint["encoder_config"]["depth"] = 1
    checkpoint["encoder_config"]["embed_dim"] = 64
    checkpoint["encoder_config"]["num_heads"] = 4
    with pytest.raises(ValueError, match=r"(?s)unexpected keys \['blocks.1.*shape mismatches"):
        jepa_from_checkpoint(checkpoint)


def test_batch_and_crop_defaults_follow_the_data_set_unless_given():
    shapes = TrainConfig(data="shapes", steps=1).resolve()
    photos = TrainConfig(data="imagefolder:x", steps=1).resolve()
    assert (shapes.batch_size, shapes.crop_scale) == (128, (0.7, 1.0))
    assert (photos.batch_size, photos.crop_scale) == (256, (0.3, 1.0))
    mine = TrainConfig(data="shapes", steps=1, batch_size=32, crop_scale=[0.5, 1.0]).resolve()
    assert (mine.batch_size, mine.crop_scale) == (32, (0.5, 1.0))
    with pytest.raises(ValueError, match="crop_scale"):
        TrainConfig(data="shapes", steps=1, crop_scale=(0.9, 0.5))


# ---------------------------------------------------------------------------------------------
# objectives ("jepa" | "pixels" | "both") and encoders ("vit" | "cnn") in the same engine

def test_objective_and_encoder_options_validate():
    assert (TrainConfig().objective, TrainConfig().encoder, TrainConfig().pixel_weight) == ("jepa", "vit", 1.0)
    with pytest.raises(ValueError, match=r"unknown objective 'mae'; valid: jepa, pixels, both"):
        TrainConfig(steps=1, objective="mae")
    with pytest.raises(ValueError, match="pixel_weight must be > 0, got -1"):
        TrainConfig(steps=1, objective="both", pixel_weight=-1)


def test_same_batches_and_masks_whatever_the_objective(tmp_path, tiny_data):
    seen = {}
    for objective in ("jepa", "pixels", "both"):
        trainer = Trainer(TrainConfig(steps=3, objective=objective, **TINY), tmp_path / objective, dataset=tiny_data,
                          progress=False, log=lambda *a: None)
        calls = []
        model = trainer.forward

        def spy(images, context_indices, target_indices, target_images=None, model=model, calls=calls):
            calls.append((images.clone(), context_indices.clone(), target_indices.clone()))
            return model(images, context_indices, target_indices, target_images)
        trainer.forward = spy
        for step in range(3):
            trainer.train_step(step, 3)
        seen[objective] = calls
    for objective in ("pixels", "both"):
        for a, b in zip(seen["jepa"], seen[objective]):
            assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("objective", ["pixels", "both"])
def test_pixel_objectives_train_log_and_checkpoint_the_pixel_head(tmp_path, tiny_data, objective):
    result = train(TrainConfig(steps=3, objective=objective, **TINY), tmp_path, dataset=tiny_data, progress=False,
                   log=lambda *a: None)
    last = result.history[-1]
    assert math.isfinite(last["pixel_loss"])
    if objective == "both":
        assert last["loss"] == pytest.approx(last["embedding_loss"] + last["pixel_loss"], rel=1e-5)
    else:
        assert "embedding_loss" not in last and last["loss"] == pytest.approx(last["pixel_loss"])
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["train_config"]["objective"] == objective and "pixel_head" in checkpoint
    model = jepa_from_checkpoint(checkpoint)
    assert model.objective == objective
    assert torch.equal(model.pixel_head.weight, result.model.pixel_head.weight)
    # missing head in the checkpoint: a clear error, not a silent random head
    del checkpoint["pixel_head"]
    with pytest.raises(ValueError, match="no pixel_head"):
        jepa_from_checkpoint(checkpoint)


def test_jepa_runs_keep_their_old_checkpoint_and_metrics(tmp_path, tiny_data):
    result = train(TrainConfig(steps=2, **TINY), tmp_path, dataset=tiny_data, progress=False, log=lambda *a: None)
    assert result.model.pixel_head is None
    checkpoint = load_checkpoint(tmp_path)
    assert "pixel_head" not in checkpoint
    assert not {"pixel_loss", "embedding_loss"} & set(result.history[-1])


def test_checkpoints_from_before_the_options_load_and_resume_as_jepa(tmp_path, tiny_data):
    quiet = dict(dataset=tiny_data, progress=False, log=lambda *a: None)
    full = train(TrainConfig(steps=4, **TINY), tmp_path / "full", **quiet)
    trainer = Trainer(TrainConfig(steps=4, **TINY), tmp_path / "old", **quiet)
    for _ in range(2):
        trainer.train_step(trainer.step, trainer.total_steps)
        trainer.step += 1
    state = trainer.state()
    for key in ("objective", "pixel_weight", "encoder"):      # what an older version wrote
        del state["train_config"][key]
    torch.save(state, tmp_path / "old" / CHECKPOINT_NAME)
    old = load_checkpoint(tmp_path / "old")
    assert "objective" not in old["train_config"]
    assert jepa_from_checkpoint(old).objective == "jepa"
    resumed = train(TrainConfig(steps=4, **TINY), tmp_path / "old", **quiet)
    assert [m["loss"] for m in resumed.history] == [m["loss"] for m in full.history][2:]
    with pytest.raises(ValueError, match="objective='jepa'"):
        Trainer(TrainConfig(steps=4, objective="both", **TINY), tmp_path / "old", **quiet)


def test_checkpoints_from_before_target_norm_are_layer_normed_runs(tmp_path, tiny_data):
    quiet = dict(dataset=tiny_data, progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match=r"unknown target_norm 'batch'; valid: layer, instance, none"):
        TrainConfig(steps=1, target_norm="batch")
    assert TrainConfig().resolve().target_norm == "instance"
    trainer = Trainer(TrainConfig(steps=4, target_norm="layer", **TINY), tmp_path / "old", **quiet)
    trainer.train_step(0, trainer.total_steps)
    trainer.step = 1
    state = trainer.state()
    del state["train_config"]["target_norm"]                  # what an older version wrote
    torch.save(state, tmp_path / "old" / CHECKPOINT_NAME)
    assert jepa_from_checkpoint(load_checkpoint(tmp_path / "old")).target_norm == "layer"
    with pytest.raises(ValueError, match="target_norm='layer'"):
        Trainer(TrainConfig(steps=4, **TINY), tmp_path / "old", **quiet)
    resumed = train(TrainConfig(steps=4, target_norm="layer", **TINY), tmp_path / "old", **quiet)
    assert resumed.steps == 4


def test_resume_is_exact_for_the_combined_objective(tmp_path, tiny_data):
    quiet = dict(dataset=tiny_data, progress=False, log=lambda *a: None)
    config = TrainConfig(steps=4, objective="both", **TINY)
    full = train(config, tmp_path / "full", **quiet)
    trainer = Trainer(config, tmp_path / "split", **quiet)
    for _ in range(2):
        trainer.train_step(trainer.step, trainer.total_steps)
        trainer.step += 1
    trainer.save()
    resumed = train(config, tmp_path / "split", **quiet)
    assert [m["loss"] for m in resumed.history] == [m["loss"] for m in full.history][2:]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_cli_flags_for_objective_and_encoder(tmp_path, capsys):
    from jepa_lite.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in ("--objective {jepa,pixels,both}", "--pixel-weight PIXEL_WEIGHT", "--encoder {vit,cnn}"):
        assert flag in help_text
    common = ["--model", "micro", "--batch-size", "16", "--max-train-images", "64", "--device", "cpu", "--quiet",
              "--image-size", "16", "--patch-size", "2", "--steps", "2"]
    with pytest.raises(SystemExit) as refused:
        main(["train", "--out", str(tmp_path / "bad"), "--objective", "mae", *common])
    assert refused.value.code == 2 and "invalid choice: 'mae'" in capsys.readouterr().err
    out = tmp_path / "pixels"
    assert main(["train", "--out", str(out), "--objective", "pixels", *common]) == 0
    assert load_checkpoint(out)["train_config"]["objective"] == "pixels"
    assert main(["probe", "--checkpoint", str(out), "--max-train-images", "60", "--max-test-images", "30"]) == 0
    assert "target encoder" in capsys.readouterr().out


def test_a_collapsing_run_is_warned_about_once_and_a_healthy_one_not(tmp_path, tiny_data):
    # the literal joint objective on layer-normed targets collapses (notebook 04); with EMA it does not
    logs = {}
    for mode in ("joint", "ema"):
        logs[mode] = []
        result = train(TrainConfig(steps=60, target_mode=mode, target_norm="layer", **TINY), tmp_path / mode,
                       dataset=tiny_data, progress=False, log=logs[mode].append)
        assert math.isfinite(result.history[-1]["target_image_share"])
    warnings = [line for line in logs["joint"] if "looks collapsed" in line]
    assert len(warnings) == 1 and "target std" in warnings[0]
    assert not [line for line in logs["ema"] if "looks collapsed" in line]


def test_a_batch_of_one_image_trains_and_logs_no_image_share(tmp_path, tiny_data):
    logs = []
    result = train(TrainConfig(steps=2, **{**TINY, "batch_size": 1}), tmp_path, dataset=tiny_data, progress=False,
                   log=logs.append)
    assert result.steps == 2 and math.isfinite(result.history[-1]["loss"])
    assert math.isnan(result.history[-1]["target_image_share"])        # undefined for one image, not an error
    assert not [line for line in logs if "looks collapsed" in line]


def test_the_collapse_warning_names_a_positional_collapse(tmp_path, tiny_data):
    logs = []
    trainer = Trainer(TrainConfig(steps=1, **TINY), tmp_path, dataset=tiny_data, progress=False, log=logs.append)
    healthy = {"step": 7, "target_std": 0.15, "target_image_share": 0.9}
    assert not trainer._warn_if_collapsed(healthy) and not logs
    # the std looks healthy, but the tokens no longer depend on the image (notebook 04, Exercise 4)
    assert trainer._warn_if_collapsed({**healthy, "target_image_share": 0.01})
    assert "step 7" in logs[-1] and "1.0% of the target variance is across images" in logs[-1]
    assert "target std" not in logs[-1]


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_checkpoint_and_the_same_command_resumes_exactly(tmp_path, tiny_data, monkeypatch, capsys,
                                                                          signum):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM in the middle of a run: the step under way finishes, a
    checkpoint is written, the command exits with 128 + the signal's number, and rerunning the same
    command ends where an uninterrupted run ends, with the same weights."""
    import os
    import signal

    from jepa_lite.cli import main

    sent = getattr(signal, signum)
    args = ["train", "--model", "micro", "--batch-size", "16", "--max-train-images", "64", "--image-size", "16",
            "--patch-size", "2", "--device", "cpu", "--quiet", "--steps", "8", "--warmup-steps", "2"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    original_step = Trainer.train_step

    def step_then_signal(self, step, total):
        result = original_step(self, step, total)
        if step == 3:
            os.kill(os.getpid(), sent)             # arrives while the loop runs, as a real Ctrl-C would
        return result
    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    assert main([*args, "--out", str(tmp_path / "split")]) == 128 + sent
    assert f"stopped by {signum} at step 4" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "split")["step"] == 4
    monkeypatch.setattr(Trainer, "train_step", original_step)
    assert signal.getsignal(sent) is not None and main([*args, "--out", str(tmp_path / "split")]) == 0
    whole, split = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    assert split["step"] == whole["step"] == 8
    for part in ("context_encoder", "target_encoder", "predictor"):
        for key, value in whole[part].items():
            assert torch.equal(value, split[part][key]), (part, key)


def test_handlers_are_restored_after_training(tmp_path, tiny_data):
    import signal

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train(TrainConfig(steps=2, **TINY), tmp_path / "run", dataset=tiny_data, progress=False, log=lambda *a: None)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_training_step_leaves_the_global_random_state_alone(tmp_path, tiny_data):
    """Building the model seeds only a forked generator, and drop-path draws from the trainer's own
    generator (seeded per step), not from torch's global one: a user's torch.manual_seed keeps its
    meaning around training, and resumed runs draw the same masks."""
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    trainer = Trainer(TrainConfig(steps=4, drop_path=0.2, **TINY), tmp_path / "run", dataset=tiny_data,
                      progress=False, log=lambda *a: None)
    first = trainer.train_step(0, 4)["loss"]
    assert torch.equal(torch.rand(3), expected)
    again = Trainer(TrainConfig(steps=4, drop_path=0.2, **TINY), tmp_path / "again", dataset=tiny_data,
                    progress=False, log=lambda *a: None)
    torch.manual_seed(999)                         # a different global state: the same step, the same loss
    assert torch.equal(again.train_step(0, 4)["loss"], first)


def test_metrics_are_appended_as_they_are_logged_and_match_after_resume(tmp_path, tiny_data):
    """metrics.jsonl gets a line per logged record while the run goes (checkpoints are written far
    apart here); a resumed run starts it again from the checkpoint's records, so no line is doubled."""
    quiet = dict(dataset=tiny_data, progress=False, log=lambda *a: None)
    seen = []
    original = Trainer.train_step

    def spy(self, step, total):
        path = tmp_path / "run" / "metrics.jsonl"
        seen.append(len(path.read_text().splitlines()))
        return original(self, step, total)
    trainer = Trainer(TrainConfig(steps=6, **TINY), tmp_path / "run", **quiet)
    trainer.train_step = spy.__get__(trainer)
    trainer.run(until_step=4)
    assert seen == [0, 1, 2, 3]                    # one line per step (log_every=1), before any checkpoint
    result = train(TrainConfig(steps=6, **TINY), tmp_path / "run", **quiet)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert lines == json.loads((tmp_path / "run" / "metrics.json").read_text()) == result.history


def test_one_warm_up_the_given_one_wins_over_the_recipes():
    paper = TrainConfig(recipe="paper", steps=3000).resolve()
    assert warmup_length(3000, paper) == 400                                    # 40 of 300 "epochs"
    asked = TrainConfig(recipe="paper", steps=3000, warmup_steps=50).resolve()
    assert (asked.warmup_steps, asked.warmup_fraction, warmup_length(3000, asked)) == (50, 0.0, 50)
    fraction = TrainConfig(steps=3000, warmup_fraction=0.2).resolve()           # fast recipe: 100 steps otherwise
    assert (fraction.warmup_steps, warmup_length(3000, fraction)) == (0, 600)
    with pytest.raises(ValueError, match=r"give only one warm-up: warmup_steps \(50\) or warmup_fraction \(0.2\)"):
        TrainConfig(warmup_steps=50, warmup_fraction=0.2)


def test_changed_lets_a_new_recipe_data_set_size_or_length_bring_its_own_values():
    """What `jepa-lite train --config RUN ...` does: a saved (resolved) run with changes on top."""
    saved = TrainConfig(steps=100, data="shapes").resolve()                        # fast, shapes, tiny
    assert saved.changed(lr=5e-4).resolve() == dataclasses.replace(saved, lr=5e-4)   # a plain change: only it
    paper = saved.changed(recipe="paper").resolve()
    assert paper == TrainConfig(steps=100, data="shapes", recipe="paper").resolve()
    cifar = saved.changed(data="cifar10").resolve()
    assert (cifar.batch_size, cifar.crop_scale) == (256, (0.3, 1.0)) and cifar.lr == saved.lr
    assert saved.changed(data="cifar10", batch_size=64).resolve().batch_size == 64   # given beats the default
    assert saved.changed(model="vit_b_224").resolve().patch_size == 16
    timed = saved.changed(budget_minutes=2.0).resolve()
    assert (timed.steps, timed.budget_minutes) == (None, 2.0)
    paper_run = TrainConfig(recipe="paper", steps=100).resolve()
    assert warmup_length(100, paper_run.changed(warmup_steps=5).resolve()) == 5


def test_without_a_log_function_messages_go_to_the_jepa_lite_logger(tmp_path, tiny_data, caplog, capsys,
                                                                    monkeypatch):
    """A library reports through logging (the command line prints it); nothing is printed by itself."""
    import logging
    package_logger = logging.getLogger("jepa_lite")     # as in a fresh process: no command line has run
    monkeypatch.setattr(package_logger, "handlers", [])
    monkeypatch.setattr(package_logger, "propagate", True)
    config = TrainConfig(steps=2, **TINY)
    train(config, tmp_path, dataset=tiny_data, progress=False)
    with caplog.at_level(logging.INFO, logger="jepa_lite"):
        Trainer(TrainConfig(steps=3, **TINY), tmp_path, dataset=tiny_data, progress=False)
    assert [r.getMessage() for r in caplog.records if r.name == "jepa_lite"] == ["resumed from checkpoint.pt at step 2"]
    assert "resumed" not in capsys.readouterr().out


def test_a_config_is_a_hashable_value_that_survives_its_json():
    """TrainConfig is frozen and hashable (mask overrides are kept as sorted pairs), and the resolved
    config a run saves comes back equal from its JSON."""
    import dataclasses
    import json
    config = TrainConfig(mask={"target_scale": [0.1, 0.2], "num_targets": 2}, steps=5)
    assert config.mask == (("num_targets", 2), ("target_scale", (0.1, 0.2)))
    assert config == TrainConfig(mask={"num_targets": 2, "target_scale": (0.1, 0.2)}, steps=5)
    assert len({config, config.resolve(), config.resolve()}) == 2
    saved = json.loads(json.dumps(dataclasses.asdict(config.resolve())))
    assert TrainConfig.from_dict(saved) == config.resolve()
    assert dict(config.mask) == {"num_targets": 2, "target_scale": (0.1, 0.2)}

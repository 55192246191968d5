import json

import pytest
import torch

from jepa_lite.cli import main

COMMON = ["--model", "micro", "--batch-size", "16", "--max-train-images", "64", "--device", "cpu", "--quiet"]
FAST = ["--image-size", "16", "--patch-size", "2", *COMMON]


def test_train_then_probe_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "3", "--out", str(out), *FAST]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    assert (out / "checkpoint.pt").exists() and (out / "metrics.json").exists()
    assert main(["probe", "--checkpoint", str(out), "--max-train-images", "100", "--max-test-images", "50"]) == 0
    printed = capsys.readouterr().out
    for name in ("target encoder", "context encoder", "random init", "raw pixels"):
        assert name in printed
    table = json.loads((out / "probe.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["target encoder", "context encoder", "random init", "raw pixels"]
    assert table["test_images"] == 50


def test_mask_overrides_reach_the_config(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--steps", "1", "--out", str(out), "--mask", "num_targets=2",
                 "--mask", "strategy=random", *FAST]) == 0
    mask = json.loads((out / "config.json").read_text())["mask"]
    assert mask["num_targets"] == 2 and mask["strategy"] == "random"


def test_config_reruns_a_run_and_a_new_recipe_brings_its_settings(tmp_path):
    first, again, paper = tmp_path / "first", tmp_path / "again", tmp_path / "paper"
    assert main(["train", "--steps", "3", "--out", str(first), "--seed", "3", *FAST]) == 0
    assert main(["train", "--config", str(first), "--out", str(again), "--quiet"]) == 0
    saved = [json.loads((run / "config.json").read_text())["train"] for run in (first, again)]
    assert saved[0] == saved[1] and saved[0]["seed"] == 3
    states = [torch.load(run / "checkpoint.pt", weights_only=True) for run in (first, again)]
    for part in ("context_encoder", "target_encoder", "predictor"):                       # the same run
        assert all(torch.equal(states[0][part][name], states[1][part][name]) for name in states[0][part])
    assert main(["train", "--config", str(first / "config.json"), "--recipe", "paper", "--steps", "2",
                 "--out", str(paper), "--quiet"]) == 0
    changed = json.loads((paper / "config.json").read_text())["train"]
    assert (changed["recipe"], changed["target_norm"], changed["ema_start"], changed["steps"]) == \
        ("paper", "layer", 0.996, 2)
    assert changed["model"] == "micro" and changed["batch_size"] == 16 and changed["seed"] == 3   # the run's own


@pytest.mark.parametrize("args, message", [
    (["--budget-minutes", "0"], "budget_minutes must be > 0, got 0.0"),
    (["--budget-minutes", "-2"], "budget_minutes must be > 0, got -2.0"),
    (["--model", "huge", "--steps", "1"], "invalid choice: 'huge'"),
    (["--recipe", "mine", "--steps", "1"], "invalid choice: 'mine'"),
    (["--ema-start", "1.5", "--steps", "1"], "ema_start must be in [0, 1], got 1.5"),
    (["--image-size", "30", "--patch-size", "4", "--steps", "1"], "30 is not divisible by patch_size 4"),
    (["--data", "nonsense", "--steps", "1"], "nonsense"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    """Exit code 2 and one clear line, whether argparse (choices) or the config (ranges) refuses."""
    base = COMMON if "--image-size" in args else FAST
    try:
        code = main(["train", "--out", str(tmp_path / "r"), *base, *args])
    except SystemExit as stop:                     # argparse: a value outside the flag's choices
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_empty_image_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", f"imagefolder:{tmp_path / 'empty'}", "--steps", "1",
                 "--out", str(tmp_path / "r"), *FAST]) == 2
    assert "empty" in capsys.readouterr().err


def test_probe_of_missing_checkpoint(tmp_path, capsys):
    assert main(["probe", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


class _NotAllowed:
    """A class torch's weights_only loader refuses: stands for any foreign pickled object."""


def _bad_checkpoints(folder, good):
    """{kind: path} of files that are not usable checkpoints; `good` is a real one to damage."""
    import collections

    import torch

    files = {"empty": b"", "text": b"hello, not a checkpoint\n", "truncated": good.read_bytes()[:20_000]}
    paths = {}
    for kind, data in files.items():
        paths[kind] = folder / f"{kind}.pt"
        paths[kind].write_bytes(data)
    paths["foreign object"] = folder / "foreign.pt"
    torch.save({"x": _NotAllowed()}, paths["foreign object"])
    paths["other format"] = folder / "other.pt"
    torch.save(collections.OrderedDict(weight=torch.zeros(2)), paths["other format"])
    paths["incomplete"] = folder / "incomplete.pt"
    torch.save({"format": "jepa_lite/1", "step": 3}, paths["incomplete"])
    return paths


def test_bad_checkpoint_files_are_one_line_errors(tmp_path, capsys):
    """probe and a resuming train refuse every damaged or foreign file in one line (exit 2) that names
    it, with no traceback and never torch's advice to turn weights_only off."""
    run = tmp_path / "run"
    assert main(["train", "--steps", "1", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    for kind, path in _bad_checkpoints(tmp_path, run / "checkpoint.pt").items():
        assert main(["probe", "--checkpoint", str(path)]) == 2, kind
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and path.name in err, (kind, err)
        assert "weights_only" not in err and "Traceback" not in err, (kind, err)
        resume = tmp_path / f"resume-{path.stem}"
        resume.mkdir()
        (resume / "checkpoint.pt").write_bytes(path.read_bytes())
        assert main(["train", "--steps", "2", "--out", str(resume), *FAST]) == 2, kind
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "checkpoint.pt" in err, (kind, err)


def test_unexpected_errors_keep_their_traceback(tmp_path, monkeypatch):
    """Only expected errors become one line: a bug (here a RuntimeError from inside training) propagates."""
    import jepa_lite.engine.train as train_module

    def broken(*args, **kwargs):
        raise RuntimeError("shape bug")
    monkeypatch.setattr(train_module.Trainer, "train_step", broken)
    with pytest.raises(RuntimeError, match="shape bug"):
        main(["train", "--steps", "2", "--out", str(tmp_path / "run"), *FAST])

    def wrong_value(*args, **kwargs):          # a ValueError from torch or numpy is a bug too, not bad input
        raise ValueError("too many values to unpack")
    monkeypatch.setattr(train_module.Trainer, "train_step", wrong_value)
    with pytest.raises(ValueError, match="too many values"):
        main(["train", "--steps", "2", "--out", str(tmp_path / "run2"), *FAST])


def test_probe_runs_on_the_device_asked_for_and_refuses_a_missing_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "2", "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert main(["probe", "--checkpoint", str(out), "--device", "cpu", "--max-train-images", "60",
                 "--max-test-images", "30"]) == 0
    captured = capsys.readouterr()
    assert "device cpu" in captured.out and "target encoder, train" in captured.err   # the progress bars
    import torch
    if not torch.cuda.is_available():
        assert main(["probe", "--checkpoint", str(out), "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "no CUDA GPU" in err
    assert main(["train", "--steps", "1", "--device", "tpu9", "--out", str(tmp_path / "x"), *FAST[:-3]]) == 2
    assert "unknown device 'tpu9'" in capsys.readouterr().err

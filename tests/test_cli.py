import json

import pytest

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


@pytest.mark.parametrize("args, message", [
    (["--budget-minutes", "0"], "budget_minutes must be > 0, got 0.0"),
    (["--budget-minutes", "-2"], "budget_minutes must be > 0, got -2.0"),
    (["--model", "huge", "--steps", "1"], "unknown model size 'huge'"),
    (["--image-size", "30", "--patch-size", "4", "--steps", "1"], "30 is not divisible by patch_size 4"),
    (["--data", "nonsense", "--steps", "1"], "nonsense"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    base = COMMON if "--image-size" in args else FAST
    assert main(["train", "--out", str(tmp_path / "r"), *base, *args]) == 2
    assert message in capsys.readouterr().err


def test_empty_image_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", f"imagefolder:{tmp_path / 'empty'}", "--steps", "1",
                 "--out", str(tmp_path / "r"), *FAST]) == 2
    assert "empty" in capsys.readouterr().err


def test_probe_of_missing_checkpoint(tmp_path, capsys):
    assert main(["probe", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err

"""The course's profile switch and checkpoint choice (jepa_lite.course.profiles), and running the course
(jepa_lite.course.runner)."""
import pytest

from jepa_lite.course import profiles, runner
from jepa_lite.course.profiles import PROFILE_ENV, PROFILES, active_profile


def test_profile_from_environment_and_argument(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "test")
    assert active_profile().name == "test"
    assert active_profile("gpu").name == "gpu"            # an explicit name wins over the environment
    monkeypatch.delenv(PROFILE_ENV)
    assert active_profile().name == profiles.default_profile_name()


def test_unknown_profile_names_the_value_and_the_choices(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "laptop")
    with pytest.raises(ValueError, match=r"'laptop'.*test, cpu, gpu"):
        active_profile()


def test_profiles_grow_from_test_to_gpu():
    test, cpu, gpu = PROFILES["test"], PROFILES["cpu"], PROFILES["gpu"]
    for field in ("demo_steps", "probe_train_images", "probe_test_images", "umap_points"):
        assert getattr(test, field) < getattr(cpu, field) <= getattr(gpu, field), field
    for p in PROFILES.values():                           # exactly one training length is set
        assert (p.train_minutes is None) != (p.train_steps is None), p.name
    assert cpu.data == test.data == "shapes-mono"           # CPU profiles never download


def _tiny_checkpoint(path, data="shapes-mono", steps=7):
    """A real (tiny) checkpoint file: find_checkpoint reads its data set and length."""
    from jepa_lite.data.datasets import make_shapes
    from jepa_lite.engine.config import TrainConfig
    from jepa_lite.engine.train import Trainer

    trainer = Trainer(TrainConfig(model="micro", steps=steps, batch_size=8, data=data),
                      path.parent, dataset=make_shapes(16), resume=False, progress=False, log=lambda *a: None)
    trainer.run()
    return path


def test_find_checkpoint_order_drive_then_run_then_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "repo_root", lambda: tmp_path / "repo")
    monkeypatch.setenv(profiles.DRIVE_ENV, str(tmp_path / "drive"))
    profile = PROFILES["test"]
    with pytest.raises(FileNotFoundError, match="run notebook 05 first"):
        profiles.find_checkpoint(profile)

    shipped = _tiny_checkpoint(tmp_path / "repo" / profiles.SHIPPED_CHECKPOINT.replace(".pt", "") / "checkpoint.pt")
    (tmp_path / "repo" / profiles.SHIPPED_CHECKPOINT).write_bytes(shipped.read_bytes())
    choice = profiles.find_checkpoint(profile)
    assert choice.source == "shipped" and choice.path == tmp_path / "repo" / profiles.SHIPPED_CHECKPOINT
    assert "no run of notebook 05" in choice.message and "shapes_mono_tiny.pt" in choice.message
    assert str(tmp_path) not in choice.message.replace(str(tmp_path / "drive"), "")   # only the Drive path is absolute

    local = _tiny_checkpoint(profiles.notebook05_run_dir(profile) / "checkpoint.pt", steps=5)
    choice = profiles.find_checkpoint(profile)
    assert choice.source == "run" and choice.path == local and choice.steps == 5
    assert "this machine" in choice.message and "runs/notebook05-test/checkpoint.pt" in choice.message

    on_drive = _tiny_checkpoint(profiles.notebook05_run_dir(profile, use_drive=True) / "checkpoint.pt", steps=6)
    assert on_drive.is_relative_to(tmp_path / "drive")
    choice = profiles.find_checkpoint(profile)
    assert choice.source == "drive" and choice.path == on_drive and "Google Drive" in choice.message


def test_find_checkpoint_says_loudly_when_the_data_set_differs(tmp_path, monkeypatch):
    """The gpu profile pretrains on CIFAR-10; with no run of notebook 05 in this runtime (a new
    Colab runtime), notebooks 06-08 fall back on the shapes checkpoint and must say so."""
    monkeypatch.setattr(profiles, "repo_root", lambda: tmp_path)
    monkeypatch.delenv(profiles.DRIVE_ENV, raising=False)
    monkeypatch.setattr(profiles, "COLAB_DRIVE", tmp_path / "not-mounted")
    made = _tiny_checkpoint(tmp_path / "made" / "checkpoint.pt")
    (tmp_path / "data").mkdir()
    (tmp_path / profiles.SHIPPED_CHECKPOINT).write_bytes(made.read_bytes())
    choice = profiles.find_checkpoint(PROFILES["gpu"])
    assert choice.source == "shipped" and choice.data == "shapes-mono"
    assert "measured on shapes-mono, not cifar10" in choice.message


def test_notebook05_refuses_drive_when_it_is_not_mounted(tmp_path, monkeypatch):
    monkeypatch.delenv(profiles.DRIVE_ENV, raising=False)
    monkeypatch.setattr(profiles, "COLAB_DRIVE", tmp_path / "not-mounted")
    assert profiles.drive_folder() is None
    with pytest.raises(FileNotFoundError, match="drive.mount"):
        profiles.notebook05_run_dir(PROFILES["cpu"], use_drive=True)
    monkeypatch.setattr(profiles, "COLAB_DRIVE", tmp_path)          # mounted: the course's own folder in it
    assert profiles.drive_folder() == tmp_path / "jepa-lite"


def test_gpu_profile_trains_for_a_time_budget():
    gpu = PROFILES["gpu"]
    assert gpu.train_minutes is not None and gpu.train_steps is None
    assert "min" in gpu.summary()


def test_course_notebooks_are_in_teaching_order():
    names = [p.name for p in runner.course_notebooks()]
    assert names == sorted(names) and names, names
    assert all(name[:2].isdigit() for name in names)


def test_run_course_rejects_an_unknown_notebook():
    with pytest.raises(ValueError, match="no notebook matches"):
        runner.run_course("unused", profile="test", only=["99"], log=lambda *a: None)


@pytest.mark.parametrize("spec", list(profiles.SHIPPED_CHECKPOINTS))
def test_the_shipped_checkpoint_loads_into_the_current_code(spec):
    """data/shapes_tiny.pt (notebook 06's fallback, data/README.md) and its one-palette twin must load
    into today's models: a change to the architecture or the checkpoint format that breaks them fails
    here, by name."""
    import torch

    from jepa_lite.data.datasets import make_shapes, normalize
    from jepa_lite.engine.checkpoint import jepa_from_checkpoint, load_checkpoint
    from jepa_lite.engine.config import TrainConfig

    checkpoint = load_checkpoint(profiles.repo_root() / profiles.SHIPPED_CHECKPOINTS[spec])
    assert checkpoint["data"]["spec"] == spec and checkpoint["step"] == checkpoint["total_steps"]
    recipe = TrainConfig(steps=1).resolve()                # the shipped run is the default recipe ...
    for key in ("model", "target_norm", "loss", "ema_start", "batch_size"):
        assert checkpoint["train_config"][key] == getattr(recipe, key), key
    assert checkpoint["train_config"]["lr"] == 1.5e-3          # ... at the lr `make checkpoint` sets (SHIPPED_LR)
    model = jepa_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        tokens = model.target_encoder(normalize(make_shapes(4, seed=0).images))
    assert tokens.shape == (4, 64, model.target_encoder.config.embed_dim) and torch.isfinite(tokens).all()


@pytest.mark.slow                          # a 6-second time budget, by design
def test_gpu_profile_code_path_runs_on_cpu_at_test_sizes(tmp_path):
    """Notebook 05 on the gpu profile, shrunk: its model, a time budget (not a step count), the
    precision chosen for the device; shapes stands in for CIFAR-10 (tests never download)."""
    from jepa_lite.data.datasets import make_shapes
    from jepa_lite.engine.config import TrainConfig
    from jepa_lite.engine.train import Trainer

    gpu = PROFILES["gpu"]
    config = TrainConfig(data="shapes", model=gpu.model, batch_size=16, budget_minutes=0.1,
                         log_every=5)
    trainer = Trainer(config, tmp_path, dataset=make_shapes(64), resume=False, progress=False, log=lambda *a: None)
    assert trainer.precision == "fp32"                    # what the CPU gets; GPUs: tests/test_device.py
    result = trainer.run()
    assert result.steps >= 1 and result.seconds <= 0.1 * 60 + 30     # a loaded machine may take one step
    assert trainer.total_steps == result.steps            # the budget set the length


@pytest.mark.slow                          # a fresh Jupyter kernel in a subprocess: ~15 s
def test_run_course_executes_and_reports_time_and_memory(tmp_path, monkeypatch):
    """run_course's own runner (a fresh kernel per notebook) on a two-cell notebook."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbconvert")
    notebook = tmp_path / "00_tiny.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = [0] * 1000\nprint(len(x))")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    monkeypatch.setattr(runner, "course_notebooks", lambda folder=None: [notebook])
    lines = []
    results = runner.run_course(tmp_path / "out", profile="test", log=lines.append)
    assert [r["notebook"] for r in results] == ["00_tiny.ipynb"]
    assert results[0]["peak_memory_mib"] > 0 and results[0]["peak_accelerator_memory_mib"] == 0
    executed = nbformat.read(tmp_path / "out" / "00_tiny.ipynb", as_version=4)
    assert len(executed.cells) == 1 and executed.cells[0].outputs[0]["text"] == "1000\n"   # the probe cell is gone
    assert any("00_tiny.ipynb" in line and "peak memory" in line for line in lines)


def test_expected_minutes_table_lists_every_notebook(monkeypatch):
    first, *rest = [p.name for p in runner.course_notebooks()]
    monkeypatch.setitem(runner.EXPECTED_MINUTES, "cpu", {first: 1.5})
    table = runner.expected_minutes_table(PROFILES["cpu"]).splitlines()
    assert table[0].startswith(first) and table[0].endswith("~ 1.5 min")
    assert all(line.endswith("not measured") for line in table[1:-1]) and len(table) == len(rest) + 2
    assert "(measured ones)" in table[-1]
    monkeypatch.setitem(runner.EXPECTED_MINUTES, "cpu", {})
    assert "no measured times" in runner.expected_minutes_table(PROFILES["cpu"])


def test_the_course_trains_what_the_command_line_trains_by_default(monkeypatch, tmp_path):
    """Notebook 05's run on the cpu profile and a plain `jepa-lite train` use one data set and recipe, so
    a 5-minute run from the command line gives the figures notebook 06 reads."""
    from dataclasses import asdict

    import jepa_lite.engine.train
    from jepa_lite.cli import main
    from jepa_lite.engine.config import TrainConfig

    seen = {}

    class Stop(Exception):
        pass

    def capture(config, *args, **kwargs):
        seen["config"] = config.resolve()
        raise Stop

    monkeypatch.setattr(jepa_lite.engine.train, "train", capture)
    with pytest.raises(Stop):
        main(["train", "--out", str(tmp_path / "run")])
    command_line = asdict(seen["config"])
    cpu = PROFILES["cpu"]
    # the fields notebook 05 sets from the profile (cell "run_config")
    notebook = asdict(TrainConfig(data=cpu.data, model=cpu.model, batch_size=cpu.batch_size,
                                  budget_minutes=cpu.train_minutes, steps=cpu.train_steps).resolve())
    apart = {"data_root", "max_train_images", "log_every", "budget_minutes", "steps"}
    differ = {k: (command_line[k], notebook[k]) for k in command_line
              if k not in apart and command_line[k] != notebook[k]}
    assert differ == {}
    assert command_line["data"] == "shapes-mono" and command_line["budget_minutes"] == cpu.train_minutes


def test_store_outputs_copies_outputs_and_refuses_other_cells(tmp_path):
    import json

    from jepa_lite.course.runner import store_outputs

    def notebook(outputs, count, sources=("x = 1", "assert x")):
        cells = [{"cell_type": "markdown", "metadata": {}, "source": "# title"}]
        for i, text in enumerate(sources):
            cells.append({"cell_type": "code", "metadata": {"tags": ["check"]} if i else {}, "source": text,
                          "outputs": outputs, "execution_count": count})
        return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

    shown = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    executed, source = tmp_path / "ran.ipynb", tmp_path / "kept.ipynb"
    executed.write_text(json.dumps(notebook(shown, 3)))
    source.write_text(json.dumps(notebook([], None)))
    store_outputs(executed, source)
    cells = json.loads(source.read_text())["cells"]
    assert cells[1]["outputs"] == shown and cells[1]["execution_count"] == 3
    assert cells[2]["execution_count"] is None                  # a check cell keeps no count
    executed.write_text(json.dumps(notebook(shown, 3, sources=("x = 2", "assert x"))))
    with pytest.raises(ValueError, match="does not hold the code cells"):
        store_outputs(executed, source)


def test_stored_course_runs_record_the_minutes_notebook_00_prints(tmp_path, monkeypatch):
    import json

    from jepa_lite.course import runner
    saved = tmp_path / "minutes.json"
    saved.write_text(json.dumps({"_about": {"cpu": "2 cores"}, "cpu": {"00_a.ipynb": 9.9, "01_b.ipynb": 1.0}}))
    monkeypatch.setitem(runner.EXPECTED_MINUTES, "cpu", {})
    runner.record_minutes("cpu", [{"notebook": "00_a.ipynb", "seconds": 90.0}], path=saved)
    kept = json.loads(saved.read_text())
    assert kept["cpu"] == {"00_a.ipynb": 1.5, "01_b.ipynb": 1.0} and kept["_about"] == {"cpu": "2 cores"}
    assert runner.EXPECTED_MINUTES["cpu"] == kept["cpu"]

"""The course's profile switch and checkpoint choice (jepa_lite.course)."""
import pytest

from jepa_lite import course
from jepa_lite.course import PROFILE_ENV, PROFILES, active_profile, pick_checkpoint


def test_profile_from_environment_and_argument(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "test")
    assert active_profile().name == "test"
    assert active_profile("gpu").name == "gpu"            # an explicit name wins over the environment
    monkeypatch.delenv(PROFILE_ENV)
    assert active_profile().name == course.default_profile_name()


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
    assert cpu.data == test.data == "shapes"                # CPU profiles never download


def test_pick_checkpoint_prefers_notebook05s_run(tmp_path, monkeypatch):
    monkeypatch.setattr(course, "repo_root", lambda: tmp_path)
    profile = PROFILES["test"]
    with pytest.raises(FileNotFoundError, match="run notebook 05"):
        pick_checkpoint(profile)
    shipped = tmp_path / course.SHIPPED_CHECKPOINT
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"x")
    assert pick_checkpoint(profile)[0] == shipped
    fresh = course.notebook05_run_dir(profile) / "checkpoint.pt"
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(b"x")
    path, sentence = pick_checkpoint(profile)
    assert path == fresh and "notebook 05" in sentence and str(tmp_path) not in sentence


def test_course_notebooks_are_in_teaching_order():
    names = [p.name for p in course.course_notebooks()]
    assert names == sorted(names) and names, names
    assert all(name[:2].isdigit() for name in names)


def test_run_course_rejects_an_unknown_notebook():
    with pytest.raises(ValueError, match="no notebook matches"):
        course.run_course("unused", profile="test", only=["99"], log=lambda *a: None)


def test_the_shipped_checkpoint_loads_into_the_current_code():
    """data/shapes_tiny.pt (notebook 06's fallback, data/README.md) must load into today's models: a
    change to the architecture or the checkpoint format that breaks it fails here, by name."""
    import torch

    from jepa_lite.data import make_shapes, normalize
    from jepa_lite.train import TrainConfig, jepa_from_checkpoint, load_checkpoint

    checkpoint = load_checkpoint(course.repo_root() / course.SHIPPED_CHECKPOINT)
    assert checkpoint["data"]["spec"] == "shapes" and checkpoint["step"] == checkpoint["total_steps"]
    recipe = TrainConfig(steps=1)                          # the shipped run is the default recipe
    for key in ("model", "target_norm", "loss", "ema_start", "lr", "batch_size"):
        assert checkpoint["train_config"][key] == getattr(recipe, key), key
    model = jepa_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        tokens = model.target_encoder(normalize(make_shapes(4, seed=0).images))
    assert tokens.shape == (4, 64, model.target_encoder.config.embed_dim) and torch.isfinite(tokens).all()

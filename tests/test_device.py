"""Precision by capability (jepa_lite.engine.device), tested on the CPU by forcing the GPU's answers."""
import pytest
import torch

from jepa_lite.engine.device import autocast_context, choose_precision, describe_device, grad_scaler


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend a CUDA device of the given compute capability is present (no GPU needed)."""
    def install(capability, name="Fake GPU"):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        return torch.device("cuda")
    return install


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 0), "fp16"),
                                                  ((8, 0), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_follows_the_compute_capability(fake_cuda, capability, expected):
    device = fake_cuda(capability)
    assert choose_precision(device) == expected
    line = describe_device(device)
    assert f"compute capability {capability[0]}.{capability[1]}" in line
    assert ("fp16 autocast with a gradient scaler" in line) == (expected == "fp16")


def test_cpu_and_mps_stay_in_float32_unless_asked():
    assert choose_precision(torch.device("cpu")) == "fp32"
    assert choose_precision(torch.device("mps")) == "fp32"
    assert choose_precision(torch.device("cpu"), "bf16") == "bf16"
    assert choose_precision(torch.device("cpu"), "none") == "fp32"          # older configs' name
    assert "float32" in describe_device(torch.device("cpu"))


def test_bad_precisions_name_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"'fp8'.*auto, bf16, fp16, fp32"):
        choose_precision(torch.device("cpu"), "fp8")
    with pytest.raises(ValueError, match="needs a GPU"):
        choose_precision(torch.device("cpu"), "fp16")


def test_autocast_and_scaler_on_cpu():
    cpu = torch.device("cpu")
    with autocast_context(cpu, "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast_context(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not grad_scaler(cpu, "fp32").is_enabled()


def test_trainer_uses_a_gradient_scaler_for_fp16_only(fake_cuda, monkeypatch, tmp_path):
    """The training step's fp16 path (scale, unscale, clip, step, update) on a T4-like answer; the
    arithmetic itself stays on the CPU so that the test runs anywhere."""
    from jepa_lite.data.datasets import make_shapes
    from jepa_lite.engine.config import TrainConfig
    from jepa_lite.engine.train import Trainer

    fake_cuda((7, 5), "Tesla T4")
    seen = []
    import jepa_lite.engine.train as train_module
    monkeypatch.setattr(train_module, "choose_precision", lambda device, amp="auto": "fp16")

    class RecordingScaler:                   # the GradScaler protocol, recording the calls in order
        def __init__(self):
            self.enabled = True
        def is_enabled(self):
            return True
        def scale(self, loss):
            seen.append("scale")
            return loss * 1024.0
        def unscale_(self, optimizer):
            seen.append("unscale")
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.div_(1024.0)
        def step(self, optimizer):
            seen.append("step")
            optimizer.step()
        def update(self):
            seen.append("update")
        def state_dict(self):
            return {"scale": 1024.0}
        def load_state_dict(self, state):
            seen.append(("load", state["scale"]))

    monkeypatch.setattr(train_module, "grad_scaler", lambda device, precision: RecordingScaler())
    monkeypatch.setattr(train_module, "autocast_context",
                        lambda device, precision: torch.autocast("cpu", enabled=False))
    config = TrainConfig(model="micro", steps=2, batch_size=8, device="cpu")
    trainer = Trainer(config, tmp_path, dataset=make_shapes(16), resume=False, progress=False,
                      log=lambda *a: None)
    assert trainer.precision == "fp16"
    result = trainer.train_step(0, 2)
    assert seen == ["scale", "unscale", "step", "update"] and torch.isfinite(result["loss"])
    assert trainer.state()["grad_scaler"] == {"scale": 1024.0}

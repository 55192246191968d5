"""Where the networks run, and in which arithmetic.

    pick_device("auto")          cuda if present, else Apple's mps, else cpu
    choose_precision(device)     "bf16", "fp16" or "fp32", by what the device does natively
    autocast_context(device, p)  the matching torch.autocast (a no-op for fp32)
    grad_scaler(device, p)       a GradScaler, enabled for fp16 only
    describe_device(device)      one line: the device, its capability, the precision and why

Precision by capability. bfloat16 keeps float32's range, so training needs no loss scaling; but
only GPUs of compute capability 8.0 or newer (A100, L4, H100, RTX 30xx+) compute it natively.
Older GPUs (Colab's T4 is 7.5, the V100 7.0) emulate bf16 matrix products, slower than float32,
and cuDNN has no bf16 convolutions there; they get float16, whose narrow range needs a gradient
scaler (torch.amp.GradScaler) to keep small gradients from flushing to zero. Apple's MPS and the
CPU stay in float32 unless asked: bf16 on MPS needs a recent torch and macOS, and most CPUs lack
native bf16 matrix instructions (see docs/results.md for the measured CPU figure).
"""
from __future__ import annotations

import torch

from jepa_lite.errors import BadValue

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_ALIASES = {"none": "fp32"}          # older configs and checkpoints wrote amp="none"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps, else cpu; any other name ("cpu", "cuda", "cuda:1", "mps")
    must name a device this machine has (a ValueError says so in one line)."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise BadValue(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BadValue(f"device {name!r}: this machine has no CUDA GPU that torch can use; use auto or cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise BadValue(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        mps = getattr(torch.backends, "mps", None)
        if device.type == "mps" and not (mps is not None and mps.is_available()):
            raise BadValue(f"device {name!r}: Apple's MPS is not available on this machine; use auto or cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    """(major, minor) compute capability of a CUDA device, None for any other device."""
    if device.type != "cuda":
        return None
    return tuple(torch.cuda.get_device_capability(device))


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix products run natively: CUDA compute capability >= 8.0."""
    capability = cuda_capability(device)
    return capability is not None and capability >= (8, 0)


def choose_precision(device: torch.device, amp: str = "auto") -> str:
    """The arithmetic of the forward pass: "bf16", "fp16" or "fp32".

    amp="auto": bf16 on CUDA devices with native bf16, fp16 (with a gradient scaler) on older CUDA
    devices, fp32 on MPS and CPU. An explicit "bf16", "fp16" or "fp32" is used as asked, except
    fp16 on the CPU, which torch's gradient scaler does not cover on every supported version."""
    amp = _ALIASES.get(amp, amp)
    if amp not in PRECISIONS:
        raise BadValue(f"unknown precision amp={amp!r}; valid: {', '.join(PRECISIONS)}")
    if amp == "fp16" and device.type == "cpu":
        raise BadValue("amp='fp16' needs a GPU (cuda or mps); on the cpu use 'fp32' or 'bf16'")
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if native_bf16(device) else "fp16"
    return "fp32"


def autocast_context(device: torch.device, precision: str = "auto"):
    """torch.autocast in the chosen precision (choose_precision resolves "auto"); fp32 disables it."""
    precision = choose_precision(device, precision)
    dtype = _DTYPES.get(precision, torch.bfloat16)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=precision in _DTYPES)


def grad_scaler(device: torch.device, precision: str):
    """A gradient scaler that is active for fp16 only (a pass-through otherwise)."""
    enabled = choose_precision(device, precision) == "fp16"
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):          # torch >= 2.3
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")


def describe_device(device: torch.device, amp: str = "auto") -> str:
    """One line for a learner: the device, its capability and the precision chosen, with the reason."""
    precision = choose_precision(device, amp)
    if device.type == "cuda":
        major, minor = cuda_capability(device)
        name = f"cuda ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor})"
        why = ("native bf16" if native_bf16(device)
               else "no native bf16 below compute capability 8.0")
    elif device.type == "mps":
        name, why = "mps (Apple GPU)", "bf16 on MPS is not used unless asked"
    else:
        name, why = f"{device.type} ({torch.get_num_threads()} threads)", "CPUs run float32 unless asked"
    what = {"bf16": "bf16 autocast", "fp16": "fp16 autocast with a gradient scaler",
            "fp32": "float32"}[precision]
    if amp != "auto":
        why = f"asked for amp={amp!r}"
    return f"device {name}: {what} ({why})"

"""The course's one visible switch: how big each notebook's runs are.

Every notebook starts with

    from jepa_lite.course import active_profile
    profile = active_profile()

and takes every size that costs time (training steps, images, probe sizes, UMAP points) from it.
Three profiles:

    test  CI and `make test`: each notebook in about a minute on 2 CPU cores
    cpu   a laptop or Binder (2 GiB): each notebook within ~5 minutes on 2 cores; the committed
          outputs come from this profile
    gpu   CUDA (or Apple MPS): CIFAR-10 where the data is at hand, real training lengths

The default follows the device (cuda -> gpu, otherwise cpu); the environment variable
JEPA_LITE_PROFILE=test|cpu|gpu forces one (the notebooks' conftest sets "test").
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

PROFILE_ENV = "JEPA_LITE_PROFILE"


@dataclass(frozen=True)
class Profile:
    """The sizes of one profile. Fields are read by the notebooks; none changes what is taught."""
    name: str
    data: str                      # pretraining data set of notebook 05 ("shapes" or "cifar10")
    model: str                     # named size in jepa_lite.models.MODEL_SIZES
    train_minutes: float | None    # notebook 05: a time budget ...
    train_steps: int | None        # ... or a number of steps (exactly one is set)
    batch_size: int
    train_images: int              # images generated / loaded for pretraining
    demo_steps: int                # short demonstrations (notebook 04's collapse runs)
    demo_batch_size: int
    probe_train_images: int        # notebook 06's linear probe / kNN
    probe_test_images: int
    umap_points: int
    show_images: int               # images in picture grids

    def summary(self) -> str:
        length = f"{self.train_minutes:g} min" if self.train_minutes is not None else f"{self.train_steps} steps"
        return (f"profile {self.name!r}: pretrain {self.model} on {self.data} for {length} "
                f"(batch {self.batch_size}); probes on {self.probe_train_images}/{self.probe_test_images} "
                f"images; UMAP of {self.umap_points} points")

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "test": Profile("test", data="shapes", model="tiny", train_minutes=None, train_steps=30, batch_size=64,
                    train_images=2_000, demo_steps=40, demo_batch_size=64, probe_train_images=1_000,
                    probe_test_images=500, umap_points=500, show_images=32),
    "cpu": Profile("cpu", data="shapes", model="tiny", train_minutes=4.0, train_steps=None, batch_size=128,
                   train_images=50_000, demo_steps=150, demo_batch_size=128, probe_train_images=5_000,
                   probe_test_images=2_000, umap_points=2_000, show_images=32),
    "gpu": Profile("gpu", data="cifar10", model="small", train_minutes=None, train_steps=20_000, batch_size=256,
                   train_images=50_000, demo_steps=1_000, demo_batch_size=256, probe_train_images=20_000,
                   probe_test_images=10_000, umap_points=5_000, show_images=32),
}


def default_profile_name() -> str:
    """The profile a notebook uses when JEPA_LITE_PROFILE is not set: gpu on CUDA/MPS, cpu otherwise."""
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available() or (mps is not None and mps.is_available()):
        return "gpu"
    return "cpu"


def active_profile(name: str | None = None) -> Profile:
    """The profile named `name`, else $JEPA_LITE_PROFILE, else the device's default."""
    chosen = name or os.environ.get(PROFILE_ENV, "").strip() or default_profile_name()
    if chosen not in PROFILES:
        raise ValueError(f"unknown profile {chosen!r} (from {'argument' if name else PROFILE_ENV}); "
                         f"valid: {', '.join(PROFILES)}")
    return PROFILES[chosen]


def repo_root() -> Path:
    """The checkout this package lives in (notebooks/, data/ and runs/ are under it)."""
    return Path(__file__).resolve().parents[1]


SHIPPED_CHECKPOINT = "data/shapes_tiny.pt"   # made by the command in data/README.md


def notebook05_run_dir(profile: Profile) -> Path:
    """Where notebook 05 writes its checkpoint (one folder per profile, so a test run never
    overwrites a learner's real one)."""
    return repo_root() / "runs" / f"notebook05-{profile.name}"


def pick_checkpoint(profile: Profile) -> tuple[Path, str]:
    """Notebook 06's choice: 05's fresh checkpoint when it exists, else the shipped one.
    Returns (path, a sentence saying which)."""
    fresh = notebook05_run_dir(profile) / "checkpoint.pt"
    if fresh.exists():
        return fresh, f"notebook 05's checkpoint (runs/{fresh.parent.name}/checkpoint.pt)"
    shipped = repo_root() / SHIPPED_CHECKPOINT
    if shipped.exists():
        return shipped, f"the shipped checkpoint ({SHIPPED_CHECKPOINT}); run notebook 05 to use your own"
    raise FileNotFoundError(f"neither notebook 05's checkpoint ({fresh}) nor the shipped one ({shipped}) exists; "
                            f"run notebook 05 first")


# ---------------------------------------------------------------------------------------------
# running the whole course (`jepa-lite course`, `make course`)

def course_notebooks(folder: Path | None = None) -> list[Path]:
    """The course's notebooks in teaching order (notebooks/NN_*.ipynb)."""
    folder = folder or repo_root() / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def probe_table_path(profile: Profile) -> Path:
    """Where notebook 06 writes its probe table (printed at the end of `jepa-lite course`)."""
    return repo_root() / "runs" / f"notebook06-{profile.name}" / "probe_table.txt"


_RUN_ONE = """
import resource, sys, threading, time, nbformat, psutil
from nbconvert.preprocessors import ExecutePreprocessor
source, target, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])
peak = [0]
def sample():   # the kernel and its children (data-parallel helpers) together, every 0.25 s
    me = psutil.Process()
    while True:
        total = 0
        for child in me.children(recursive=True):
            try:   # PSS counts shared pages (the helpers' shared image cache) once, as a cgroup limit does
                info = child.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except psutil.Error:
                pass
        peak[0] = max(peak[0], total)
        time.sleep(0.25)
threading.Thread(target=sample, daemon=True).start()
nb = nbformat.read(source, as_version=4)
ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(nb, {"metadata": {"path": sys.argv[4]}})
nbformat.write(nb, target)
print(max(peak[0] // 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))   # KiB
"""


def run_course(out_dir: str | Path = "build/notebooks", profile: str | None = None,
               only: list[str] | None = None, timeout: int = 1800, log=print) -> list[dict]:
    """Execute every notebook in order, each in a fresh kernel, into `out_dir` (the sources are not
    touched). Prints wall time and the peak memory of the kernel and its helper processes together
    per notebook, then notebook 06's probe table. Returns one dict per notebook."""
    import subprocess
    import sys
    import time

    chosen = active_profile(profile)
    env = {**os.environ, PROFILE_ENV: chosen.name}
    env.pop("MPLBACKEND", None)                       # the kernels use the inline backend
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notebooks = course_notebooks()
    if only:
        notebooks = [p for p in notebooks if any(p.name.startswith(o) for o in only)]
        if not notebooks:
            raise ValueError(f"no notebook matches {only}; valid: {[p.name for p in course_notebooks()]}")
    log(chosen.summary())
    results = []
    for path in notebooks:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _RUN_ONE, str(path), str(out / path.name), str(timeout),
                               str(path.parent)], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"{path.name} failed after {seconds:.0f} s:\n{tail}")
        peak_mib = int(done.stdout.strip().splitlines()[-1]) / 1024
        results.append({"notebook": path.name, "seconds": seconds, "peak_memory_mib": peak_mib})
        log(f"{path.name:36s} {seconds:6.0f} s   peak memory {peak_mib:6.0f} MiB")
    table = probe_table_path(chosen)
    if table.exists():
        log("\n" + table.read_text())
    return results

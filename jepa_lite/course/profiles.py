"""The course's one visible switch: how big each notebook's runs are.

Every notebook starts with

    from jepa_lite.course.profiles import active_profile
    profile = active_profile()

and takes every size that costs time (training steps, images, probe sizes, UMAP points) from it.
Three profiles:

    test  CI and `make test`: each notebook in about a minute on 2 CPU cores
    cpu   a laptop or Binder (2 GiB): each notebook within ~5 minutes on 2 cores; the committed
          outputs come from this profile
    gpu   CUDA (or Apple MPS): CIFAR-10 where the data is at hand, real training lengths

The default follows the device (cuda -> gpu, otherwise cpu); the environment variable
JEPA_LITE_PROFILE=test|cpu|gpu forces one (the notebooks' conftest sets "test").

Also here: where the course's files are (repo_root, data_root), where notebook 05 keeps its run and
which checkpoint notebooks 06-08 evaluate (find_checkpoint), and the memory helpers the notebooks
call between training runs. Running the whole course is runner.py.
"""
from __future__ import annotations

import ctypes
import gc
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from jepa_lite.errors import BadValue

PROFILE_ENV = "JEPA_LITE_PROFILE"


@dataclass(frozen=True)
class Profile:
    """The sizes of one profile. Fields are read by the notebooks; none changes what is taught."""
    name: str
    data: str                      # pretraining data set of notebook 05 ("shapes-mono" or "cifar10")
    model: str                     # named size in jepa_lite.core.model_sizes.MODEL_SIZES
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


# The course's own pretraining data on the CPU: the procedural shapes in one palette (notebook 06, section 6
# shows why not the colour ones). TrainConfig's default data is the same (tests/test_course.py checks it).
COURSE_DATA = "shapes-mono"

PROFILES: dict[str, Profile] = {
    "test": Profile("test", data=COURSE_DATA, model="tiny", train_minutes=None, train_steps=30, batch_size=64,
                    train_images=2_000, demo_steps=40, demo_batch_size=64, probe_train_images=1_000,
                    probe_test_images=500, umap_points=500, show_images=32),
    "cpu": Profile("cpu", data=COURSE_DATA, model="tiny", train_minutes=5.0, train_steps=None, batch_size=128,
                   train_images=50_000, demo_steps=150, demo_batch_size=128, probe_train_images=5_000,
                   probe_test_images=2_000, umap_points=2_000, show_images=32),
    # Training is set in minutes, not steps: the same notebook runs on a T4 and on an H100, whose
    # speeds differ several times over. The fixed-step demonstrations (notebooks 04, 08) are short.
    "gpu": Profile("gpu", data="cifar10", model="small", train_minutes=4.0, train_steps=None, batch_size=256,
                   train_images=50_000, demo_steps=600, demo_batch_size=256, probe_train_images=20_000,
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
        raise BadValue(f"unknown profile {chosen!r} (from {'argument' if name else PROFILE_ENV}); "
                         f"valid: {', '.join(PROFILES)}")
    return PROFILES[chosen]


ROOT_ENV = "JEPA_LITE_ROOT"


def repo_root() -> Path:
    """The course folder whose notebooks/, data/ and runs/ are used: $JEPA_LITE_ROOT when set (a
    copy of the course, or jepa_lite installed apart from it), else the checkout this package is in."""
    forced = os.environ.get(ROOT_ENV, "").strip()
    return Path(forced).resolve() if forced else Path(__file__).resolve().parents[2]   # jepa_lite/course/ -> checkout


def data_root() -> Path:
    """The one folder every notebook reads and downloads data sets into: <checkout>/data."""
    return repo_root() / "data"


# ---------------------------------------------------------------------------------------------
# where notebook 05's run is kept, and which checkpoint notebooks 06-08 use

# On Colab every notebook gets a fresh runtime, so a run kept in the runtime's disk is gone by
# the time notebook 06 opens. Notebook 05 can keep it on Google Drive instead (one opt-in line);
# the later notebooks look there first. JEPA_LITE_DRIVE names another folder (tests use it).
DRIVE_ENV = "JEPA_LITE_DRIVE"
COLAB_DRIVE = Path("/content/drive/MyDrive")

# Checkpoints shipped in data/ (see data/README.md), by the data set they were trained on.
SHIPPED_CHECKPOINTS: dict[str, str] = {"shapes": "data/shapes_tiny.pt", "shapes-mono": "data/shapes_mono_tiny.pt"}
SHIPPED_CHECKPOINT = SHIPPED_CHECKPOINTS[COURSE_DATA]


def drive_folder() -> Path | None:
    """The course's folder on a mounted Google Drive (or $JEPA_LITE_DRIVE), None when none is mounted."""
    forced = os.environ.get(DRIVE_ENV, "").strip()
    if forced:
        return Path(forced)
    return COLAB_DRIVE / "jepa-lite" if COLAB_DRIVE.is_dir() else None


def notebook05_run_dir(profile: Profile, use_drive: bool = False) -> Path:
    """Where notebook 05 writes its checkpoint: one folder per profile, so a test run never
    overwrites a learner's real one; on Google Drive when `use_drive` and Drive is mounted."""
    name = f"notebook05-{profile.name}"
    drive = drive_folder() if use_drive else None
    if use_drive and drive is None:
        raise FileNotFoundError(f"use_drive=True but Google Drive is not mounted at {COLAB_DRIVE}: run "
                                "`from google.colab import drive; drive.mount('/content/drive')` first")
    return (drive / "runs" / name) if drive is not None else (repo_root() / "runs" / name)


@dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint a notebook evaluates. `source`: "drive" or "run" (notebook 05's) or "shipped"."""
    path: Path
    source: str
    data: str            # the data set it was trained on (the notebook evaluates on that one)
    steps: int
    minutes: float
    message: str         # what the notebook prints: which file, and what that means for the numbers

    @property
    def short(self) -> str:
        return {"drive": "notebook 05's run", "run": "notebook 05's run", "shipped": "shipped checkpoint"}[self.source]


def _describe(path: Path) -> tuple[str, int, float]:
    from jepa_lite.engine.checkpoint import load_checkpoint  # late: the notebooks' first import stays light
    checkpoint = load_checkpoint(path)
    return (checkpoint["data"]["spec"], int(checkpoint["step"]),
            float(checkpoint.get("elapsed_seconds", 0.0)) / 60)


def _shown(path: Path) -> str:
    """A path as a learner should read it: relative to the checkout when inside it."""
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def find_checkpoint(profile: Profile) -> CheckpointChoice:
    """The checkpoint notebooks 06-08 use: notebook 05's run (on Google Drive first, then in
    runs/), else the shipped checkpoint trained on the profile's data, else the shipped `shapes-mono`
    one. The message says which, and what that means for the numbers."""
    candidates = []
    drive = drive_folder()
    if drive is not None:
        candidates.append(("drive", drive / "runs" / f"notebook05-{profile.name}" / "checkpoint.pt"))
    candidates.append(("run", repo_root() / "runs" / f"notebook05-{profile.name}" / "checkpoint.pt"))
    for source, path in candidates:
        if path.exists():
            data, steps, minutes = _describe(path)
            where = "Google Drive" if source == "drive" else "this machine"
            return CheckpointChoice(path, source, data, steps, minutes,
                                    f"Using notebook 05's run, found on {where} ({_shown(path)}): {steps} steps, "
                                    f"{minutes:.1f} min on {data}. The numbers below are your run's.")
    looked = ", ".join(_shown(path) for _, path in candidates)
    shipped_data = profile.data if profile.data in SHIPPED_CHECKPOINTS else COURSE_DATA
    shipped = repo_root() / SHIPPED_CHECKPOINTS[shipped_data]
    if not shipped.exists():
        raise FileNotFoundError(f"no checkpoint to evaluate: neither notebook 05's run ({looked}) nor the shipped "
                                f"{SHIPPED_CHECKPOINTS[shipped_data]} exists; run notebook 05 first")
    data, steps, minutes = _describe(shipped)
    message = (f"NOTE: no run of notebook 05 was found (looked for {looked}). Using the shipped checkpoint "
               f"{SHIPPED_CHECKPOINTS[shipped_data]}: the course's recipe trained {steps} steps on {data}, far "
               f"longer than notebook 05's budget, so expect better numbers than a fresh run of notebook 05 gives.")
    if shipped_data != profile.data:
        message += (f" No checkpoint trained on {profile.data} ships with the course, so everything below is "
                    f"measured on {data}, not {profile.data}. Run notebook 05 (saving to Drive on Colab) to "
                    f"evaluate your own {profile.data} run.")
    return CheckpointChoice(shipped, "shipped", data, steps, minutes, message)


# ---------------------------------------------------------------------------------------------
# memory between a notebook's training runs (notebooks 04, 08, 09)

def release_memory() -> None:
    """Free what is no longer referenced, then hand the freed memory back to the operating system,
    so that the next training run of a notebook starts lower (a Binder pod has 2 GB)."""
    gc.collect()
    try:   # glibc (Linux) keeps freed heap for reuse; malloc_trim returns it
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # no glibc (macOS, Windows): nothing to trim
        pass


def free_large_tensors_at_once(threshold_bytes: int = 1 << 20) -> None:
    """glibc (Linux) only: blocks of `threshold_bytes` and more get pages of their own, returned to the
    system as soon as they are freed instead of staying in the heap between training steps;
    elsewhere there is nothing to set."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold_bytes)   # -3 = M_MMAP_THRESHOLD, in bytes
    except (OSError, AttributeError):
        pass

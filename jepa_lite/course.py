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

import ctypes
import gc
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import NotebookFailed

PROFILE_ENV = "JEPA_LITE_PROFILE"


@dataclass(frozen=True)
class Profile:
    """The sizes of one profile. Fields are read by the notebooks; none changes what is taught."""
    name: str
    data: str                      # pretraining data set of notebook 05 ("shapes-mono" or "cifar10")
    model: str                     # named size in jepa_lite.model_sizes.MODEL_SIZES
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

# What one notebook takes, in minutes, by profile: measured with `jepa-lite course` (cpu: 2 CPU
# cores; gpu: one data-centre GPU, docs/results.md). Notebook 00 prints these; slower machines
# take longer in every notebook but 05, whose training length is a time budget.
EXPECTED_MINUTES: dict[str, dict[str, float]] = {
    # 2 CPU cores (AMD EPYC, AVX2), `jepa-lite course --profile cpu`
    "cpu": {"00_setup_and_data.ipynb": 0.4, "01_patches_and_masks.ipynb": 0.3, "02_encoders.ipynb": 0.3,
            "03_predictor.ipynb": 0.3, "04_loss_and_collapse.ipynb": 7.2, "05_training.ipynb": 5.3,
            "06_what_it_learned.ipynb": 3.4, "07_dense_tasks.ipynb": 1.5,
            "08_prediction_vs_reconstruction.ipynb": 5.9, "09_learned_jointly_sigreg.ipynb": 8.0},
    # one H200 with 16 CPU cores, `benchmarks/gpu_course.sh`: 00, 02 and 03 while other training shared
    # the GPU (upper bounds); 04 took longer than 2.5 min and 08 is not measured yet; 06 before its
    # section 6 was added, 07 before its section 8. In 04, 06 and 08 the probes (scikit-learn, on the CPU) take most of the time.
    "gpu": {"00_setup_and_data.ipynb": 1.4, "01_patches_and_masks.ipynb": 0.3, "02_encoders.ipynb": 0.3,
            "03_predictor.ipynb": 0.3, "05_training.ipynb": 4.3, "06_what_it_learned.ipynb": 4.3,
            "07_dense_tasks.ipynb": 0.6},
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


ROOT_ENV = "JEPA_LITE_ROOT"


def repo_root() -> Path:
    """The course folder whose notebooks/, data/ and runs/ are used: $JEPA_LITE_ROOT when set (a
    copy of the course, or jepa_lite installed apart from it), else the checkout this package is in."""
    forced = os.environ.get(ROOT_ENV, "").strip()
    return Path(forced).resolve() if forced else Path(__file__).resolve().parents[1]


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
    from .checkpoint import load_checkpoint             # late: train imports much more than the course needs
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
# running the whole course (`jepa-lite course`, `make course`)

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


def course_notebooks(folder: Path | None = None) -> list[Path]:
    """The course's notebooks in teaching order (notebooks/NN_*.ipynb)."""
    folder = folder or repo_root() / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def probe_table_path(profile: Profile) -> Path:
    """Where notebook 06 writes its probe table (printed at the end of `jepa-lite course`)."""
    return repo_root() / "runs" / f"notebook06-{profile.name}" / "probe_table.txt"


def expected_minutes_table(profile: Profile) -> str:
    """Notebook 00's table of how long each notebook takes on this profile (measured, EXPECTED_MINUTES)."""
    measured = EXPECTED_MINUTES.get(profile.name, {})
    if not measured:
        return f"no measured times for the {profile.name!r} profile"
    lines = [f"{path.name:40s} " + (f"~{measured[path.name]:4.1f} min" if path.name in measured else "not measured")
             for path in course_notebooks()]
    total = f"~{sum(measured.values()):4.1f} min" + ("" if len(measured) == len(lines) else " (measured ones)")
    return "\n".join(lines + [f"{'all notebooks':40s} {total}"])


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
# one extra cell, removed before writing: the accelerator's peak memory as torch's allocator saw it
nb.cells.append(nbformat.v4.new_code_cell(
    "import torch as _t\\n"
    "print('__peak_accelerator_bytes__', _t.cuda.max_memory_reserved() if _t.cuda.is_available() else "
    "(_t.mps.driver_allocated_memory() if getattr(_t.backends, 'mps', None) and _t.backends.mps.is_available() "
    "else 0))"))
ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(nb, {"metadata": {"path": sys.argv[4]}})
probe = nb.cells.pop()
accelerator = 0
for output in probe.get("outputs", []):
    for line in output.get("text", "").splitlines():
        if line.startswith("__peak_accelerator_bytes__"):
            accelerator = int(line.split()[1])
nbformat.write(nb, target)
print(max(peak[0] // 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), accelerator // 1024)   # KiB
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
            raise NotebookFailed(f"{path.name} failed after {seconds:.0f} s:\n{tail}")
        host_kib, accelerator_kib = (int(x) for x in done.stdout.strip().splitlines()[-1].split())
        peak_mib, accelerator_mib = host_kib / 1024, accelerator_kib / 1024
        results.append({"notebook": path.name, "seconds": seconds, "peak_memory_mib": peak_mib,
                         "peak_accelerator_memory_mib": accelerator_mib})
        gpu = f"   peak GPU memory {accelerator_mib:6.0f} MiB" if accelerator_kib else ""
        log(f"{path.name:36s} {seconds:6.0f} s   peak memory {peak_mib:6.0f} MiB{gpu}")
    table = probe_table_path(chosen)
    if table.exists():
        log("\n" + table.read_text())
    return results


def store_outputs(executed: str | Path, source: str | Path) -> None:
    """Copy an executed notebook's outputs into its source (the committed course notebook): every code
    cell's outputs, execution count and timing, and the widget state; the sources stay as they are,
    and check cells keep no execution count (as the student versions store them). The two must hold
    the same code cells (markdown may differ): ValueError otherwise."""
    import json

    done, kept = json.loads(Path(executed).read_text()), json.loads(Path(source).read_text())
    code = lambda notebook: [(c["cell_type"], c["source"] if c["cell_type"] == "code" else "") for c in notebook["cells"]]
    if code(done) != code(kept):          # a changed sentence in a markdown cell needs no new execution
        raise ValueError(f"{executed} does not hold the code cells of {source}: execute the notebook again")
    for ran, cell in zip(done["cells"], kept["cells"]):
        if cell["cell_type"] != "code":
            continue
        cell["outputs"] = ran["outputs"]
        check = "check" in cell["metadata"].get("tags", [])
        cell["execution_count"] = None if check else ran["execution_count"]
        if "execution" in ran["metadata"] and not check:
            cell["metadata"]["execution"] = ran["metadata"]["execution"]
    shown = any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
                for cell in kept["cells"] for output in cell.get("outputs", []))
    kept["metadata"].pop("widgets", None)                # no output shows a widget: no state to keep
    if shown and "widgets" in done["metadata"]:
        kept["metadata"]["widgets"] = done["metadata"]["widgets"]
    Path(source).write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")

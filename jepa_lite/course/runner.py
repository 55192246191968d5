"""Running the whole course: `jepa-lite course` (and `make course`) executes every notebook in order,
each in a fresh kernel, and reports its wall time and peak memory (run_course); `--store` copies
the executed outputs back into the committed notebooks (store_outputs). Also what notebook 00
prints about the time each notebook takes (EXPECTED_MINUTES) and where notebook 06 leaves its
probe table. The profiles themselves are in profiles.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from jepa_lite.course.profiles import PROFILE_ENV, Profile, active_profile, repo_root
from jepa_lite.errors import BadValue, NotebookFailed

# What one notebook takes, in minutes, by profile, as the last `jepa-lite course --profile P --store`
# measured it (record_minutes writes them; "_about" says on what machine). Notebook 00 prints them;
# slower machines take longer in every notebook but 05, whose training length is a time budget.
MINUTES_FILE = Path(__file__).with_name("expected_minutes.json")
EXPECTED_MINUTES: dict[str, dict[str, float]] = {
    name: minutes for name, minutes in json.loads(MINUTES_FILE.read_text()).items() if name != "_about"}


def record_minutes(profile: str, results: list[dict], path: Path = MINUTES_FILE) -> None:
    """Write the measured minutes of the notebooks in `results` (run_course's) for `profile`."""
    saved = json.loads(path.read_text())
    minutes = saved.setdefault(profile, {})
    minutes.update({r["notebook"]: round(r["seconds"] / 60, 1) for r in results})
    saved[profile] = dict(sorted(minutes.items()))
    path.write_text(json.dumps(saved, indent=1) + "\n")
    EXPECTED_MINUTES[profile] = saved[profile]


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
def sample():   # the kernel and its children (e.g. DataLoader workers) together, every 0.25 s
    me = psutil.Process()
    while True:
        total = 0
        for child in me.children(recursive=True):
            try:   # PSS counts shared pages once, as a cgroup limit does
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
    touched). Prints wall time and the peak memory of the kernel and its child processes together
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
            raise BadValue(f"no notebook matches {only}; valid: {[p.name for p in course_notebooks()]}")
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
    def code(notebook: dict) -> list:
        return [(c["cell_type"], c["source"] if c["cell_type"] == "code" else "") for c in notebook["cells"]]

    if code(done) != code(kept):          # a changed sentence in a markdown cell needs no new execution
        raise BadValue(f"{executed} does not hold the code cells of {source}: execute the notebook again")
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

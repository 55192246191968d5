"""Notebooks 06, 07 and 08 the way a Colab learner meets them: each alone, in a fresh copy of the
course with no run of notebook 05 anywhere (no runs/ folder, no Google Drive).

Each must run to the end on the shipped checkpoints and say, in its output, which checkpoint it
uses. The copy holds the package, the notebooks and the shipped files in data/ only, and
JEPA_LITE_ROOT points the course at it, so nothing of this checkout's runs/ can leak in.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytestmark = pytest.mark.notebook        # executes course notebooks; `make test-fast` leaves them out

from jepa_lite.course.profiles import ROOT_ENV, SHIPPED_CHECKPOINT, repo_root  # noqa: E402

NOTEBOOKS = {
    "06_what_it_learned.ipynb": SHIPPED_CHECKPOINT,
    "07_dense_tasks.ipynb": SHIPPED_CHECKPOINT,
    "08_prediction_vs_reconstruction.ipynb": "data/notebook08/",
    "11_video_jepa.ipynb": SHIPPED_CHECKPOINT,
}


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    source, copy = repo_root(), tmp_path_factory.mktemp("course")
    shutil.copytree(source / "jepa_lite", copy / "jepa_lite", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(source / "notebooks", copy / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "data", "runs"))
    (copy / "data").mkdir()
    for shipped in source.glob("data/*.pt"):
        shutil.copy(shipped, copy / "data" / shipped.name)
    if (source / "data" / "notebook08").is_dir():
        shutil.copytree(source / "data" / "notebook08", copy / "data" / "notebook08")
    return copy


def _environment(copy: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("JEPA_LITE_DRIVE", "MPLBACKEND")}
    env.update({"JEPA_LITE_PROFILE": "test", ROOT_ENV: str(copy)})
    return env


def test_the_course_uses_the_copy(fresh_copy):
    code = "from jepa_lite.course.profiles import repo_root; print(repo_root())"
    where = subprocess.run([sys.executable, "-c", code],
                           env=_environment(fresh_copy), capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()) == fresh_copy.resolve(), where


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_notebook_runs_alone_and_names_its_checkpoint(fresh_copy, name):
    runner = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "client = NotebookClient(nb, timeout=900, kernel_name='python3',\n"
        "                        resources={'metadata': {'path': sys.argv[2]}})\n"
        "client.execute()\n"
        "nbformat.write(nb, sys.argv[3])\n"
    )
    executed = fresh_copy / f"executed-{name}"
    done = subprocess.run([sys.executable, "-c", runner, str(fresh_copy / "notebooks" / name),
                           str(fresh_copy / "notebooks"), str(executed)],
                          env=_environment(fresh_copy), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    text = "\n".join(output.get("text", "") if output.get("output_type") == "stream"
                     else "".join(output.get("data", {}).get("text/plain", ""))
                     for cell in nbformat.read(executed, as_version=4).cells if cell.cell_type == "code"
                     for output in cell.get("outputs", []))
    assert NOTEBOOKS[name] in text, f"{name} never names {NOTEBOOKS[name]} in its output"
    if name in ("06_what_it_learned.ipynb", "07_dense_tasks.ipynb"):   # they read notebook 05's run if any
        assert "no run of notebook 05" in text
    assert not (fresh_copy / "runs" / "notebook05-test").exists()

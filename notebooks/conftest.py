"""nbval settings for the course notebooks (pytest collects notebooks/*.ipynb with --nbval).

- The kernels inherit this environment: the "test" profile (each notebook ~1 min on 2 cores)
  unless JEPA_LITE_PROFILE is already set.
- matplotlib: the inline backend (CI exports MPLBACKEND=Agg for scripts; in a kernel that would
  hide every figure and change the outputs nbval compares).
- stderr is not compared: warnings print machine-specific paths.
"""
import os

os.environ.setdefault("JEPA_LITE_PROFILE", "test")
os.environ.pop("MPLBACKEND", None)


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)

"""Sphinx configuration of the course website (`make site`, or `python site/build.py`).

The source folder is the repository root and this folder is only the configuration folder
(`sphinx-build -c site . OUT`): the pages are then named after the files' real paths
(`site/index`, `notebooks/00_setup_and_data`), so the Colab and Binder buttons of each notebook page
open that very file of the repository. Only `site/index.md` and `notebooks/[0-9][0-9]_*.ipynb` are read, in
the order of their names; a new notebook `notebooks/NN_*.ipynb` joins the site, its table of
contents and the landing page's table without an edit here.

The notebooks are shown with their committed outputs, never executed (`nb_execution_mode = "off"`).
Math is typeset in the reader's browser by MathJax 2.7 copied from the `jupyter-server-mathjax`
package into `_static/mathjax/`: nothing is fetched from a CDN, so the site works offline.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO_URL = "https://github.com/jepa-lite/jepa-lite"
BRANCH = "main"
COLAB = "https://colab.research.google.com"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"
BINDER_URL = "https://mybinder.org/v2/gh/jepa-lite/jepa-lite/HEAD?urlpath=lab/tree/notebooks"
NOTEBOOKS_MARKER = "<!-- the notebooks table: written by site/conf.py -->"

# -- project -------------------------------------------------------------------------------------
project = "JEPA Lite"
author = "the JEPA Lite authors"
copyright = "the JEPA Lite authors (MIT licence)"
language = "en"

extensions = ["myst_nb"]

# -- what is read --------------------------------------------------------------------------------
root_doc = "site/index"
include_patterns = ["site/index.md", "notebooks/[0-9][0-9]_*.ipynb"]
# every other top-level entry is left out before Sphinx walks into it (.venv, build, data, ...)
exclude_patterns = sorted(
    [entry.name for entry in ROOT.iterdir() if entry.name not in {"site", "notebooks"}]
    + ["**/.ipynb_checkpoints", "notebooks/data", "notebooks/runs", "site/_extra"]
)

# -- notebooks: shown as committed, never run ----------------------------------------------------
nb_execution_mode = "off"
# the one widget (notebook 01's mask explorer) needs a running kernel: show its text instead (the
# notebook writes what it is) and load no ipywidgets JavaScript from a CDN
nb_ipywidgets_js = {}
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_merge_streams = True

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# MathJax 2 is configured below (mathjax2_config); myst-parser would write a MathJax 3/4 config
myst_update_mathjax = False

# -- math, offline ------------------------------------------------------------------------------
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    # myst marks its pages "tex2jax_ignore" and each formula "math": typeset the formulas (and the
    # notebooks' LaTeX outputs), never a stray \( in code
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
        "processEnvironments": True,
        "ignoreClass": "tex2jax_ignore|mathjax_ignore",
        "processClass": "tex2jax_process|mathjax_process|math|output_area",
    },
    # the package ships the STIX web fonts only (no image fonts, no TeX fonts)
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web",
                 "imageFont": None, "linebreaks": {"automatic": True}},
    # the quick preview typesets with the TeX fonts, which the package does not ship
    "fast-preview": {"disabled": True},
    "messageStyle": "none",
}

# -- HTML -----------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "JEPA Lite"
html_extra_path = ["_extra"]          # index.html at the top: sends the reader to site/index.html
html_theme_options = {
    "repository_url": REPO_URL,
    "repository_branch": BRANCH,
    "path_to_docs": "",               # page names are paths from the repository root
    "use_repository_button": True,
    "use_download_button": True,
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "launch_buttons": {
        "colab_url": COLAB,
        "binderhub_url": "https://mybinder.org",
        "notebook_interface": "jupyterlab",
    },
}


# -- the landing page's table of notebooks -------------------------------------------------------
def course_notebooks() -> list[Path]:
    """notebooks/[0-9][0-9]_*.ipynb in the order of their names (the course's order)."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def notebook_title(path: Path) -> str:
    """The text of the notebook's first heading, or its file name."""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = "".join(cell.get("source", []))
        for line in source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return path.stem.replace("_", " ")


def notebooks_table() -> str:
    rows = ["| notebook | run it in Colab |", "|---|---|"]
    for path in course_notebooks():
        title = notebook_title(path).replace("|", "\\|")
        colab = f"{COLAB}/github/jepa-lite/jepa-lite/blob/{BRANCH}/notebooks/{path.name}"
        rows.append(f"| [{title}](../notebooks/{path.name}) "
                    f"| [![Open notebook {path.name[:2]} in Colab]({COLAB_BADGE})]({colab}) |")
    return "\n".join(rows)


def _fill_notebooks_table(app, docname, source):
    if docname == root_doc and NOTEBOOKS_MARKER in source[0]:
        source[0] = source[0].replace(NOTEBOOKS_MARKER, notebooks_table())


# -- MathJax files into the build ----------------------------------------------------------------
# what MathJax loads for TeX input and HTML-CSS output with the STIX web fonts (about 3 MB of the
# package's 10 MB): the accessibility extensions, the SVG output and other languages are left out
_MATHJAX_SKIP = ("extensions/a11y", "jax/output/SVG")


def _mathjax_source() -> Path:
    import jupyter_server_mathjax
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def _copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source = _mathjax_source()
    target = Path(app.outdir) / "_static" / "mathjax"

    def ignore(folder, names):
        rel = Path(folder).relative_to(source).as_posix()
        skipped = set()
        for name in names:
            path = f"{rel}/{name}" if rel != "." else name
            if path in _MATHJAX_SKIP or (rel == "localization" and name != "en"):
                skipped.add(name)
        return skipped

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=ignore)


def setup(app):
    _mathjax_source()                    # fail early, with the import error, if the package is missing
    app.connect("source-read", _fill_notebooks_table)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

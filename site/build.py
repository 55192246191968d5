"""Build the course website and check its links: `make site`, or `python site/build.py [--out DIR]`.

Sphinx (myst-nb, the book theme) reads site/index.md and the committed notebooks/[0-9][0-9]_*.ipynb with
their stored outputs (nothing is executed), from scratch every time (-E: every warning shows), with
warnings as errors (-W: all of them are listed, then the build fails). Then every internal link
and #anchor of the pages is checked offline (site/check_links.py); external links are not fetched.

Writes DIR/html (the site: open DIR/html/index.html), DIR/doctrees, DIR/jupyter_execute and
DIR/warnings.txt. Default DIR: build/site. Exit status 0 only when the build had no warning and no
link is broken.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

SITE = Path(__file__).resolve().parent
ROOT = SITE.parent


def _load(name: str):
    """site/NAME.py as a module: site/ is no package (its name would hide Python's `site`), and
    putting it on sys.path would let its conf.py and build.py shadow other modules."""
    spec = importlib.util.spec_from_file_location(f"jepa_lite_site_{name}", SITE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_links = _load("check_links")


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sphinx_command(out: Path, jobs: str = "1") -> list[str]:
    return [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-a", "-W", "-q", "-j", jobs,
            "-c", str(SITE), "-d", str(out / "doctrees"), "-w", str(out / "warnings.txt"),
            str(ROOT), str(out / "html")]


def build(out: Path, jobs: str = "1") -> subprocess.CompletedProcess:
    """Run sphinx-build into out/html; the completed process (its output captured)."""
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(sphinx_command(out, jobs), cwd=ROOT, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site",
                        help="output folder (default build/site); the site is OUT/html")
    parser.add_argument("-j", "--jobs", default="1", help="sphinx-build processes (default 1)")
    args = parser.parse_args(argv)
    out = args.out.resolve()

    t0 = time.monotonic()
    result = build(out, args.jobs)
    build_s = time.monotonic() - t0
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    warnings = (out / "warnings.txt").read_text() if (out / "warnings.txt").exists() else ""
    if result.returncode != 0 or warnings.strip():
        print(f"site: the build failed (exit {result.returncode}); warnings are errors:\n{warnings}",
              file=sys.stderr)
        return 1

    html = out / "html"
    problems = check_links.check_site(html)
    for problem in problems:
        print(problem, file=sys.stderr)
    pages = check_links.site_pages(html)
    print(f"site: {len(pages)} pages in {html} ({folder_size(html) / 2**20:.1f} MiB), "
          f"built in {build_s:.1f} s with no warning; "
          f"{len(problems)} broken internal links, "
          f"{len(check_links.external_links(html))} external links not fetched")
    if problems:
        return 1
    print(f"open {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

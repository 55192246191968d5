"""The course website (`make site`, site/build.py): built, linked, and rendered in a real browser.

The site is built once into a temporary folder from the committed notebooks (never executed), with
warnings as errors. The tests then check that every notebook has its page, in order, with its Colab
and Binder buttons; that every internal link and #anchor resolves (site/check_links.py, offline);
that the link checker does catch broken links and that a warning does fail the build (on copies);
and, in headless Chromium (marked `browser`, skipped with the reason when Chromium or Playwright is
missing, as in tests/test_browser.py), that a figure and the equations render with no network.
"""
from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import re
import runpy
import shutil
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "site"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SHOTS = REPO / "build" / "browser"
COLAB = "https://colab.research.google.com/github/jepa-lite/jepa-lite/blob/main/notebooks/"
BINDER = "https://mybinder.org/v2/gh/jepa-lite/jepa-lite/main?urlpath=lab/tree/notebooks/"

pytestmark = pytest.mark.site            # builds the website; `make test-fast` leaves it out

pytest.importorskip("sphinx", reason="the site extra is not installed (pip install -e '.[site]')")
pytest.importorskip("myst_nb", reason="the site extra is not installed (pip install -e '.[site]')")


def _load(name: str):
    """site/NAME.py as a module (site/ is no package: its name would hide Python's `site`)."""
    spec = importlib.util.spec_from_file_location(f"jepa_lite_site_{name}", SITE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_site = _load("build")
check_links = build_site.check_links


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built from this checkout into a temporary folder: its html/ folder."""
    out = tmp_path_factory.mktemp("site")
    t0 = time.monotonic()
    result = build_site.build(out)
    build_s = time.monotonic() - t0
    warnings = (out / "warnings.txt").read_text()
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stderr[-5000:]}"
    assert warnings.strip() == "", f"the build warned (warnings are errors):\n{warnings}"
    print(f"site built in {build_s:.1f} s")
    return out / "html"


def _hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', html)


# --- the build -----------------------------------------------------------------------------------

def test_the_notebooks_are_shown_as_committed_never_executed():
    conf = runpy.run_path(str(SITE / "conf.py"))
    assert conf["nb_execution_mode"] == "off"
    assert "mathjax/MathJax.js" in conf["mathjax_path"] and "://" not in conf["mathjax_path"]


def test_every_notebook_has_a_page_in_the_course_order(site):
    assert len(NOTEBOOKS) >= 9
    landing = (site / "site" / "index.html").read_text()
    for nb in NOTEBOOKS:
        page = site / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), f"no page for {nb.name}"
        html = page.read_text()
        assert COLAB + nb.name in html, f"{page.name}: no Colab button"
        assert BINDER + nb.name in html, f"{page.name}: no Binder button"
        # the stored outputs are there: at least one figure of the notebook
        assert re.search(r'<img[^>]+src="\.\./_images/', html), f"{page.name}: no figure"
        # the landing page's table: the page and the notebook's Colab badge
        assert COLAB + nb.name in landing, f"landing page: no Colab badge for {nb.name}"
    # the table of contents (sidebar) and the landing page's table list them in order
    in_order = [f"../notebooks/{nb.stem}.html" for nb in NOTEBOOKS]
    sidebar = [h for h in _hrefs(landing) if h.startswith("../notebooks/") and "#" not in h]
    assert list(dict.fromkeys(sidebar)) == in_order
    # and the site opens at its landing page
    assert 'url=site/index.html' in (site / "index.html").read_text()


def test_solutions_are_folded_and_only_they(site):
    """Each exercise's solution cell (tagged `hide-cell` by jepa_lite.course.student.hide_solutions) shows its code
    and its outputs only under a toggle; every other code cell shows its code."""
    folded = re.compile(r'<details class="[^"]*\bhide above-input\b[^"]*">.*?</details>', re.DOTALL)
    for nb in NOTEBOOKS:
        cells = json.loads(nb.read_text())["cells"]
        solutions = sum("solution" in c["metadata"].get("tags", []) for c in cells)
        html = (site / "notebooks" / f"{nb.stem}.html").read_text()
        spans = [m.span() for m in folded.finditer(html)]
        titles = [m.start() for m in re.finditer("#@title", html)]
        assert len(spans) == solutions > 0, f"{nb.name}: {len(spans)} folded cells for {solutions} solutions"
        assert len(titles) == solutions and all(any(a < t < b for a, b in spans) for t in titles), \
            f"{nb.name}: a solution's code is shown unfolded"
        with_outputs = sum("solution" in c["metadata"].get("tags", []) and bool(c.get("outputs")) for c in cells)
        folded_outputs = sum("cell_output" in html[a:b] for a, b in spans)
        assert folded_outputs == with_outputs, f"{nb.name}: a solution's outputs are shown unfolded"


def test_every_internal_link_and_anchor_resolves(site):
    assert check_links.check_site(site) == []


def test_math_and_pages_load_nothing_from_a_cdn(site):
    mathjax = site / "_static" / "mathjax"
    assert (mathjax / "MathJax.js").is_file()
    assert (mathjax / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert list((mathjax / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").glob("*.woff"))
    for page in check_links.site_pages(site):
        html = page.read_text()
        scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', html)
        styles = re.findall(r'<link[^>]*\bhref="([^"]+)"', html)
        external = [u for u in scripts + styles if check_links.is_external(u)]
        assert not external, f"{page.relative_to(site)} loads {external}"
    landing = (site / "site" / "index.html").read_text()
    assert '_static/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full' in landing


# --- the link checker and the warnings gate, on copies ------------------------------------------

def test_the_link_checker_catches_broken_links_and_anchors(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "img.png").write_bytes(b"png")
    (tmp_path / "sub" / "b.html").write_text('<h1 id="top">B</h1><a name="old">x</a>')
    (tmp_path / "a.html").write_text(
        '<a href="sub/b.html">ok</a> <a href="sub/b.html#top">ok</a> <a href="sub/b.html#old">ok</a>'
        '<a href="#here" id="here">ok</a> <img src="img.png?v=1"> <a href="https://example.org/x">ext</a>'
        '<a href="mailto:a@b.c">ext</a> <script src="//cdn.example.org/x.js"></script>'
        '<a href="sub/missing.html">bad file</a> <a href="sub/b.html#nowhere">bad anchor</a>'
        '<a href="#gone">bad local anchor</a> <img srcset="img.png 1x, missing@2x.png 2x">'
        '<a href="../outside.html">outside</a> <a href="/abs.html">absolute</a>')
    problems = check_links.check_site(tmp_path)
    found = sorted(p.split(": ")[1] for p in problems)
    assert found == sorted(["sub/missing.html", "sub/b.html#nowhere", "#gone", "missing@2x.png",
                            "../outside.html", "/abs.html"]), problems
    assert check_links.external_links(tmp_path) == {
        "https://example.org/x", "mailto:a@b.c", "//cdn.example.org/x.js"}


def test_the_link_checker_catches_a_broken_link_in_a_copy_of_the_site(site, tmp_path):
    copy = tmp_path / "html"
    shutil.copytree(site, copy)
    removed = copy / "notebooks" / f"{NOTEBOOKS[-1].stem}.html"
    removed.unlink()
    landing = copy / "site" / "index.html"
    landing.write_text(landing.read_text().replace(
        "</main>", '<a href="../notebooks/00_setup_and_data.html#no-such-section">x</a></main>', 1))
    problems = check_links.check_site(copy)
    assert any(p.startswith("site/index.html: ../notebooks/" + removed.name) for p in problems)
    assert any("#no-such-section" in p and "no anchor" in p for p in problems)
    assert check_links.main([str(copy)]) == 1


def _notebook(title: str, markdown: str) -> str:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": f"# {title}\n\n{markdown}"},
             {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "1 + 1",
              "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                           "data": {"text/plain": "2"}}]}]
    return json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                       "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                   "language": "python"}}})


def test_a_new_notebook_joins_the_site_and_a_warning_fails_the_build(tmp_path):
    """A small copy of the project: site/ and two notebooks, 00 and 09 (none in between)."""
    shutil.copytree(SITE, tmp_path / "site",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "docs" / "images").mkdir(parents=True)
    shutil.copy2(REPO / "docs" / "images" / "ijepa_diagram.png", tmp_path / "docs" / "images")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "09_later.ipynb").write_text(_notebook("09 · Later", "$a^2$"))
    (tmp_path / "notebooks" / "00_first.ipynb").write_text(_notebook("00 · First", "$b^2$"))
    small = _load_from(tmp_path / "site" / "build.py")

    out = tmp_path / "out"
    result = small.build(out)
    assert result.returncode == 0, result.stderr[-3000:]
    landing = (out / "html" / "site" / "index.html").read_text()
    assert [h for h in dict.fromkeys(_hrefs(landing)) if h.startswith("../notebooks/")] == [
        "../notebooks/00_first.html", "../notebooks/09_later.html"]
    assert "09 · Later" in landing

    # a reference to nothing: Sphinx warns, and a warning is an error
    (tmp_path / "notebooks" / "09_later.ipynb").write_text(
        _notebook("09 · Later", "See {ref}`a-label-that-does-not-exist`."))
    result = small.build(out)
    assert result.returncode != 0
    assert "a-label-that-does-not-exist" in (out / "warnings.txt").read_text()
    assert small.main(["--out", str(out)]) == 1


def _load_from(path: Path):
    spec = importlib.util.spec_from_file_location(f"jepa_lite_site_copy_{id(path)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- in a real browser -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served_site(site):
    """The built site over HTTP on 127.0.0.1 (as a reader's browser gets it), in a thread."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# every formula of the page (Sphinx's "math notranslate nohighlight"; MathJax's own output has
# class "math" too): how many, how many MathJax typeset (a rendered box with a width), and
# how much raw TeX is still visible as text: delimiters \( \[ left in a formula, or $...$ in the
# prose (outside code) that was never turned into a formula
_MATH_JS = r"""() => {
    const formulas = Array.from(document.querySelectorAll('span.math.nohighlight, div.math.nohighlight'));
    const rendered = formulas.filter(f => Array.from(f.querySelectorAll('.MathJax, .MathJax_Display'))
        .some(m => m.getBoundingClientRect().width > 0));
    const rawInFormulas = formulas.filter(f => Array.from(f.childNodes)
        .some(n => n.nodeType === Node.TEXT_NODE && /\\[(\[]/.test(n.textContent)));
    const prose = document.querySelector('main').cloneNode(true);
    prose.querySelectorAll('pre, code, script, .math.nohighlight, .cell_output').forEach(e => e.remove());
    const rawDollars = prose.textContent.match(/\$[^$\s][^$]*\$/g) || [];
    return {formulas: formulas.length, rendered: rendered.length,
            raw: rawInFormulas.length + rawDollars.length, examples: rawDollars.slice(0, 3)};
}"""

# the page's own pictures (not the badges from other sites) that loaded with a non-zero natural width
_FIGURES_JS = """() => Array.from(document.querySelectorAll('main img'))
    .filter(i => i.src.startsWith(location.origin) && i.complete && i.naturalWidth > 0)
    .map(i => [i.getAttribute('src'), i.naturalWidth])"""


@pytest.mark.browser
@pytest.mark.parametrize("page", ["site/index.html", "notebooks/04_loss_and_collapse.html"])
def test_a_page_renders_its_figures_and_equations_offline(served_site, chromium_path, page):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    local_failures: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=["--no-sandbox"])
        page_ = browser.new_page(viewport={"width": 1300, "height": 1000})
        page_.set_default_timeout(60_000)
        # offline, as in CI: every request off this machine is refused (the Colab / Binder badges)
        page_.route("**/*", lambda route: route.continue_() if route.request.url.startswith(served_site)
                    else route.abort())
        page_.on("requestfailed", lambda r: local_failures.append(f"{r.url} ({r.failure})")
                 if r.url.startswith(served_site) else None)
        page_.on("response", lambda r: local_failures.append(f"{r.url} ({r.status})")
                 if r.url.startswith(served_site) and r.status >= 400 else None)
        try:
            response = page_.goto(f"{served_site}/{page}")
            assert response is not None and response.ok
            page_.wait_for_function("() => window.MathJax && window.MathJax.Hub", timeout=30_000)
            page_.wait_for_function(f"() => {{ const m = ({_MATH_JS})(); "
                                    "return m.formulas > 0 && m.rendered === m.formulas; }",
                                    timeout=60_000)
            math = page_.evaluate(_MATH_JS)
            figures = page_.evaluate(_FIGURES_JS)
            page_.screenshot(path=str(SHOTS / f"site_{Path(page).stem}.png"))
        finally:
            browser.close()
    assert math["formulas"] > 0 and math["rendered"] == math["formulas"], math
    assert math["raw"] == 0, f"raw TeX delimiters left on the page: {math}"
    assert figures, "no figure (an <img> from the site with a non-zero natural width)"
    # MathJax's hidden MathML for screen readers names its TeX fonts for a few letter styles (e.g.
    # the double-struck E); the package ships only the STIX fonts, which the visible formulas use
    missing = [f for f in local_failures if "/_static/mathjax/fonts/HTML-CSS/TeX/" not in f]
    assert not missing, f"the page's own files failed to load: {missing}"

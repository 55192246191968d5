"""Notebook 01 the way learners meet it: in JupyterLab, in a real browser.

The test starts JupyterLab on 127.0.0.1 (random token, temporary settings, workspaces, runtime and
config dirs, the "test" profile) serving a temporary copy of notebooks/01_patches_and_masks.ipynb
(the committed notebook is never touched), opens it in headless Chromium driven by Playwright,
runs every cell through the "Run" menu, checks that no cell produced an error, moves the first
slider of the mask explorer with the keyboard and checks that the mask picture changed.
Screenshots go to build/browser/.

Chromium is Debian's `chromium` package (Playwright's own browser download is not reachable in CI;
`.ci/run` installs the package when it is missing), found as `$CHROMIUM_PATH`, `chromium` or
`chromium-browser`. The test is skipped, with the reason, only when no Chromium or no `playwright`
package is found. Deselect it with `pytest -m "not browser"`.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_patches_and_masks.ipynb"
SHOTS = REPO / "build" / "browser"

SERVER_START_TIMEOUT_S = 90
NOTEBOOK_OPEN_TIMEOUT_S = 90
RUN_ALL_TIMEOUT_S = 240
IMAGE_CHANGE_TIMEOUT_S = 30

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def _write_settings(settings_dir: Path) -> None:
    """User settings for the temporary lab: every cell in the DOM, no news / update pop-ups."""
    overrides = {
        # the default windowing attaches only the cells near the viewport; the checks read all cells
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false", "checkForUpdates": False},
    }
    for name, values in overrides.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


class JupyterLab:
    """A JupyterLab server in a subprocess, serving `root` on 127.0.0.1."""

    def __init__(self, root: Path, scratch: Path):
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = scratch / "jupyterlab.log"
        settings, workspaces = scratch / "settings", scratch / "workspaces"
        runtime, config = scratch / "runtime", scratch / "config"
        for d in (settings, workspaces, runtime, config):
            d.mkdir(parents=True, exist_ok=True)
        _write_settings(settings)

        env = dict(os.environ)
        env.pop("MPLBACKEND", None)            # the kernel uses matplotlib's inline backend
        env["JEPA_LITE_PROFILE"] = "test"
        env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
        env["JUPYTERLAB_WORKSPACES_DIR"] = str(workspaces)
        env["JUPYTER_RUNTIME_DIR"] = str(runtime)
        env["JUPYTER_CONFIG_DIR"] = str(config)
        # the python3 kernelspec runs `python`: make that this interpreter
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
            f"--LabApp.workspaces_dir={workspaces}", f"--LabApp.user_settings_dir={settings}",
            # window.jupyterapp: lets the test read the cells' outputs from the notebook model
            "--LabApp.expose_app_in_browser=True",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:   # CI containers run as root
            cmd.append("--allow-root")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path}{sep}token={self.token}"

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float) -> None:
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                _get_json(self.url("/api/status"), timeout=2)
                self.ready_s = time.monotonic() - start
                return
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def kernel_states(self) -> list[str]:
        return [s["kernel"]["execution_state"] for s in _get_json(self.url("/api/sessions"))
                if s.get("kernel")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:  # a clean shutdown also ends the kernels
                req = urllib.request.Request(self.url("/api/shutdown"), method="POST")
                urllib.request.urlopen(req, timeout=5).close()
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def jupyterlab(chromium_path, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("jupyterlab")
    root = scratch / "notebooks"
    root.mkdir()
    shutil.copy2(NOTEBOOK, root / NOTEBOOK.name)   # the server may save the copy, never the original
    lab = JupyterLab(root, scratch)
    try:
        lab.wait_ready(SERVER_START_TIMEOUT_S)
        yield lab
    finally:
        lab.stop()


# --- page helpers ---------------------------------------------------------------------------------

# every code cell of the open notebook, read from the model: execution count, source, outputs
_CELLS_JS = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.model.cells;
    const out = [];
    for (let i = 0; i < cells.length; i++) {
        const cell = cells.get(i);
        if (cell.type !== 'code') continue;
        const outputs = [];
        for (let j = 0; j < cell.outputs.length; j++) {
            const o = cell.outputs.get(j).toJSON();
            outputs.push({output_type: o.output_type, ename: o.ename || null, evalue: o.evalue || null,
                          traceback: o.traceback || null});
        }
        const tags = cell.getMetadata('tags') || [];
        out.push({index: i, count: cell.executionCount, source: cell.sharedModel.getSource(), tags, outputs});
    }
    return out;
}"""

# the prompts ("[3]:", "[*]:", "[ ]:") of all code cells in the DOM
_PROMPTS_JS = """() => Array.from(document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')).map(e => e.textContent.trim())"""


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _assert_no_errors(cells: list[dict], after: str) -> None:
    """No output of type "error" (a raised exception) but in cells tagged raises-exception (JupyterLab
    and nbval both expect those to fail); warnings on stderr are fine."""
    errors = [(c["index"], o) for c in cells if "raises-exception" not in c["tags"]
              for o in c["outputs"] if o["output_type"] == "error"]
    if errors:
        raise AssertionError(f"cells raised errors after {after} (cell index counts markdown cells too):\n"
                             + "\n".join(f"  cell {i}: {o['ename']}: {o['evalue']}" for i, o in errors))


def _accept_kernel_dialog(page) -> None:
    """JupyterLab asks for a kernel when the notebook names none it knows: take the default."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        dialog.locator(".jp-mod-accept").first.click()


def _menu(page, menu: str, item: str) -> None:
    """Click `menu` in the menu bar, then its entry `item`."""
    page.locator(".lm-MenuBar-item", has=page.get_by_text(menu, exact=True)).first.click()
    page.locator(".lm-Menu-content > .lm-Menu-item:not(.lm-mod-disabled)",
                 has=page.get_by_text(item, exact=True)).first.click()


def _explorer(page):
    """The mask explorer: the widget box that holds the picture (a widgets.Image) and the sliders."""
    image = page.locator(".jp-OutputArea-output .widget-image")
    _wait(lambda: image.count() > 0, 30, "the mask explorer's picture (a widgets.Image)")
    box = page.locator(".jp-OutputArea-output .widget-box", has=page.locator(".widget-image")) \
              .filter(has=page.locator(".widget-slider")).last
    return box, box.locator(".widget-image").first


def _first_slider(box):
    """The 'targets' slider when there is one, else the first slider of the explorer."""
    targets = box.locator(".widget-slider", has=box.page.get_by_text("targets", exact=True))
    return targets.first if targets.count() else box.locator(".widget-slider").first


def _readout(slider) -> str:
    return slider.locator(".widget-readout").first.inner_text().strip()


def test_notebook_01_runs_in_jupyterlab_and_the_mask_explorer_reacts(jupyterlab, chromium_path):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("01_*.png"):
        old.unlink()
    console_errors: list[str] = []
    t_open = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        try:
            page.goto(jupyterlab.url(f"/lab/tree/{NOTEBOOK.name}"))
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=NOTEBOOK_OPEN_TIMEOUT_S * 1000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.content"
                                   " && window.jupyterapp.shell.currentWidget.content.model")
            _wait(lambda: (_accept_kernel_dialog(page), jupyterlab.kernel_states())[1] == ["idle"],
                  NOTEBOOK_OPEN_TIMEOUT_S, "the kernel to start and be idle")

            # --- run all cells through the menus, as a learner would. The stored outputs are cleared
            # first: then every execution count and every widget on the page comes from this run.
            _menu(page, "Edit", "Clear Outputs of All Cells")
            _wait(lambda: all(c["count"] is None and not c["outputs"] for c in page.evaluate(_CELLS_JS)),
                  10, "the stored outputs to be cleared")
            t0 = time.monotonic()
            open_s = t0 - t_open
            _menu(page, "Run", "Run All Cells")
            _wait(lambda: any("*" in t for t in page.evaluate(_PROMPTS_JS))
                  or any(c["count"] is not None for c in page.evaluate(_CELLS_JS)), 30, "Run All to start")

            def finished():
                return (not any("*" in t for t in page.evaluate(_PROMPTS_JS))
                        and jupyterlab.kernel_states() == ["idle"])
            _wait(finished, RUN_ALL_TIMEOUT_S, "all cells to finish", interval=1.0)
            _wait(finished, 10, "all cells to finish (confirmation)")
            run_s = time.monotonic() - t0
            page.screenshot(path=str(SHOTS / "01_after_run_all.png"))

            cells = page.evaluate(_CELLS_JS)
            _assert_no_errors(cells, "Run All")
            not_run = [c["index"] for c in cells if c["source"].strip() and c["count"] is None]
            assert not not_run, f"cells (by index) not executed by Run All: {not_run}"

            # --- the mask explorer: move its first slider, the picture must change
            box, image = _explorer(page)
            box.scroll_into_view_if_needed()
            box.screenshot(path=str(SHOTS / "01_explorer_before.png"))
            before = image.get_attribute("src")
            assert before, "the explorer's picture has no src"

            slider = _first_slider(box)
            value_before = _readout(slider)
            handle = slider.locator(".noUi-handle").first
            handle.focus()
            handle.press("ArrowLeft")                 # fewer targets: valid whenever the current value is
            if _readout(slider) == value_before:      # it was at its minimum
                handle.press("ArrowRight")
            value_after = _readout(slider)
            assert value_after != value_before, f"the slider did not move (readout {value_before!r})"

            _wait(lambda: image.get_attribute("src") != before, IMAGE_CHANGE_TIMEOUT_S,
                  f"the mask picture to change after the slider moved {value_before} -> {value_after}")
            box.screenshot(path=str(SHOTS / "01_explorer_after.png"))
            page.screenshot(path=str(SHOTS / "01_after_slider.png"))
            _assert_no_errors(page.evaluate(_CELLS_JS), "moving the slider")
            print(f"\nJupyterLab up in {jupyterlab.ready_s:.1f} s, notebook open and kernel idle in {open_s:.1f} s, "
                  f"Run All {run_s:.1f} s, slider {value_before} -> {value_after} and new picture in "
                  f"{time.monotonic() - t0 - run_s:.1f} s; screenshots in {SHOTS}")
        except Exception as e:  # noqa: BLE001 - any failure: add a screenshot and the logs
            try:
                page.screenshot(path=str(SHOTS / "01_failure.png"))
            except Exception:  # noqa: BLE001 - the page may be gone
                pass
            what = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            message = (f"{what}\nscreenshot: {SHOTS / '01_failure.png'}\n"
                       f"browser console errors (last 5): {console_errors[-5:]}\n"
                       f"JupyterLab log (tail):\n{jupyterlab.log_tail(1500)}")
            raise AssertionError(message) from (None if isinstance(e, AssertionError) else e)
        finally:
            browser.close()

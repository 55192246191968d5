"""Fixtures shared by the test files that drive a real browser (test_browser.py, test_site.py)."""
from __future__ import annotations

import os
import shutil

import pytest


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM_PATH, then `chromium`, then `chromium-browser`."""
    candidates = [os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def chromium_path() -> str:
    """Chromium and Playwright, or a skip that says what to install."""
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found ($CHROMIUM_PATH, `chromium`, `chromium-browser`): "
                    "install Debian's chromium package (`apt-get install chromium`) to run the browser test")
    return path

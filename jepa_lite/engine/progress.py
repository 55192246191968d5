"""A progress line that is clean wherever it ends up: a terminal or a notebook's stored output.

In a terminal it is tqdm. In a Jupyter kernel it is one line of text shown with a display id and
updated in place (at most a few times a second): a live notebook sees it move, and the notebook
file keeps exactly one line, the final one, instead of a widget whose stored fallback reads
"0%| | 0/150" on GitHub or nbviewer.
"""
from __future__ import annotations

import sys
import time


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, nbconvert/nbval execution)."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    ipython = shell.get_ipython()
    return ipython is not None and hasattr(ipython, "kernel")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:02d}:{seconds:02d}"


class NotebookLine:
    """The tqdm calls the trainer makes (update, set_postfix, total, refresh, close) as one text line."""

    def __init__(self, total: int | None, initial: int = 0, desc: str = "", min_interval: float = 0.5):
        from IPython.display import display

        self.total, self.n, self.desc = total, initial, desc
        self.postfix = ""
        self.start = time.perf_counter()
        self.initial = initial
        self.min_interval = min_interval
        self._last = 0.0
        self._handle = display({"text/plain": self._text()}, raw=True, display_id=True)

    def _text(self) -> str:
        elapsed = time.perf_counter() - self.start
        done = self.n - self.initial
        rate = f"{done / elapsed:.1f} it/s" if elapsed > 0 and done else "-- it/s"
        of = f"/{self.total}" if self.total else ""
        share = f"{100 * self.n / self.total:3.0f}% " if self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {share}{self.n}{of} [{_duration(elapsed)}, {rate}{postfix}]"

    def refresh(self) -> None:
        self._handle.update({"text/plain": self._text()}, raw=True)
        self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self._last >= self.min_interval:
            self.refresh()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        self.refresh()


def progress_bar(total: int | None, initial: int = 0, desc: str = ""):
    """tqdm in a terminal, a NotebookLine in a Jupyter kernel."""
    if in_notebook():
        return NotebookLine(total, initial=initial, desc=desc)
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, leave=True)

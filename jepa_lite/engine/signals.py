"""Stopping a run cleanly: Ctrl-C (SIGINT) or a scheduler's SIGTERM asks the training loop to stop at
the end of its step; it then writes a checkpoint and raises errors.TrainingStopped."""
from __future__ import annotations

import signal
import threading


class StopSignals:
    """While training: Ctrl-C (SIGINT) or SIGTERM only asks the loop to stop; it then writes a
    checkpoint and raises TrainingStopped. A second signal acts at once as usual. Signal handlers
    can only be set from the main thread: elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:             # asked twice: give up waiting for the step to end
            self._restore()
            signal.raise_signal(signum)
            return
        self.received = signum

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

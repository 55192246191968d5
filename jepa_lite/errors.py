"""The errors jepa_lite expects: bad input, missing data, a stopped run. The command line prints
them as one line and exits with code 2; anything else (a bug, CUDA out of memory) keeps its traceback."""
from __future__ import annotations


class JepaLiteError(Exception):
    """An expected failure whose message says what is wrong and what to do."""


class BadValue(JepaLiteError, ValueError):
    """A setting or an input outside its valid range; the message names the value and the range."""


class LossNotFinite(JepaLiteError, FloatingPointError):
    """Training stopped because the loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointError(JepaLiteError, ValueError):
    """A file that is not a usable jepa_lite checkpoint; the message names the file."""


class DataUnavailable(JepaLiteError, RuntimeError):
    """A data set that cannot be loaded here (offline, missing or damaged files)."""


class NotebookFailed(JepaLiteError, RuntimeError):
    """A course notebook raised an error while it ran."""


class TrainingStopped(KeyboardInterrupt):
    """Training was stopped by a signal (Ctrl-C = SIGINT, or SIGTERM from a cluster's scheduler) after
    writing a checkpoint: running the same command again resumes from it. A KeyboardInterrupt, so a
    notebook shows it as an interrupted cell."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number

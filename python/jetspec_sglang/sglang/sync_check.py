"""Host-sync counter for JETSPEC decode steps (opt-in, for tests and tuning).

A decode step that reads a device value on the host stalls the CPU until the GPU
catches up, which defeats overlap scheduling. ``JETSPEC_SYNC_CHECK=N`` counts, for
every decode step after the first ``N`` (warm-up: CUDA-graph capture, JIT, first
allocations), the synchronizing CUDA calls that PyTorch's sync debug mode reports
(``.item()``, ``.cpu()``, ``.tolist()``, ``nonzero``, blocking copies ...), and logs
the running total. Zero in the steady state is what overlap scheduling needs.

Each reported sync names its site: the innermost frame of the call stack, and the innermost
frame in SGLang or in this package that led to it (a sync inside ``torch.cuda.synchronize``
says little without its caller).
"""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
import warnings
from typing import Callable, Iterator, Optional

import torch

logger = logging.getLogger(__name__)

LOG_PREFIX = "JETSPEC host syncs"
# torch's report of a sync (c10 warn_or_error_on_sync). Only this text: set_sync_debug_mode's own one-time
# notice ("Synchronization debug mode is a prototype feature and does not yet detect all synchronizing
# operations") is no sync, and matching it made the first checked step of every server count one.
_SYNC_WARNING = "called a synchronizing CUDA operation"
_CALLER_PACKAGES = ("/sglang/", "/jetspec_sglang/")


class SyncCounter:
    """Counts synchronizing CUDA operations inside decode steps, after ``warmup`` steps."""

    def __init__(self, warmup: int, log: Callable[[str], None] = logger.info,
                 set_mode: Callable[[str], None] = torch.cuda.set_sync_debug_mode) -> None:
        if warmup < 0:
            raise ValueError(f"JETSPEC_SYNC_CHECK must be >= 0 warm-up steps, got {warmup}")
        self.warmup = warmup
        self.steps = 0
        self.checked_steps = 0
        self.syncs = 0
        self._log = log
        self._set_mode = set_mode

    @classmethod
    def from_env(cls) -> Optional["SyncCounter"]:
        value = os.environ.get("JETSPEC_SYNC_CHECK")
        return cls(int(value)) if value else None

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Wrap one decode step; counts its syncs once the warm-up is over."""
        self.steps += 1
        if self.steps <= self.warmup:
            yield
            return
        caught: list[tuple[warnings.WarningMessage, traceback.StackSummary]] = []

        def record(message, category, filename, lineno, file=None, line=None) -> None:
            # Called inside warnings.warn, so the stack still holds the sync's callers.
            stack = traceback.extract_stack()[:-1]
            caught.append((warnings.WarningMessage(message, category, filename, lineno, file, line), stack))

        with warnings.catch_warnings():  # restores showwarning on exit
            warnings.simplefilter("always")
            warnings.showwarning = record
            self._set_mode("warn")
            try:
                yield
            finally:
                self._set_mode("default")
        syncs = [(w, stack) for w, stack in caught if _SYNC_WARNING in str(w.message)]
        for w, _ in caught:  # other warnings are not ours to swallow
            if _SYNC_WARNING not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.checked_steps += 1
        self.syncs += len(syncs)
        if syncs or self.checked_steps % 64 == 1:
            sites = list(dict.fromkeys(sync_site(w, stack) for w, stack in syncs))[:3]
            self._log(f"{LOG_PREFIX}: {self.syncs} in {self.checked_steps} steady-state decode steps "
                      f"({len(syncs)} in the last{' at ' + '; '.join(sites) if sites else ''})")


def sync_site(warning: warnings.WarningMessage, stack: traceback.StackSummary) -> str:
    """``file:line`` of the warning, then ``via`` the innermost SGLang or JETSPEC frame that led to it."""
    here = f"{_short(warning.filename)}:{warning.lineno}"
    own = [f for f in stack if any(p in f.filename for p in _CALLER_PACKAGES) and f.filename != __file__]
    if not own or (own[-1].filename == warning.filename and own[-1].lineno == warning.lineno):
        return here
    return f"{here} via {_short(own[-1].filename)}:{own[-1].lineno} ({own[-1].name})"


def _short(path: str) -> str:
    """The path from its package down (``torch/cuda/__init__.py``), or its base name."""
    parts = path.replace(os.sep, "/").split("/")
    for root in ("site-packages", "dist-packages", "python"):
        if root in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(root):])
    return os.path.basename(path)


class NoSyncCounter:
    """Stands in when the check is off."""

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        yield

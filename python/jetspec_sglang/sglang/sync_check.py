"""Host-sync counter for JETSPEC decode steps (opt-in, for tests and tuning).

A decode step that reads a device value on the host stalls the CPU until the GPU
catches up, which defeats overlap scheduling. ``JETSPEC_SYNC_CHECK=N`` counts, for
every decode step after the first ``N`` (warm-up: CUDA-graph capture, JIT, first
allocations), the synchronizing CUDA calls that PyTorch's sync debug mode reports
(``.item()``, ``.cpu()``, ``.tolist()``, ``nonzero``, blocking copies ...), and logs
the running total. Zero in the steady state is what overlap scheduling needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Callable, Iterator, Optional

import torch

logger = logging.getLogger(__name__)

LOG_PREFIX = "JETSPEC host syncs"
_SYNC_WARNING = "synchroniz"  # torch: "called a synchronizing CUDA operation"


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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self._set_mode("warn")
            try:
                yield
            finally:
                self._set_mode("default")
        syncs = [w for w in caught if _SYNC_WARNING in str(w.message)]
        for w in caught:  # other warnings are not ours to swallow
            if _SYNC_WARNING not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.checked_steps += 1
        self.syncs += len(syncs)
        if syncs or self.checked_steps % 64 == 1:
            # Where: the Python line that made each sync (file:line, first three distinct).
            sites = list(dict.fromkeys(f"{os.path.basename(w.filename)}:{w.lineno}" for w in syncs))[:3]
            self._log(f"{LOG_PREFIX}: {self.syncs} in {self.checked_steps} steady-state decode steps "
                      f"({len(syncs)} in the last{' at ' + ', '.join(sites) if sites else ''})")


class NoSyncCounter:
    """Stands in when the check is off."""

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        yield

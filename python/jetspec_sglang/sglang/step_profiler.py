"""Per-phase GPU time of JETSPEC decode steps, from CUDA events (opt-in, for tuning).

``JETSPEC_PROFILE_STEPS=N`` makes the worker record a CUDA event after each phase
of every decode step (draft, tree, verify, commit) and, every ``N`` steps, log the
mean time of each phase plus the **gap**: GPU-timeline time between the end of one
step and the start of the next, which is host work (scheduling, batch preparation)
the GPU waited for. Reading the events costs one host sync per ``N`` steps, so keep
it off in production. ``benchmark/step_breakdown.py`` turns these log lines into a table.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional

import torch

logger = logging.getLogger(__name__)

PHASES = ("draft", "tree", "verify", "commit")
LOG_PREFIX = "JETSPEC step breakdown"


class StepProfiler:
    """Collects one event per phase boundary per step; logs phase means every ``every`` steps."""

    def __init__(self, every: int, make_event: Callable[[], Any] = lambda: torch.cuda.Event(enable_timing=True),
                 log: Callable[[str], None] = logger.info) -> None:
        if every < 1:
            raise ValueError(f"JETSPEC_PROFILE_STEPS must be >= 1, got {every}")
        self.every = every
        self._make_event = make_event
        self._log = log
        self._steps: list[tuple[int, list[Any]]] = []  # (batch size, [start, *PHASES]) per step
        self._current: list[Any] = []

    @classmethod
    def from_env(cls) -> Optional["StepProfiler"]:
        value = os.environ.get("JETSPEC_PROFILE_STEPS")
        return cls(int(value)) if value else None

    def mark(self) -> None:
        """Record the next boundary: the step's start, then the end of each phase in ``PHASES`` order."""
        event = self._make_event()
        event.record()
        self._current.append(event)

    def end_step(self, batch_size: int) -> None:
        if len(self._current) != len(PHASES) + 1:
            raise RuntimeError(f"a profiled step needs {len(PHASES) + 1} marks, got {len(self._current)}")
        self._steps.append((batch_size, self._current))
        self._current = []
        if len(self._steps) > self.every:  # the extra first step only anchors the first gap
            self._report()

    def _report(self) -> None:
        self._steps[-1][1][-1].synchronize()
        totals = dict.fromkeys((*PHASES, "gap"), 0.0)
        for (_, prev), (_, cur) in zip(self._steps, self._steps[1:]):
            totals["gap"] += prev[-1].elapsed_time(cur[0])
            for name, a, b in zip(PHASES, cur, cur[1:]):
                totals[name] += a.elapsed_time(b)
        n = len(self._steps) - 1
        sizes = sorted({bs for bs, _ in self._steps[1:]})
        means = {k: v / n for k, v in totals.items()}
        self._log(f"{LOG_PREFIX} over {n} steps (bs {sizes}): "
                  + ", ".join(f"{k} {v:.3f} ms" for k, v in means.items())
                  + f", step {sum(means.values()):.3f} ms")
        self._steps = self._steps[-1:]


class Profilers:
    """The step profilers switched on by the environment (none, one or both), driven as one."""

    def __init__(self, *profilers: Any) -> None:
        self.profilers = [p for p in profilers if p is not None]

    def mark(self) -> None:
        for p in self.profilers:
            p.mark()

    def end_step(self, batch_size: int) -> None:
        for p in self.profilers:
            p.end_step(batch_size)

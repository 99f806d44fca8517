"""Per-phase GPU-timeline and host time of JETSPEC decode steps (opt-in, for tuning).

``JETSPEC_PROFILE_STEPS=N`` makes the worker record a CUDA event and a host clock reading after
each phase of every decode step (draft, tree, verify, commit) and, every ``N`` steps, log two lines:

- the mean GPU-timeline time of each phase plus the **gap**: time between the end of one step
  and the start of the next, which is host work (scheduling, batch preparation) the GPU waited for;
- the mean **host** time of each phase and gap (how long the worker's Python took to issue it).

Both lines end with the named laps the worker takes inside phases (``split``), e.g. ``target_forward`` and
``accept`` inside verify: on the GPU line the time from the previous boundary's event to the lap's, on the
host line the Python time between them.

A phase whose host time is close to its GPU-timeline time is host bound: the GPU ran each launch as
soon as it was issued. Reading the events costs one host sync per ``N`` steps, so keep it off in
production. ``benchmark/step_breakdown.py`` turns these log lines into tables.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

import torch

logger = logging.getLogger(__name__)

PHASES = ("draft", "tree", "verify", "commit")
LOG_PREFIX = "JETSPEC step breakdown"
HOST_LOG_PREFIX = "JETSPEC step host time"


class StepProfiler:
    """Collects one event and one host time per phase boundary per step, and named laps (an event and a host
    time each); logs the means every ``every`` steps.

    Parameters:
        every: steps per logged window.
        make_event: a recordable timing event (a CUDA event; tests pass a fake).
        log: where the two lines go.
        clock: the host clock, in seconds.
    """

    def __init__(self, every: int, make_event: Callable[[], Any] = lambda: torch.cuda.Event(enable_timing=True),
                 log: Callable[[str], None] = logger.info, clock: Callable[[], float] = time.perf_counter) -> None:
        if every < 1:
            raise ValueError(f"JETSPEC_PROFILE_STEPS must be >= 1, got {every}")
        self.every = every
        self._make_event = make_event
        self._log = log
        self._clock = clock
        self._steps: list[tuple[int, list[Any], list[float]]] = []  # (bs, events, host times) per step
        self._current: list[Any] = []
        self._host: list[float] = []
        self._laps: dict[str, float] = {}  # host seconds per lap name, this window
        self._gpu_laps: list[tuple[str, Any, Any]] = []  # (name, start event, end event), this window
        self._last_host = 0.0
        self._last_event: Optional[Any] = None

    @classmethod
    def from_env(cls) -> Optional["StepProfiler"]:
        value = os.environ.get("JETSPEC_PROFILE_STEPS")
        return cls(int(value)) if value else None

    def mark(self) -> None:
        """Record the next boundary: the step's start, then the end of each phase in ``PHASES`` order."""
        event = self._make_event()
        event.record()
        self._current.append(event)
        self._last_event = event
        self._last_host = self._clock()
        self._host.append(self._last_host)

    def split(self, name: str) -> None:
        """A lap inside the current phase: the host and GPU-timeline time since the last mark or lap, logged as
        ``name``."""
        now = self._clock()
        event = self._make_event()
        event.record()
        if self._steps:  # the first step only anchors the first gap, as for the phases
            self._laps[name] = self._laps.get(name, 0.0) + now - self._last_host
            self._gpu_laps.append((name, self._last_event, event))
        self._last_host = now
        self._last_event = event

    def end_step(self, batch_size: int) -> None:
        if len(self._current) != len(PHASES) + 1:
            raise RuntimeError(f"a profiled step needs {len(PHASES) + 1} marks, got {len(self._current)}")
        self._steps.append((batch_size, self._current, self._host))
        self._current, self._host = [], []
        if len(self._steps) > self.every:  # the extra first step only anchors the first gap
            self._report()

    def _report(self) -> None:
        self._steps[-1][1][-1].synchronize()
        gpu = dict.fromkeys((*PHASES, "gap"), 0.0)
        host = dict.fromkeys((*PHASES, "gap"), 0.0)
        for (_, prev, prev_host), (_, cur, cur_host) in zip(self._steps, self._steps[1:]):
            gpu["gap"] += prev[-1].elapsed_time(cur[0])
            host["gap"] += 1000 * (cur_host[0] - prev_host[-1])
            for i, name in enumerate(PHASES):
                gpu[name] += cur[i].elapsed_time(cur[i + 1])
                host[name] += 1000 * (cur_host[i + 1] - cur_host[i])
        n = len(self._steps) - 1
        sizes = sorted({bs for bs, _, _ in self._steps[1:]})
        laps = {name: 1000 * seconds for name, seconds in self._laps.items()}
        gpu_laps: dict[str, float] = {}
        for name, start, end in self._gpu_laps:
            gpu_laps[name] = gpu_laps.get(name, 0.0) + start.elapsed_time(end)
        for prefix, totals, extra in ((LOG_PREFIX, gpu, gpu_laps), (HOST_LOG_PREFIX, host, laps)):
            means = {k: v / n for k, v in totals.items()}
            self._log(f"{prefix} over {n} steps (bs {sizes}): " + ", ".join(f"{k} {v:.3f} ms" for k, v in means.items())
                      + f", step {sum(means.values()):.3f} ms"
                      + ("; " + ", ".join(f"{k} {v / n:.3f} ms" for k, v in extra.items()) if extra else ""))
        self._steps = self._steps[-1:]
        self._laps, self._gpu_laps = {}, []


class Profilers:
    """The step profilers switched on by the environment (none, one or both), driven as one."""

    def __init__(self, *profilers: Any) -> None:
        self.profilers = [p for p in profilers if p is not None]

    def mark(self) -> None:
        for p in self.profilers:
            p.mark()

    def split(self, name: str) -> None:
        for p in self.profilers:
            p.split(name)

    def end_step(self, batch_size: int) -> None:
        for p in self.profilers:
            p.end_step(batch_size)

"""Host-side trace of JETSPEC decode steps: per phase, CPU time and CUDA launches (opt-in, for tuning).

The CUDA-event profiler (``step_profiler``) says how long each phase holds the GPU timeline;
on a small target that time is mostly the host issuing work. This tracer says what the host
does there. ``JETSPEC_TRACE_STEPS=W:K`` skips ``W`` warm-up decode steps, then runs
``torch.profiler`` over the next ``K`` and logs, per phase (draft, tree, verify, commit, and
the gap between steps, where the scheduler runs), the host time per step and the number of
kernel and graph launches, async copies, host syncs and aten ops per step. The Chrome trace goes
to ``JETSPEC_TRACE_DIR`` (default ``/tmp/jetspec-trace``) for a closer look.
"""

from __future__ import annotations

import bisect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch

from .step_profiler import PHASES

logger = logging.getLogger(__name__)

LOG_PREFIX = "JETSPEC step trace"
RANGE_PREFIX = "jetspec."
LAUNCHES = frozenset({"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch"})
COPIES = frozenset({"cudaMemcpyAsync", "cudaMemsetAsync", "cudaMemcpy2DAsync"})
SYNCS = frozenset({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"})


@dataclass(frozen=True)
class TraceEvent:
    """One profiler event: what ran, from when to when (us), on which host thread."""

    name: str
    start: float
    end: float
    thread: int


@dataclass
class PhaseCost:
    host_us: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("launches", "copies", "syncs", "ops"), 0))


def _kind(name: str) -> Optional[str]:
    if name in LAUNCHES:
        return "launches"
    if name in COPIES:
        return "copies"
    if name in SYNCS:
        return "syncs"
    return "ops" if name.startswith("aten::") else None


def summarize_trace(events: Iterable[TraceEvent], steps: int) -> dict[str, dict[str, float]]:
    """Per phase (``PHASES`` and ``gap``): host ms, launches, copies, syncs and aten ops, each per step (per gap).

    Phases are the ``jetspec.<phase>`` ranges; a gap is the host time on the same thread from the
    end of one step's last phase to the start of the next step's first (``steps - 1`` of them).
    """
    events = list(events)
    intervals: dict[int, list[tuple[float, float, str]]] = {}
    for e in events:
        if e.name.startswith(RANGE_PREFIX):
            intervals.setdefault(e.thread, []).append((e.start, e.end, e.name[len(RANGE_PREFIX):]))
    costs = {name: PhaseCost() for name in (*PHASES, "gap")}
    num_gaps = 0
    for thread, spans in intervals.items():
        spans.sort()
        firsts = [s for s in spans if s[2] == PHASES[0]]
        lasts = [s for s in spans if s[2] == PHASES[-1]]
        gaps = [(last[1], first[0], "gap") for last, first in zip(lasts, firsts[1:])]
        num_gaps += len(gaps)
        spans += gaps
        spans.sort()
        for start, end, name in spans:
            costs[name].host_us += end - start
        starts = [s[0] for s in spans]
        for e in events:
            kind = _kind(e.name)
            if kind is None or e.thread != thread:
                continue
            i = bisect.bisect_right(starts, e.start) - 1
            if i >= 0 and e.end <= spans[i][1]:
                costs[spans[i][2]].counts[kind] += 1
    per = {**dict.fromkeys(PHASES, steps), "gap": max(num_gaps, 1)}
    return {name: {"host_ms": round(c.host_us / 1000 / per[name], 3), **{k: round(v / per[name], 1) for k, v in c.counts.items()}}
            for name, c in costs.items()}


def format_summary(summary: dict[str, dict[str, float]], steps: int, sizes: list[int]) -> str:
    parts = [f"{name} {v['host_ms']:.3f} ms host, {v['launches']:g} launches, {v['copies']:g} copies, "
             f"{v['syncs']:g} syncs, {v['ops']:g} aten ops" for name, v in summary.items()]
    return f"{LOG_PREFIX} per step over {steps} steps (bs {sizes}): " + "; ".join(parts)


class StepTracer:
    """Traces decode steps ``warmup + 1 .. warmup + steps`` with ``torch.profiler``; same marks as ``StepProfiler``."""

    def __init__(self, warmup: int, steps: int, out_dir: str, log: Callable[[str], None] = logger.info,
                 make_profiler: Optional[Callable[[], Any]] = None) -> None:
        if warmup < 0 or steps < 1:
            raise ValueError(f"JETSPEC_TRACE_STEPS=W:K needs W >= 0 and K >= 1, got {warmup}:{steps}")
        self.warmup, self.steps, self.out_dir = warmup, steps, Path(out_dir)
        self._log = log
        self._make_profiler = make_profiler or _torch_profiler
        self._profiler: Any = None
        self._range: Any = None
        self._marks = 0
        self._done_steps = 0
        self._sizes: set[int] = set()

    @classmethod
    def from_env(cls) -> Optional["StepTracer"]:
        value = os.environ.get("JETSPEC_TRACE_STEPS")
        if not value:
            return None
        warmup, _, steps = value.partition(":")
        return cls(int(warmup), int(steps or 8), os.environ.get("JETSPEC_TRACE_DIR", "/tmp/jetspec-trace"))

    def mark(self) -> None:
        """The step's start, then the end of each phase in ``PHASES`` order."""
        if self._marks == 0 and self._done_steps == self.warmup and self._profiler is None:
            self._profiler = self._make_profiler()
            self._profiler.__enter__()
        if self._profiler is not None:
            if self._range is not None:
                self._range.__exit__(None, None, None)
                self._range = None
            if self._marks < len(PHASES):
                self._range = torch.autograd.profiler.record_function(RANGE_PREFIX + PHASES[self._marks])
                self._range.__enter__()
        self._marks += 1

    def split(self, name: str) -> None:
        """Named laps are ``StepProfiler``'s; the trace already times every op of a phase."""

    def end_step(self, batch_size: int) -> None:
        if self._marks != len(PHASES) + 1:
            raise RuntimeError(f"a traced step needs {len(PHASES) + 1} marks, got {self._marks}")
        self._marks = 0
        self._done_steps += 1
        if self._profiler is None:
            return
        self._sizes.add(batch_size)
        if self._done_steps == self.warmup + self.steps:
            self._finish()

    def _finish(self) -> None:
        profiler, self._profiler = self._profiler, None
        profiler.__exit__(None, None, None)
        events = [TraceEvent(e.name, e.time_range.start, e.time_range.end, e.thread) for e in profiler.events()]
        self._log(format_summary(summarize_trace(events, self.steps), self.steps, sorted(self._sizes)))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"jetspec-steps-pid{os.getpid()}.json"
        profiler.export_chrome_trace(str(path))
        self._log(f"{LOG_PREFIX}: Chrome trace in {path}")


def _torch_profiler() -> Any:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    return profile(activities=activities)

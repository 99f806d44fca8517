"""The opt-in step profiler: phase means and the inter-step gap from (fake) CUDA events,
in the log format ``benchmark/step_breakdown.py`` reads back."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from typing import Iterator

import pytest

from jetspec_sglang.sglang.step_profiler import LOG_PREFIX, StepProfiler


class FakeEvent:
    """A CUDA event stand-in whose timestamp (ms) is taken from a scripted clock at record()."""

    clock: Iterator[int]

    def record(self) -> None:
        self.t = next(self.clock)

    def elapsed_time(self, later: "FakeEvent") -> float:
        return float(later.t - self.t)

    def synchronize(self) -> None:
        pass


def test_reports_phase_means_and_gap_every_n_steps() -> None:
    # Each step: start, draft +1, tree +2, verify +3, commit +4 (ms); 10 ms between steps.
    times = []
    t = 0
    for _ in range(5):
        times += [t, t + 1, t + 3, t + 6, t + 10]
        t += 20
    FakeEvent.clock = iter(times)
    lines: list[str] = []
    profiler = StepProfiler(every=2, make_event=FakeEvent, log=lines.append)
    for _ in range(5):
        for _ in range(5):
            profiler.mark()
        profiler.end_step(batch_size=3)
    assert len(lines) == 2  # after steps 3 and 5 (step 1 only anchors the first gap)
    assert lines[0] == (f"{LOG_PREFIX} over 2 steps (bs [3]): draft 1.000 ms, tree 2.000 ms, verify 3.000 ms, "
                        "commit 4.000 ms, gap 10.000 ms, step 20.000 ms")


def test_a_step_with_missing_marks_is_an_error() -> None:
    profiler = StepProfiler(every=1, make_event=FakeEvent, log=print)
    FakeEvent.clock = itertools.count()
    profiler.mark()
    with pytest.raises(RuntimeError, match="needs 5 marks"):
        profiler.end_step(1)


def test_from_env(monkeypatch) -> None:
    monkeypatch.delenv("JETSPEC_PROFILE_STEPS", raising=False)
    assert StepProfiler.from_env() is None
    monkeypatch.setenv("JETSPEC_PROFILE_STEPS", "0")
    with pytest.raises(ValueError, match=">= 1"):
        StepProfiler.from_env()


def test_step_breakdown_parses_what_the_profiler_logs() -> None:
    path = Path(__file__).resolve().parents[1] / "benchmark" / "step_breakdown.py"
    spec = importlib.util.spec_from_file_location("step_breakdown", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)

    FakeEvent.clock = itertools.count()  # every phase and gap lasts 1 ms
    lines: list[str] = []
    profiler = StepProfiler(every=1, make_event=FakeEvent, log=lambda m: lines.append(f"[2026-11-28 12:00:00] {m}"))
    for _ in range(3):
        for _ in range(5):
            profiler.mark()
        profiler.end_step(2)
    means = benchmark.phase_means("noise\n" + "\n".join(lines) + "\nDecode batch ...")
    assert means == {"draft": 1.0, "tree": 1.0, "verify": 1.0, "commit": 1.0, "gap": 1.0, "step": 5.0}

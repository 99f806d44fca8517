"""benchmark/step_breakdown.py reads the worker's profiler lines back (the two must agree on the format)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from jetspec_sglang.sglang.step_profiler import StepProfiler


def _load_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmark" / "step_breakdown.py"
    spec = importlib.util.spec_from_file_location("step_breakdown", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Event:
    clock = iter(range(0, 10_000, 1))

    def record(self) -> None:
        self.t = next(_Event.clock)

    def elapsed_time(self, later: "_Event") -> float:
        return float(later.t - self.t)

    def synchronize(self) -> None:
        pass


def test_breakdown_parses_what_the_profiler_logs() -> None:
    lines: list[str] = []
    profiler = StepProfiler(every=1, make_event=_Event, log=lambda m: lines.append(f"[2026-11-28 12:00:00] {m}"))
    for _ in range(3):
        for _ in range(5):
            profiler.mark()
        profiler.end_step(2)
    means = _load_benchmark().phase_means("noise\n" + "\n".join(lines) + "\nDecode batch ...")
    assert means == {"draft": 1.0, "tree": 1.0, "verify": 1.0, "commit": 1.0, "gap": 1.0, "step": 5.0}

"""The opt-in host trace of JETSPEC decode steps (``JETSPEC_TRACE_STEPS``): what the host does in each phase."""

from __future__ import annotations

import json
import time

import pytest
import torch

from jetspec_sglang.sglang.step_profiler import PHASES
from jetspec_sglang.sglang.step_tracer import LOG_PREFIX, StepTracer, TraceEvent, summarize_trace


def step_events(t0: float, thread: int = 1) -> list[TraceEvent]:
    """One step of phase ranges 100 us each from ``t0``, with launches inside draft and verify."""
    events = [TraceEvent(f"jetspec.{name}", t0 + 100 * i, t0 + 100 * (i + 1), thread) for i, name in enumerate(PHASES)]
    events += [TraceEvent("cudaLaunchKernel", t0 + 10, t0 + 12, thread), TraceEvent("cudaGraphLaunch", t0 + 210, t0 + 220, thread),
               TraceEvent("aten::mm", t0 + 20, t0 + 40, thread), TraceEvent("cudaStreamSynchronize", t0 + 250, t0 + 260, thread)]
    return events


def test_summary_assigns_launches_to_phases_and_measures_the_gap() -> None:
    events = step_events(0) + step_events(1000) + [
        TraceEvent("cudaMemcpyAsync", 700, 710, 1),      # between the steps: the scheduler's gap
        TraceEvent("cudaLaunchKernel", 30, 31, 2),       # another thread: not ours
    ]
    summary = summarize_trace(events, steps=2)
    assert summary["draft"] == {"host_ms": 0.1, "launches": 1.0, "copies": 0.0, "syncs": 0.0, "ops": 1.0}
    assert summary["verify"] == {"host_ms": 0.1, "launches": 1.0, "copies": 0.0, "syncs": 1.0, "ops": 0.0}
    assert summary["tree"]["launches"] == 0 and summary["commit"]["host_ms"] == 0.1
    assert summary["gap"] == {"host_ms": 0.6, "launches": 0.0, "copies": 1.0, "syncs": 0.0, "ops": 0.0}  # one gap


def test_traces_real_steps_after_the_warmup(tmp_path) -> None:
    lines: list[str] = []
    tracer = StepTracer(warmup=2, steps=3, out_dir=str(tmp_path), log=lines.append)
    x = torch.randn(32, 32)
    for _ in range(6):
        tracer.mark()
        x = torch.tanh(x @ x)  # draft: aten ops
        tracer.mark()          # tree: nothing
        tracer.mark()
        time.sleep(0.002)      # verify: host time only
        tracer.mark()
        tracer.mark()
        tracer.end_step(4)
        time.sleep(0.001)      # the gap
    assert len(lines) == 2 and lines[0].startswith(f"{LOG_PREFIX} per step over 3 steps (bs [4]): draft ")
    fields = dict(part.split(" ", 1) for part in lines[0].split(": ", 1)[1].split("; "))
    assert "0 aten ops" in fields["tree"] and " 0 aten ops" not in fields["draft"]
    assert float(fields["verify"].split(" ms")[0]) >= 2.0 and float(fields["gap"].split(" ms")[0]) >= 1.0
    trace = json.loads(next(tmp_path.glob("jetspec-steps-pid*.json")).read_text())
    assert any(e.get("name") == "jetspec.draft" for e in trace["traceEvents"])


def test_env_switch_and_bad_values(monkeypatch) -> None:
    monkeypatch.delenv("JETSPEC_TRACE_STEPS", raising=False)
    assert StepTracer.from_env() is None
    monkeypatch.setenv("JETSPEC_TRACE_STEPS", "16:4")
    tracer = StepTracer.from_env()
    assert (tracer.warmup, tracer.steps) == (16, 4)
    monkeypatch.setenv("JETSPEC_TRACE_STEPS", "4:0")
    with pytest.raises(ValueError, match="K >= 1"):
        StepTracer.from_env()
    with pytest.raises(RuntimeError, match="needs 5 marks"):
        StepTracer(0, 1, "/tmp").end_step(1)

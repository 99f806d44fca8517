"""The opt-in step profiler: phase means and the inter-step gap from (fake) CUDA events,
in the log format ``benchmark/step_breakdown.py`` reads back."""

from __future__ import annotations

import itertools
import json
from typing import Iterator

import pytest
from benchmark_scripts import load_benchmark

from jetspec_sglang.sglang.step_profiler import HOST_LOG_PREFIX, LOG_PREFIX, StepProfiler


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
    profiler = StepProfiler(every=2, make_event=FakeEvent, log=lines.append, clock=lambda: 0.0)
    for _ in range(5):
        for _ in range(5):
            profiler.mark()
        profiler.end_step(batch_size=3)
    assert len(lines) == 4  # GPU and host lines after steps 3 and 5 (step 1 only anchors the first gap)
    assert lines[0] == (f"{LOG_PREFIX} over 2 steps (bs [3]): draft 1.000 ms, tree 2.000 ms, verify 3.000 ms, "
                        "commit 4.000 ms, gap 10.000 ms, step 20.000 ms")


def lapped_step(profiler: StepProfiler, verify_laps: tuple[str, ...], batch_size: int) -> None:
    """One step's marks, with a ``draft_inputs`` lap in the draft and ``verify_laps`` in the verify."""
    profiler.mark()
    profiler.split("draft_inputs")
    profiler.mark()
    profiler.mark()
    for name in verify_laps:
        profiler.split(name)
    profiler.mark()
    profiler.mark()
    profiler.end_step(batch_size)


def test_reports_host_time_per_phase_and_named_laps() -> None:
    # Host clock (s): each step starts 0.010 after the previous ends; draft takes 1 ms with a 0.25 ms lap,
    # tree 2 ms, verify 3 ms with laps of 1 and 1.5 ms, commit 4 ms.
    readings = []
    t = 0.0
    for _ in range(3):
        readings += [t, t + 0.00025, t + 0.001, t + 0.003, t + 0.004, t + 0.0055, t + 0.006, t + 0.010]
        t += 0.020
    clock = iter(readings)
    FakeEvent.clock = itertools.count()
    lines: list[str] = []
    profiler = StepProfiler(every=2, make_event=FakeEvent, log=lines.append, clock=lambda: next(clock))
    for _ in range(3):
        lapped_step(profiler, ("verify_prepare", "target_forward"), batch_size=2)
    assert lines[1] == (f"{HOST_LOG_PREFIX} over 2 steps (bs [2]): draft 1.000 ms, tree 2.000 ms, verify 3.000 ms, "
                        "commit 4.000 ms, gap 10.000 ms, step 20.000 ms; draft_inputs 0.250 ms, "
                        "verify_prepare 1.000 ms, target_forward 1.500 ms")
    medians = load_benchmark("step_breakdown").phase_medians(lines[1], 2, HOST_LOG_PREFIX)
    assert medians["verify_prepare"] == 1.0 and medians["gap"] == 10.0
    assert load_benchmark("step_breakdown").phase_medians(lines[1], 2) == {}  # GPU lines only by default


def test_laps_split_a_phase_on_the_gpu_timeline_too() -> None:
    """Each lap's GPU time runs from the previous boundary's event to its own: ``target_forward`` from the
    tree's end, ``accept`` from ``target_forward``'s end (ms per step: draft 3 with a 1 ms lap, tree 1,
    verify 6 split 5 + 1, commit 1, gap 9)."""
    times = []
    t = 0
    for _ in range(3):
        times += [t, t + 1, t + 3, t + 4, t + 9, t + 10, t + 10, t + 11]
        t += 20
    FakeEvent.clock = iter(times)
    lines: list[str] = []
    profiler = StepProfiler(every=2, make_event=FakeEvent, log=lines.append, clock=lambda: 0.0)
    for _ in range(3):
        lapped_step(profiler, ("target_forward", "accept"), batch_size=1)
    assert lines[0] == (f"{LOG_PREFIX} over 2 steps (bs [1]): draft 3.000 ms, tree 1.000 ms, verify 6.000 ms, "
                        "commit 1.000 ms, gap 9.000 ms, step 20.000 ms; draft_inputs 1.000 ms, "
                        "target_forward 5.000 ms, accept 1.000 ms")
    medians = load_benchmark("step_breakdown").phase_medians(lines[0], 1)
    assert medians["target_forward"] == 5.0 and medians["verify"] == 6.0


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


def profiled_lines(batch_sizes: list[int]) -> list[str]:
    """Profiler log lines, one window per step, every phase and gap lasting 1 ms."""
    FakeEvent.clock = itertools.count()
    lines: list[str] = []
    profiler = StepProfiler(every=1, make_event=FakeEvent, log=lambda m: lines.append(f"[2026-11-28 12:00:00] {m}"))
    for bs in batch_sizes:
        for _ in range(5):
            profiler.mark()
        profiler.end_step(bs)
    return lines


def test_step_breakdown_parses_what_the_profiler_logs() -> None:
    lines = profiled_lines([2, 2, 2])
    medians = load_benchmark("step_breakdown").phase_medians("noise\n" + "\n".join(lines) + "\nDecode batch ...", 2)
    assert medians == {"draft": 1.0, "tree": 1.0, "verify": 1.0, "commit": 1.0, "gap": 1.0, "step": 5.0}


def test_step_breakdown_keeps_only_steady_windows_of_its_batch_size() -> None:
    """Windows where the batch changed, and idle time before a run (one long gap), must not move the result."""
    steady = profiled_lines([4, 4, 4, 4])
    mixed = f"[t] {LOG_PREFIX} over 16 steps (bs [1, 4]): draft 1.0 ms, gap 90.0 ms, step 91.0 ms"
    idle = f"[t] {LOG_PREFIX} over 16 steps (bs [4]): draft 1.0 ms, tree 1.0 ms, verify 1.0 ms, commit 1.0 ms, gap 120.0 ms, step 124.0 ms"
    other = f"[t] {LOG_PREFIX} over 16 steps (bs [1]): draft 9.0 ms, tree 9.0 ms, verify 9.0 ms, commit 9.0 ms, gap 9.0 ms, step 45.0 ms"
    medians = load_benchmark("step_breakdown").phase_medians("\n".join([other, mixed, idle, *steady]), 4)
    assert medians == {"draft": 1.0, "tree": 1.0, "verify": 1.0, "commit": 1.0, "gap": 1.0, "step": 5.0}
    assert load_benchmark("step_breakdown").phase_medians("\n".join(steady), 8) == {}


def test_reparse_rebuilds_the_phase_columns_from_the_server_logs(tmp_path) -> None:
    benchmark = load_benchmark("step_breakdown")
    out = tmp_path / "run"
    rows = [{"config": "plain", "bs": 2, "step_ms": 1.0, "tau": 1.0, "phases_ms": {}},
            {"config": "jetspec:64", "bs": 2, "step_ms": 5.0, "tau": 1.0, "phases_ms": {"gap": 99.0}}]
    out.with_suffix(".json").write_text(json.dumps({"meta": {"model": "m"}, "rows": rows}))
    (tmp_path / "run-plain.log").write_text("no profiler lines\n")
    (tmp_path / "run-jetspec-64.log").write_text("\n".join(profiled_lines([2, 2, 2])))
    benchmark.reparse(out)
    run = json.loads(out.with_suffix(".json").read_text())
    assert run["rows"][1]["phases_ms"]["gap"] == 1.0 and run["rows"][0]["phases_ms"] == {}
    assert "reparsed" in run["meta"] and "| jetspec:64 | 2 | 5.0 | 5.00 |" in out.with_suffix(".md").read_text()


def test_profilers_drive_every_switched_on_profiler() -> None:
    from jetspec_sglang.sglang.step_profiler import Profilers

    calls: list[str] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def mark(self) -> None:
            calls.append(f"{self.name}.mark")

        def end_step(self, batch_size: int) -> None:
            calls.append(f"{self.name}.end {batch_size}")

    group = Profilers(Recorder("a"), None, Recorder("b"))
    group.mark()
    group.end_step(3)
    assert calls == ["a.mark", "b.mark", "a.end 3", "b.end 3"]
    Profilers().mark()  # none switched on: nothing to do


def test_markdown_lists_host_traces() -> None:
    rows = [{"config": "plain", "bs": 1, "step_ms": 1.0, "tau": 1.0, "phases_ms": {}},
            {"config": "jetspec:64", "bs": 1, "step_ms": 4.0, "tau": 1.0, "phases_ms": {},
             "host_trace": "per step over 16 steps (bs [1]): draft 0.9 ms host, 12 launches",
             "gpu_trace": "GPU per step over 16 steps: draft graph 179 us (54 kernels)"}]
    text = load_benchmark("step_breakdown").markdown({"model": "m"}, rows)
    assert "- jetspec:64, bs 1: per step over 16 steps (bs [1]): draft 0.9 ms host, 12 launches" in text
    assert "  - GPU per step over 16 steps: draft graph 179 us (54 kernels) (`trace_kernels.py`" in text


def test_markdown_puts_each_phase_in_plain_steps() -> None:
    rows = [{"config": "plain", "bs": 1, "step_ms": 1.2, "log_step_ms": 1.0, "tau": 1.0, "phases_ms": {}},
            {"config": "jetspec:128", "bs": 1, "step_ms": 2.2, "log_step_ms": 2.0, "tau": 1.0,
             "phases_ms": {"draft": 0.3, "tree": 0.05, "verify": 1.5, "commit": 0.0, "gap": 0.1, "step": 1.95,
                           "target_forward": 1.25, "accept": 0.25}},
            {"config": "jetspec:128", "bs": 4, "step_ms": 3.0, "tau": 1.0, "phases_ms": {"verify": 2.0}}]  # no plain
    text = load_benchmark("step_breakdown").markdown({"model": "m"}, rows)
    table = text.split("Each phase and lap in plain steps", 1)[1]
    assert "| config | bs | draft | tree | verify | commit | gap | target_forward | accept | largest phase |" in table
    assert "| jetspec:128 | 1 | 0.30 | 0.05 | 1.50 | 0.00 | 0.10 | 1.25 | 0.25 | verify |" in table
    assert "| jetspec:128 | 4 |" not in table


def test_log_step_is_the_steady_state_of_sglang_decode_lines() -> None:
    """``1000 * bs * accept len / gen throughput`` over the intervals at that bs, the first (the batch's start) left
    out; plain lines carry no accept length."""
    benchmark = load_benchmark("step_breakdown")
    spec = "\n".join(f"[t] Decode batch, #running-req: {bs}, #token: 9, token usage: 0.00, accept len: {acc}, "
                     f"accept rate: 0.50, cuda graph: True, gen throughput (token/s): {tps}, #queue-req: 0"
                     for bs, acc, tps in [(1, 1.0, 7.0), (1, 2.0, 1000.0), (1, 2.0, 800.0), (1, 2.0, 1000.0),
                                          (4, 2.0, 90.0), (4, 2.0, 4000.0), (4, 2.0, 4000.0)])  # fmt: skip
    assert benchmark.decode_log_step_ms(spec, 1) == 2.0  # median of 2.0, 2.5, 2.0
    assert benchmark.decode_log_step_ms(spec, 4) == 2.0
    assert benchmark.decode_log_step_ms(spec, 2) is None
    plain = "\n".join(f"[t] Decode batch, #running-req: 2, #token: 9, token usage: 0.00, cuda graph: True, "
                      f"gen throughput (token/s): {tps}, #queue-req: 0" for tps in (5.0, 1600.0, 2000.0, 1600.0))
    assert benchmark.decode_log_step_ms(plain, 2) == 1.25

"""``benchmark/trace_kernels.py``: GPU time attributed to step phases through launch correlation ids."""

from __future__ import annotations

import gzip
import json

from benchmark_scripts import load_benchmark

trace_kernels = load_benchmark("trace_kernels")


def synthetic_trace() -> list[dict]:
    """Two steps: each a draft range with a graph launch (two kernels) and a verify range with an eager
    launch; one more eager launch between steps (the scheduler's gap)."""
    events = []
    for step, t in enumerate((0.0, 1000.0)):
        events += [
            {"cat": "user_annotation", "name": "jetspec.draft", "ts": t, "dur": 100},
            {"cat": "user_annotation", "name": "jetspec.verify", "ts": t + 200, "dur": 100},
            {"cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": t + 10, "dur": 5, "args": {"correlation": 10 + step}},
            {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": t + 210, "dur": 5, "args": {"correlation": 20 + step}},
            {"cat": "kernel", "name": "gemm", "ts": t + 20, "dur": 30, "args": {"correlation": 10 + step}},
            {"cat": "kernel", "name": "attn", "ts": t + 50, "dur": 10, "args": {"correlation": 10 + step}},
            {"cat": "kernel", "name": "argmax", "ts": t + 220, "dur": 4, "args": {"correlation": 20 + step}},
        ]
    events += [{"cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": 500, "dur": 1, "args": {"correlation": 99}},
               {"cat": "gpu_memcpy", "name": "Memcpy HtoD", "ts": 510, "dur": 6, "args": {"correlation": 99}},
               {"cat": "kernel", "name": "orphan", "ts": 5, "dur": 50, "args": {"correlation": 12345}}]  # fmt: skip
    return events


def test_kernels_land_in_their_launch_phase_per_step(tmp_path) -> None:
    path = tmp_path / "trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": synthetic_trace()}, f)
    rows, steps = trace_kernels.kernel_times(trace_kernels.load_events(path))
    assert steps == 2
    got = {(r.phase, r.launch, r.kernel): (r.calls_per_step, r.us_per_step) for r in rows}
    assert got == {("draft", "graph", "gemm"): (1, 30), ("draft", "graph", "attn"): (1, 10),
                   ("verify", "eager", "argmax"): (1, 4), ("gap", "eager", "Memcpy HtoD"): (0.5, 3)}  # fmt: skip
    assert rows[0].kernel == "gemm"  # largest first; the kernel without a known launch is left out
    text = trace_kernels.report(rows, steps, top=2)
    assert "| draft | graph | 2 | 40.0 |" in text and "| verify | eager | 1 | 4.0 |" in text
    assert text.count("`") == 4  # two kernels listed
    assert trace_kernels.summary_line(path) == (
        "GPU per step over 2 steps: draft graph 40 us (2 kernels), gap eager 3 us (0.5 kernels), "
        "verify eager 4 us (1 kernels)")

"""GPU time per phase and per kernel in a JETSPEC step trace (``JETSPEC_TRACE_STEPS``).

The step tracer's log line counts host work; this reads its Chrome trace and says where the GPU
time goes. Each kernel (or memcpy/memset) is attributed, through its launch's correlation id, to
the ``jetspec.<phase>`` range the launch was issued in and to how it was launched: eagerly, or
inside a CUDA graph (``cudaGraphLaunch``: SGLang's target verify or the head's block forward).

    python benchmark/trace_kernels.py TRACE.json [--top 12]

Durations come from the profiler (CUPTI), which also slows the host: use the phase split and the
per-kernel ranking, not the absolute host timing, of a traced run.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
PHASE_PREFIX = "jetspec."


@dataclass(frozen=True)
class KernelTime:
    """GPU microseconds per traced step of one kernel name, in one phase, by one launch kind."""

    phase: str
    launch: str  # "graph" or "eager"
    kernel: str
    calls_per_step: float
    us_per_step: float


def load_events(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def kernel_times(events: list[dict]) -> tuple[list[KernelTime], int]:
    """Per (phase, launch kind, kernel): calls and GPU us per step, largest first; and the step count."""
    ranges = sorted((e["ts"], e["ts"] + e["dur"], e["name"][len(PHASE_PREFIX):]) for e in events
                    if e.get("cat") == "user_annotation" and e.get("name", "").startswith(PHASE_PREFIX))  # fmt: skip
    starts = [r[0] for r in ranges]
    steps = max(1, sum(1 for r in ranges if r[2] == "draft"))

    def phase_at(ts: float) -> str:
        i = bisect.bisect_right(starts, ts) - 1
        return ranges[i][2] if i >= 0 and ts <= ranges[i][1] else "gap"

    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in LAUNCH_CATEGORIES and "correlation" in e.get("args", {})}  # fmt: skip
    totals: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for e in events:
        if e.get("cat") not in GPU_CATEGORIES:
            continue
        launch = launches.get(e.get("args", {}).get("correlation"))
        if launch is None:
            continue
        kind = "graph" if launch["name"] == "cudaGraphLaunch" else "eager"
        total = totals[(phase_at(launch["ts"]), kind, e["name"])]
        total[0] += 1
        total[1] += e["dur"]
    rows = [KernelTime(p, k, n, c / steps, us / steps) for (p, k, n), (c, us) in totals.items()]
    return sorted(rows, key=lambda r: -r.us_per_step), steps


def phase_totals(rows: list[KernelTime]) -> dict[tuple[str, str], tuple[float, float]]:
    """``(phase, launch kind) -> (kernels per step, GPU us per step)``, sorted by phase."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        totals[(r.phase, r.launch)][0] += r.calls_per_step
        totals[(r.phase, r.launch)][1] += r.us_per_step
    return {key: (calls, us) for key, (calls, us) in sorted(totals.items())}


def summary_line(path: Path) -> str:
    """One line of ``phase_totals`` for the trace at ``path`` (``step_breakdown.py --trace`` prints it)."""
    rows, steps = kernel_times(load_events(path))
    totals = phase_totals(rows).items()
    parts = [f"{phase} {launch} {us:.0f} us ({calls:.3g} kernels)" for (phase, launch), (calls, us) in totals]
    return f"GPU per step over {steps} steps: " + ", ".join(parts)


def report(rows: list[KernelTime], steps: int, top: int) -> str:
    """A markdown summary: GPU us per step by phase and launch kind, then the ``top`` kernels."""
    lines = [f"GPU time per step over {steps} traced steps", "",
             "| phase | launched | kernels / step | GPU us / step |", "| --- | --- | --- | --- |"]
    lines += [f"| {p} | {k} | {c:.0f} | {us:.1f} |" for (p, k), (c, us) in phase_totals(rows).items()]
    lines += ["", "| phase | launched | kernel | calls / step | GPU us / step |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.phase} | {r.launch} | `{r.kernel[:80]}` | {r.calls_per_step:.1f} | {r.us_per_step:.1f} |"
              for r in rows[:top]]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path, help="a Chrome trace written by JETSPEC_TRACE_STEPS (.json or .json.gz)")
    parser.add_argument("--top", type=int, default=12, help="how many kernels to list")
    args = parser.parse_args()
    rows, steps = kernel_times(load_events(args.trace))
    print(report(rows, steps, args.top))


if __name__ == "__main__":
    main()

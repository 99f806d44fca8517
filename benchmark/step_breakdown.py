"""What one JETSPEC decode step costs, phase by phase, against a plain decode step, in one run.

For each configuration (``plain``, ``jetspec:BUDGET``, also ``ngram``/``dflash``) one SGLang
server is started; for each batch size ``bs`` it decodes ``bs`` concurrent requests of random
prompts (``--new-tokens`` each, ``ignore_eos``, greedy). Reported per (configuration, bs):

- step ms: wall time over decode steps (verify steps for speculative configurations), one short
  prefill per request included for every configuration alike;
- step / plain: that over plain SGLang's step at the same bs;
- log step ms: the steady-state step from SGLang's own ``Decode batch`` log lines (every 40 decode steps:
  ``1000 * bs * accept len / gen throughput``), the median over the intervals run entirely at that bs, the first
  one left out (it spans the batch's start): no prefill, no request start-up, the same measure for plain and
  speculative configurations. With few tokens per request the wall-clock step above moves more between runs
  than this one; log step / plain is the issue-5 metric;
- tau: tokens per step;
- the tree budget the server verified that batch size with (budget by batch size, ``sglang/budget_plan.py``);
- for JETSPEC, the GPU-timeline time of each phase (draft, tree, verify, commit) and the gap
  between steps (host work the GPU waited for), from the worker's opt-in CUDA-event profiler
  (``JETSPEC_PROFILE_STEPS``, see ``jetspec_sglang/sglang/step_profiler.py``): the median over
  the profiler's steady-state windows at that bs;
- for JETSPEC, each phase and named lap (e.g. ``target_forward`` and ``accept`` inside verify) in plain steps,
  and the largest phase, in a second table: where a goal of G plain steps is missed, the phases near or above
  their share of G are what holds it back;
- for JETSPEC, the host time of the same phases and of the worker's named laps inside them (from the
  same profiler's host clock), in a third table: a phase whose host time is about its GPU-timeline
  time is host bound.

``--trace W:K`` also traces ``K`` JETSPEC decode steps on the host after ``W``
(``jetspec_sglang/sglang/step_tracer.py``): per phase, host time and kernel launches, copies
and syncs per step, and a Chrome trace next to the server log, whose GPU time per phase
(``trace_kernels.py``) goes in the table too.

``--reparse OUT`` rebuilds the tables of an earlier run from its JSON and server logs (for
instance after a change to how the logs are read) without starting a server.

Works on real weights or on ``--load-format dummy`` (a config-only model folder, e.g. a
Qwen3-8B-shaped one). Example:

    python benchmark/step_breakdown.py --model /tmp/models/smollm2-135m-instruct --head HEAD \\
        --configs plain jetspec:16 jetspec:32 jetspec:64 jetspec:128 --batch-sizes 1 4 16 32 \\
        --out benchmark/results/step_breakdown_h200/smollm2
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import threading
import time
from pathlib import Path

from jetspec_sglang.run_meta import run_metadata
from jetspec_sglang.server_process import (
    SGLangServer,
    algorithm_args,
    algorithm_env,
    close_servers_on_sigterm,
    log_name,
    run_labels,
)
from jetspec_sglang.sglang.budget_plan import budget_in_log
from jetspec_sglang.sglang.step_profiler import HOST_LOG_PREFIX, LOG_PREFIX, PHASES
from jetspec_sglang.sglang.step_tracer import LOG_PREFIX as TRACE_PREFIX

PROFILE_EVERY = 16
_PHASE_RE = re.compile(r"(\w+) ([0-9.]+) ms")
_DECODE_LOG_RE = re.compile(r"Decode batch, #running-req: (\d+),.*?(?:accept len: ([0-9.]+),.*?)?"
                            r"gen throughput \(token/s\): ([0-9.]+)")
_SIZES_RE = re.compile(r"\(bs \[([0-9, ]+)\]\)")


def phase_medians(log_text: str, batch_size: int, prefix: str = LOG_PREFIX) -> dict[str, float]:
    """Median of each ``name X ms`` field over the profiler windows of ``log_text`` (its lines with
    ``prefix``: GPU-timeline ones by default, ``HOST_LOG_PREFIX`` for host time) that ran at
    ``batch_size`` only (empty if none).

    Steady state only: a window in which the batch grew or shrank, or that spans the idle time
    before a run (its first gap), is an outlier; the median ignores the latter and the batch-size
    filter the former.
    """
    rows = []
    for line in log_text.splitlines():
        if prefix not in line:
            continue
        fields = line.split(prefix, 1)[1]
        sizes = _SIZES_RE.search(fields)
        if sizes and [int(b) for b in sizes.group(1).split(",")] == [batch_size]:
            rows.append({k: float(v) for k, v in _PHASE_RE.findall(fields)})
    names = dict.fromkeys(k for r in rows for k in r)  # a lap may be missing from a window (another path ran)
    return {k: round(statistics.median(r[k] for r in rows if k in r), 3) for k in names}


def decode_log_step_ms(log_text: str, batch_size: int) -> float | None:
    """Steady-state step ms at ``batch_size`` from SGLang's ``Decode batch`` lines in ``log_text`` (see the module
    docstring); None when fewer than two intervals ran at that size."""
    steps = [1000.0 * batch_size * float(accept or 1.0) / float(throughput)
             for running, accept, throughput in _DECODE_LOG_RE.findall(log_text)
             if int(running) == batch_size and float(throughput) > 0]  # fmt: skip
    return round(statistics.median(steps[1:]), 3) if len(steps) > 1 else None


def decode_batch(server: SGLangServer, prompts: list[list[int]], new_tokens: int) -> tuple[float, int, int]:
    """Decode all prompts at once; returns (seconds, tokens, steps of the longest request)."""
    sampling = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}
    outs: list[dict] = [{}] * len(prompts)

    def one(i: int) -> None:
        outs[i] = server.post("/generate", {"input_ids": prompts[i], "sampling_params": sampling})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    tokens = sum(len(o["output_ids"]) for o in outs)
    steps = max(o["meta_info"].get("spec_verify_ct") or len(o["output_ids"]) for o in outs)
    return seconds, tokens, steps


def run_config(name: str, args: argparse.Namespace, port: int) -> list[dict]:
    import random

    rng = random.Random(0)
    max_bs = max(args.batch_sizes)
    flags = ["--attention-backend", args.attention_backend, "--sampling-backend", "pytorch", "--random-seed", "0",
             "--mem-fraction-static", str(args.mem_fraction), "--max-running-requests", str(max_bs),
             "--cuda-graph-max-bs-decode", str(max_bs), "--skip-tokenizer-init", "--disable-radix-cache",
             "--disable-prefill-cuda-graph"]  # only decode steps are timed; saves 12-40 s of capture per server
    if args.load_format:
        flags += ["--load-format", args.load_format]
    log = Path(args.out).with_name(f"{Path(args.out).name}-{log_name(name)}.log")
    env = {"JETSPEC_PROFILE_STEPS": str(PROFILE_EVERY), **algorithm_env(name)}
    if args.trace:
        env.update(JETSPEC_TRACE_STEPS=args.trace, JETSPEC_TRACE_DIR=str(log.with_suffix(".traces")))
    rows = []
    with SGLangServer(args.model, port, flags + algorithm_args(name, args.head), log_path=str(log), env=env) as server:
        decode_batch(server, [[rng.randrange(args.vocab) for _ in range(args.prompt_len)]], 32)  # warm-up
        startup_log = log.read_text(encoding="utf-8", errors="replace")  # names the budget per batch size
        for bs in args.batch_sizes:
            prompts = [[rng.randrange(args.vocab) for _ in range(args.prompt_len)] for _ in range(bs)]
            offset = log.stat().st_size
            seconds, tokens, steps = decode_batch(server, prompts, args.new_tokens)
            time.sleep(0.5)  # let the server flush its log
            with open(log, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                text = f.read()
            rows.append({"config": name, "bs": bs, "seconds": round(seconds, 3), "tokens": tokens, "steps": steps,
                         "step_ms": round(1000 * seconds / steps, 3), "tau": round(tokens / bs / steps, 3),
                         "log_step_ms": decode_log_step_ms(text, bs),
                         "phases_ms": phase_medians(text, bs), "host_ms": phase_medians(text, bs, HOST_LOG_PREFIX),
                         "budget": budget_in_log(startup_log, bs)})
            traces = [line.split(TRACE_PREFIX, 1)[1] for line in text.splitlines() if f"{TRACE_PREFIX} per step" in line]
            if traces:
                rows[-1]["host_trace"] = traces[-1].strip()
            print(json.dumps(rows[-1]), flush=True)
    traced = [r for r in rows if r.get("host_trace")]
    chrome_traces = sorted(log.with_suffix(".traces").glob("*.json*"), key=lambda p: p.stat().st_mtime)
    if traced and chrome_traces:  # written when the traced steps end
        from trace_kernels import summary_line  # benchmark/, beside this script

        traced[-1]["gpu_trace"] = summary_line(chrome_traces[-1])
    return rows


def laps_cell(times: dict[str, float]) -> str:
    """The named laps inside phases (``StepProfiler.split``) of one row's times, e.g. ``target_forward 1.2``."""
    return ", ".join(f"{k} {v}" for k, v in times.items() if k not in (*PHASES, "gap", "step")) or "-"


def phase_share_table(rows: list[dict], plain: dict[int, dict]) -> list[str]:
    """Markdown lines: each phase and GPU lap of each JETSPEC row in plain steps (plain's log step at that bs), and
    the largest phase: against a goal of G plain steps for the whole step, a phase near G holds it back alone."""
    shares = []
    for r in rows:
        base = plain.get(r["bs"], {}).get("log_step_ms")
        times = {k: v for k, v in r["phases_ms"].items() if k != "step"}
        if r["config"] != "plain" and base and times:
            shares.append((r, {k: v / base for k, v in times.items()}))
    if not shares:
        return []
    names = list(dict.fromkeys(k for _, share in shares for k in share))
    lines = ["", "Each phase and lap in plain steps (its GPU time over plain's log step at the same bs):", "",
             "| config | bs | " + " | ".join(names) + " | largest phase |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for r, share in shares:
        phases = {k: v for k, v in share.items() if k in (*PHASES, "gap")}
        largest = max(phases, key=phases.get) if phases else "-"
        cells = [f"{share[k]:.2f}" if k in share else "-" for k in names]
        lines.append(f"| {r['config']} | {r['bs']} | " + " | ".join(cells) + f" | {largest} |")
    return lines


def markdown(meta: dict, rows: list[dict]) -> str:
    plain = {r["bs"]: r for r in rows if r["config"] == "plain"}
    cols = [*PHASES, "gap"]
    lines = [f"# Step breakdown, {meta['model']}", "", *(f"- {k}: {v}" for k, v in meta.items()), "",
             "| config | bs | step ms | step / plain | log step ms | log step / plain | tau | "
             + " | ".join(f"{c} ms" for c in cols) + " | budget | laps |",
             "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in cols) + " | --- | --- |"]
    for r in rows:
        base = plain.get(r["bs"], {})
        ratio = f"{r['step_ms'] / base['step_ms']:.2f}" if base else "-"
        log_step, log_base = r.get("log_step_ms"), base.get("log_step_ms")
        log_ratio = f"{log_step / log_base:.2f}" if log_step and log_base else "-"
        cells = [str(r["phases_ms"].get(c, "-")) for c in cols] + [str(r.get("budget") or "-"), laps_cell(r["phases_ms"])]
        lines.append(f"| {r['config']} | {r['bs']} | {r['step_ms']} | {ratio} | {log_step or '-'} | {log_ratio} | "
                     f"{r['tau']} | " + " | ".join(cells) + " |")
    lines += phase_share_table(rows, plain)
    hosted = [r for r in rows if r.get("host_ms")]
    if hosted:
        lines += ["", "Host time per step (ms; the worker's Python issuing each phase, and its named laps):", "",
                  "| config | bs | " + " | ".join(cols) + " | laps |", "| --- | --- | " + " | ".join("---" for _ in cols) + " | --- |"]
        for r in hosted:
            cells = [str(r["host_ms"].get(c, "-")) for c in cols]
            lines.append(f"| {r['config']} | {r['bs']} | " + " | ".join(cells) + f" | {laps_cell(r['host_ms'])} |")
    traced = [r for r in rows if r.get("host_trace")]
    if traced:
        lines += ["", "Host trace (`JETSPEC_TRACE_STEPS`; host time and CUDA calls per step, per phase):", ""]
        for r in traced:
            lines.append(f"- {r['config']}, bs {r['bs']}: {r['host_trace']}")
            if r.get("gpu_trace"):
                lines.append(f"  - {r['gpu_trace']} (`trace_kernels.py` lists the kernels)")
    return "\n".join(lines) + "\n"


def write_tables(out: Path, meta: dict, rows: list[dict]) -> None:
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(meta, [r for r in rows if "error" not in r]))


def reparse(out: Path) -> None:
    """Recompute the phase columns of a finished run from each configuration's whole server log."""
    run = json.loads(out.with_suffix(".json").read_text())
    for row in run["rows"]:
        if "error" not in row:
            log = out.with_name(f"{out.name}-{log_name(row['config'])}.log")
            text = log.read_text(encoding="utf-8", errors="replace")
            row["phases_ms"] = phase_medians(text, row["bs"])
            row["host_ms"] = phase_medians(text, row["bs"], HOST_LOG_PREFIX)
            row["log_step_ms"] = decode_log_step_ms(text, row["bs"])
            row["budget"] = budget_in_log(text, row["bs"])
    run["meta"]["reparsed"] = ("phase, host-time and log-step columns recomputed from each configuration's whole server log "
                              "by step_breakdown.py --reparse")
    write_tables(out, run["meta"], run["rows"])
    print(markdown(run["meta"], [r for r in run["rows"] if "error" not in r]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="target model folder (required unless --reparse)")
    parser.add_argument("--head", default="", help="draft head (needed by dflash and jetspec configurations)")
    parser.add_argument("--load-format", default=None, help="e.g. dummy, for a config-only model folder")
    parser.add_argument("--configs", nargs="+", default=["plain", "jetspec:16", "jetspec:32", "jetspec:64",
                                                         "jetspec:128"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=32000, help="random prompt ids are drawn below this")
    parser.add_argument("--attention-backend", default="triton")
    parser.add_argument("--mem-fraction", type=float, default=0.5)
    parser.add_argument("--port", type=int, default=30300, help="first server port (one per configuration)")
    parser.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    parser.add_argument("--reparse", action="store_true", help="rebuild OUT's tables from its JSON and server logs")
    parser.add_argument("--trace", default="", metavar="W:K",
                        help="also trace K decode steps on the host after W (JETSPEC_TRACE_STEPS), e.g. 40:16")
    args = parser.parse_args()
    close_servers_on_sigterm()

    out = Path(args.out)
    if args.reparse:
        return reparse(out)
    if not args.model:
        parser.error("--model is required")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        **run_metadata(),
        "model": args.model, "head": args.head, "load_format": args.load_format,
        "new_tokens": args.new_tokens, "prompt_len": args.prompt_len,
        "profiler": f"JETSPEC_PROFILE_STEPS={PROFILE_EVERY} (CUDA events; one host sync per {PROFILE_EVERY} steps)",
    }
    rows: list[dict] = []
    for i, name in enumerate(run_labels(args.configs)):
        try:
            rows += run_config(name, args, args.port + i)
        except (RuntimeError, TimeoutError) as err:
            rows.append({"config": name, "bs": 0, "error": str(err), "step_ms": 0, "tau": 0, "phases_ms": {}})
        write_tables(out, meta, rows)
    print(markdown(meta, [r for r in rows if "error" not in r]))


if __name__ == "__main__":
    main()

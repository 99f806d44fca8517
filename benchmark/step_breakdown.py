"""What one JETSPEC decode step costs, phase by phase, against a plain decode step, in one run.

For each configuration (``plain``, ``jetspec:BUDGET``, also ``ngram``/``dflash``) one SGLang
server is started; for each batch size ``bs`` it decodes ``bs`` concurrent requests of random
prompts (``--new-tokens`` each, ``ignore_eos``, greedy). Reported per (configuration, bs):

- step ms: wall time over decode steps (verify steps for speculative configurations), one short
  prefill per request included for every configuration alike;
- step / plain: that over plain SGLang's step at the same bs (the issue-5 metric);
- tau: tokens per step;
- for JETSPEC, the GPU-timeline mean of each phase (draft, tree, verify, commit) and the gap
  between steps (host work the GPU waited for), from the worker's opt-in CUDA-event profiler
  (``JETSPEC_PROFILE_STEPS``, see ``jetspec_sglang/sglang/step_profiler.py``).

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
import threading
import time
from pathlib import Path

from jetspec_sglang.run_meta import run_metadata
from jetspec_sglang.server_process import SGLangServer, algorithm_args, algorithm_env
from jetspec_sglang.sglang.step_profiler import LOG_PREFIX, PHASES

PROFILE_EVERY = 16
_PHASE_RE = re.compile(r"(\w+) ([0-9.]+) ms")


def phase_means(log_text: str) -> dict[str, float]:
    """Mean of each ``name X ms`` field over the profiler lines of ``log_text`` (empty if none)."""
    rows = [{k: float(v) for k, v in _PHASE_RE.findall(line.split(LOG_PREFIX, 1)[1])}
            for line in log_text.splitlines() if LOG_PREFIX in line]
    return {k: round(sum(r[k] for r in rows) / len(rows), 3) for k in rows[0]} if rows else {}


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
             "--cuda-graph-max-bs-decode", str(max_bs), "--skip-tokenizer-init", "--disable-radix-cache"]
    if args.load_format:
        flags += ["--load-format", args.load_format]
    log = Path(args.out).with_name(f"{Path(args.out).name}-{name.replace(':', '-')}.log")
    rows = []
    with SGLangServer(args.model, port, flags + algorithm_args(name, args.head), log_path=str(log),
                      env={"JETSPEC_PROFILE_STEPS": str(PROFILE_EVERY), **algorithm_env(name)}) as server:
        decode_batch(server, [[rng.randrange(args.vocab) for _ in range(args.prompt_len)]], 32)  # warm-up
        for bs in args.batch_sizes:
            prompts = [[rng.randrange(args.vocab) for _ in range(args.prompt_len)] for _ in range(bs)]
            offset = log.stat().st_size
            seconds, tokens, steps = decode_batch(server, prompts, args.new_tokens)
            time.sleep(0.5)  # let the server flush its log
            with open(log, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                phases = phase_means(f.read())
            rows.append({"config": name, "bs": bs, "seconds": round(seconds, 3), "tokens": tokens, "steps": steps,
                         "step_ms": round(1000 * seconds / steps, 3), "tau": round(tokens / bs / steps, 3),
                         "phases_ms": phases})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(meta: dict, rows: list[dict]) -> str:
    plain = {r["bs"]: r["step_ms"] for r in rows if r["config"] == "plain"}
    cols = [*PHASES, "gap"]
    lines = [f"# Step breakdown, {meta['model']}", "", *(f"- {k}: {v}" for k, v in meta.items()), "",
             "| config | bs | step ms | step / plain | tau | " + " | ".join(f"{c} ms" for c in cols) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for r in rows:
        ratio = f"{r['step_ms'] / plain[r['bs']]:.2f}" if r["bs"] in plain else "-"
        cells = [str(r["phases_ms"].get(c, "-")) for c in cols]
        lines.append(f"| {r['config']} | {r['bs']} | {r['step_ms']} | {ratio} | {r['tau']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
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
    args = parser.parse_args()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        **run_metadata(),
        "model": args.model, "head": args.head, "load_format": args.load_format,
        "new_tokens": args.new_tokens, "prompt_len": args.prompt_len,
        "profiler": f"JETSPEC_PROFILE_STEPS={PROFILE_EVERY} (CUDA events; one host sync per {PROFILE_EVERY} steps)",
    }
    rows: list[dict] = []
    for i, name in enumerate(args.configs):
        try:
            rows += run_config(name, args, args.port + i)
        except (RuntimeError, TimeoutError) as err:
            rows.append({"config": name, "bs": 0, "error": str(err), "step_ms": 0, "tau": 0, "phases_ms": {}})
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        out.with_suffix(".md").write_text(markdown(meta, [r for r in rows if "error" not in r]))
    print(markdown(meta, [r for r in rows if "error" not in r]))


if __name__ == "__main__":
    main()

"""Plain SGLang against speculative algorithms, side by side in one run.

Each configuration gets its own server (SGLang's launcher), one warm-up request,
then the same chat prompts, greedy: one at a time by default, or ``--concurrency C``
at once (C clients, each sending its next prompt as soon as its last one returns).
Reported per configuration: output tokens per second (wall clock, prefill included
for every method alike), accepted length tau (SGLang's ``spec_accept_length``:
tokens per verify step), and at concurrency 1 the time of one decode step (wall
time over verify steps; over tokens for plain).

    python benchmark/side_by_side.py --model M --head H --dataset gsm8k --num-prompts 16 \\
        --configs plain ngram dflash jetspec:16 jetspec:64 jetspec:128 --out benchmark/results/NAME
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE_ARGS = ["--attention-backend", "triton", "--sampling-backend", "pytorch", "--random-seed", "0",
             "--mem-fraction-static", "0.3"]


def server_args(concurrency: int) -> list[str]:
    """The flags every configuration shares; batches of up to ``concurrency`` (at least 4) requests."""
    max_bs = str(max(4, concurrency))
    return [*BASE_ARGS, "--max-running-requests", max_bs, "--cuda-graph-max-bs-decode", max_bs]


def run_config(name: str, args: argparse.Namespace, prompts: list[list[int]], port: int) -> dict:
    from jetspec_sglang.server_process import SGLangServer, algorithm_args, algorithm_env, log_name

    sampling = {"temperature": 0, "max_new_tokens": args.max_new_tokens}
    log = str(Path(args.out).with_name(f"{Path(args.out).name}-{log_name(name)}.log"))
    with SGLangServer(args.model, port, server_args(args.concurrency) + algorithm_args(name, args.head), log_path=log,
                      env=algorithm_env(name)) as server:
        server.post("/generate", {"input_ids": prompts[0], "sampling_params": sampling})  # warm-up

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda ids: _timed(server, ids, sampling), prompts))
        wall = time.perf_counter() - t0
    # One at a time, the sum of request times (no client gaps); at once, the wall time of the whole set.
    seconds = sum(t for t, _ in results) if args.concurrency == 1 else wall
    outputs = [out["output_ids"] for _, out in results]
    tokens = sum(len(o) for o in outputs)
    steps = sum(out["meta_info"].get("spec_verify_ct") or len(out["output_ids"]) for _, out in results)
    return {
        "config": name, "startup_s": round(server.startup_seconds, 1), "tokens": tokens, "seconds": round(seconds, 3),
        "tok_per_s": round(tokens / seconds, 1), "tau": round(tokens / steps, 3),
        "step_ms": round(1000 * seconds / steps, 3) if args.concurrency == 1 else None, "outputs": outputs,
    }


def _timed(server, ids: list[int], sampling: dict) -> tuple[float, dict]:
    """Seconds one ``/generate`` request took, and its response."""
    t0 = time.perf_counter()
    out = server.post("/generate", {"input_ids": ids, "sampling_params": sampling})
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--head", required=True)
    parser.add_argument("--dataset", default="gsm8k")
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (1: one at a time)")
    parser.add_argument("--configs", nargs="+", default=["plain", "ngram", "dflash", "jetspec:16", "jetspec:64",
                                                         "jetspec:128"])
    parser.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = parser.parse_args()
    from jetspec_sglang.datasets import load_eval_prompts, render_prompt
    from jetspec_sglang.run_meta import run_metadata
    from jetspec_sglang.server_process import close_servers_on_sigterm, run_labels
    from transformers import AutoTokenizer

    close_servers_on_sigterm()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = [render_prompt(tokenizer, p.messages) for p in load_eval_prompts(args.dataset, limit=args.num_prompts)]
    meta = {
        **run_metadata(),
        "model": args.model, "head": args.head, "dataset": args.dataset, "num_prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens, "concurrency": args.concurrency,
        "server_args": server_args(args.concurrency),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    for i, name in enumerate(run_labels(args.configs)):
        try:
            rows.append(run_config(name, args, prompts, 30200 + i))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "outputs"}), flush=True)
        except (RuntimeError, TimeoutError) as err:  # one configuration failing to start must not lose the rest
            failed.append({"config": name, "error": str(err)})
            print(json.dumps(failed[-1]), flush=True)
        table = write_results(out, meta, rows, failed, args.dataset, len(prompts))  # after each: a timeout keeps the rest
    print(table)


def write_results(out: Path, meta: dict, rows: list[dict], failed: list[dict], dataset: str, num_prompts: int) -> str:
    """Write ``out``.json and .md (speed-up and equality against plain, where plain ran); return the table."""
    plain = next((r for r in rows if r["config"] == "plain"), None)
    for r in rows:
        r["speedup"] = round(r["tok_per_s"] / plain["tok_per_s"], 3) if plain else None
        r["identical_to_plain"] = sum(a == b for a, b in zip(r["outputs"], plain["outputs"])) if plain else None
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "failed": failed}, indent=1))
    header = ["| config | tok/s | speedup | tau | step ms | identical to plain | startup s |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    table = header + [f"| {r['config']} | {r['tok_per_s']} | {r['speedup']} | {r['tau']} | {r['step_ms'] or '-'} | "
                      f"{r['identical_to_plain']}/{num_prompts} | {r['startup_s']} |" for r in rows]
    table += [f"| {f['config']} | failed to start: see its log |" for f in failed]
    lines = [f"# Side by side, concurrency {meta.get('concurrency', 1)}, {dataset} x {num_prompts}, "
             f"{meta['max_new_tokens']} new tokens", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "", *table]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return "\n".join(table)


if __name__ == "__main__":
    main()

"""The head's per-position vocabulary top-K on one GPU: ``kernels.vocab_topk`` against PyTorch's ops.

Both take the head's bfloat16 logits ``[T, V]`` (``T = bs * depth`` positions) to top-K log-probs and
ids, as ``sglang/vocab_topk.py`` does inside the head's CUDA graph:

- ``torch``: ``logits.float()``, ``logsumexp``, ``topk``, then values minus log-sum-exp;
- ``fused``: ``vocab_topk`` (two Triton launches), then the same subtraction.

The LM-head matmul before them is the same for both and not timed. Outputs are compared first (the
values must be equal, the log-sum-exps within 1e-5). Times are per call from 20 calls replayed back to
back in a CUDA graph (``gpu_timing.graph_time_us``), median of ``--iters`` replays: the cost inside the
head's graph, launch gaps between the graph's kernels included.

    python benchmark/kernels/vocab_topk_bench.py --out benchmark/results/vocab_topk_h100/vocab_topk
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bench_io import save_rows  # benchmark/kernels/, beside this script
from gpu_timing import graph_time_us
from jetspec_sglang.kernels import vocab_topk, vocab_topk_reference
from jetspec_sglang.run_meta import run_metadata


def torch_path(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, ids, lse = vocab_topk_reference(logits, k)
    return ids, values - lse[:, None]


def fused_path(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, ids, lse = vocab_topk(logits, k)
    return ids, values - lse[:, None]


def run_config(rows: int, vocab: int, k: int, args: argparse.Namespace) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(rows * vocab + k)
    logits = (4 * torch.randn(rows, vocab, generator=gen, device="cuda")).to(torch.bfloat16)
    row = {"rows": rows, "vocab": vocab, "k": k}
    want_ids, want = torch_path(logits, k)
    got_ids, got = fused_path(logits, k)
    row["max_logprob_diff"] = (got - want).abs().max().item()
    picked = logits.float().gather(1, got_ids)
    row["ids_point_at_values"] = bool(torch.equal(picked, logits.float().gather(1, want_ids)))
    if row["max_logprob_diff"] > 1e-5 or not row["ids_point_at_values"]:
        row["error"] = "fused output differs from PyTorch's; not timed"
        return row
    for name, path in (("torch", torch_path), ("fused", fused_path)):
        row[f"{name}_us"] = round(graph_time_us(lambda: path(logits, k), args.iters, args.warmup), 2)
    row["speedup"] = round(row["torch_us"] / row["fused_us"], 2)
    return row


COLUMNS = (("T", "rows"), ("V", "vocab"), ("K", "k"), ("torch us", "torch_us"), ("fused us", "fused_us"),
           ("torch / fused", "speedup"), ("max log-prob diff", "max_logprob_diff"))  # fmt: skip


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Vocabulary top-K: kernels.vocab_topk vs PyTorch ({meta['gpu']}, {meta['date']})", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    lines += ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(key, "-")) for _, key in COLUMNS) + " |" for r in rows]
    errors = [f"- T={r['rows']} V={r['vocab']} K={r['k']}: {r['error']}" for r in rows if "error" in r]
    return "\n".join(lines + (["", "Errors:", *errors] if errors else [])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[15, 60, 240, 480],
                        help="positions T = bs * depth (depth 15: bs 1, 4, 16, 32)")
    parser.add_argument("--vocabs", type=int, nargs="+", default=[49152, 151936], help="SmolLM2's and Qwen3's")
    parser.add_argument("--k", type=int, nargs="+", default=[8])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = parser.parse_args()

    meta = {**run_metadata(("triton",)),
            "timing": f"CUDA graph of 20 back-to-back calls, median replay of {args.iters} / 20",
            "logits": "bfloat16 4 * randn, on the GPU"}  # fmt: skip
    rows = []
    for vocab in args.vocabs:
        for k in args.k:
            for n in args.rows:
                rows.append(run_config(n, vocab, k, args))
                save_rows(Path(args.out), meta, rows, markdown)
    print(markdown(meta, rows))


if __name__ == "__main__":
    main()

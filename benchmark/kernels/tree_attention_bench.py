"""Target-verify tree attention on one GPU: our Triton kernel against FlashInfer's custom-mask prefill.

- ``ours``: ``jetspec_sglang.kernels.tree_attention``: ``N`` tree nodes per request attend to the
  request's prefix (unmasked) and their ancestors (``[bs, N, ceil(N/32)]`` bitmask).
- ``fused``: the same with ``merge_counters`` (``JETSPEC_SPLIT_MERGE=fused``): the last prefix split merges the
  others in the same launch instead of a second kernel.
- ``flashinfer``: what SGLang 0.5.17 runs for EAGLE target verify with the FlashInfer backend
  (``layers/attention/flashinfer_backend.py``, ``speculative/eagle_info.py::generate_attn_arg_prefill``):
  ``BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend="fa2")`` with a 512 MiB workspace
  (SGLang's size for Qwen3), page_size 1, ``qo_indptr`` of step ``N``, kv = each request's prefix +
  tree slots, and the flat bool FULL_MASK over ``prefix + N`` columns as ``custom_mask`` (packed
  inside ``plan``). ``plan`` runs once per batch in SGLang; its wall time is reported on its own.

Every request has the full context as prefix; KV slots are a random permutation of the pool (one
token's heads stay together, as in SGLang's pool). Trees come from ``tree.build_tree`` on random
draft proposals. Both outputs are checked against ``tree_attention_reference`` (float64) before
anything is timed, to at most twice the error of the same computation in bfloat16 by PyTorch.

Times are GPU time per call from CUDA events around each call, median of ``--iters`` calls after
``--warmup``, with L2 flushed (a 512 MiB write) before each call so the KV comes from HBM; ``--hot``
skips the flush, as inside a verify step on a small target, whose prefix sits in L2. A kernel of a few
microseconds is then shorter than its launch, so events around one call time the host: ``--graph``
replays 20 calls captured back to back in a CUDA graph, as a verify graph runs them, and divides.

Serving passes the server's context length as ``max_prefix_len`` (it sizes the split grid of the captured
graphs); ``--grid-context`` does the same here (default: each case's own context). ``--min-split-keys``
sweeps the kernel's ``min_split_keys``, and ``--tiles`` its launch configuration (``BLOCK_MxBLOCK_NxWARPSxSTAGES``,
``default`` for the one it picks by size): one row per combination, FlashInfer timed in the first only.
For SmolLM2's shape at short contexts, for example:

    python benchmark/kernels/tree_attention_bench.py --q-heads 9 --kv-heads 3 --head-dim 64 --bs 1 4 \
        --budgets 64 128 --contexts 128 512 --grid-context 8192 --min-split-keys 512 128 64 --graph --out OUT
    python benchmark/kernels/tree_attention_bench.py --q-heads 9 --kv-heads 3 --head-dim 64 --bs 1 4 \
        --budgets 64 --contexts 128 512 --grid-context 8192 --tiles default 64x64x4x3 64x128x4x2 32x64x4x3 --graph \
        --out OUT

Bytes are KV read (prefix + tree, K and V) + Q read + O written; FlashInfer also reads its packed mask. The
HBM fraction is against a device-to-device copy measured here.

    python benchmark/kernels/tree_attention_bench.py --out benchmark/results/tree_attention_h200/tree_attention
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from bench_io import save_rows  # benchmark/kernels/, beside this script
from gpu_timing import event_time_us, graph_time_us
from jetspec_sglang.kernels import (
    tree_attention,
    tree_attention_reference,
    tree_mask_from_parents,
)
from jetspec_sglang.kernels.tree_attention import MIN_SPLIT_KEYS, Tile, merge_counter_slots
from jetspec_sglang.run_meta import run_metadata
from jetspec_sglang.tree import build_tree
from jetspec_sglang.tree_layout import ancestor_mask, verify_mask

FLUSH_BYTES = 512 << 20
WORKSPACE_BYTES = 512 << 20  # SGLANG_FLASHINFER_WORKSPACE_SIZE for Qwen2/Qwen3 targets


def hbm_gbps(nbytes: int = 4 << 30, iters: int = 20) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), median of ``iters`` copies."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    seconds = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1000.0)
    return nbytes / statistics.median(seconds) / 1e9


def make_case(bs: int, n: int, context: int, args: argparse.Namespace) -> dict:
    """Inputs for ``tree_attention`` (and FlashInfer) on the GPU: every request has ``context`` prefix tokens."""
    gen = torch.Generator(device="cuda").manual_seed(bs * 100_003 + n * 101 + context)
    width = context + n
    pool = bs * width
    shape = (pool, args.kv_heads, args.head_dim)
    k_buffer = torch.randn(shape, generator=gen, device="cuda", dtype=torch.bfloat16)
    v_buffer = torch.randn(shape, generator=gen, device="cuda", dtype=torch.bfloat16)
    req_to_token = torch.randperm(pool, generator=gen, device="cuda").to(torch.int32).view(bs, width)
    logits = torch.randn(bs, args.depth, args.vocab, generator=gen, device="cuda") * 3
    logprobs, ids = torch.log_softmax(logits, -1).topk(args.topk, -1)
    tree = build_tree(ids, logprobs, ids[:, 0, 0].contiguous(), n)
    q = torch.randn(bs * n, args.q_heads, args.head_dim, generator=gen, device="cuda", dtype=torch.bfloat16)
    return {
        "q": q, "k_buffer": k_buffer, "v_buffer": v_buffer, "req_to_token": req_to_token,
        "req_pool_indices": torch.arange(bs, device="cuda"),
        "prefix_lens": torch.full((bs,), context, dtype=torch.int32, device="cuda"),
        "tree_mask": tree_mask_from_parents(tree.parents, tree.max_depth),
        "anc": ancestor_mask(tree.parents, tree.max_depth),
    }  # fmt: skip


def flashinfer_verify(case: dict, sm_scale: float, workspace: torch.Tensor) -> tuple[Callable, Callable, torch.Tensor]:
    """``(plan, run, out)`` of FlashInfer's paged prefill driven as SGLang 0.5.17 drives it for verify."""
    import flashinfer

    q, k_buffer, req_to_token = case["q"], case["k_buffer"], case["req_to_token"]
    bs, n = case["anc"].shape[:2]
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend="fa2")
    qo_indptr = torch.arange(0, (bs + 1) * n, n, dtype=torch.int32, device="cuda")
    kv_indptr = torch.arange(0, (bs + 1) * req_to_token.shape[1], req_to_token.shape[1], dtype=torch.int32,
                             device="cuda")  # fmt: skip
    kv_indices = req_to_token.flatten()  # every row holds exactly prefix + N slots
    last_page_len = torch.ones(bs, dtype=torch.int32, device="cuda")
    custom_mask, _ = verify_mask(case["anc"], case["prefix_lens"])
    out = torch.empty_like(q)

    def plan() -> None:
        wrapper.plan(
            qo_indptr, kv_indptr, kv_indices, last_page_len, q.shape[1], k_buffer.shape[1], q.shape[2], 1,
            custom_mask=custom_mask, sm_scale=sm_scale, q_data_type=q.dtype, kv_data_type=k_buffer.dtype,
            non_blocking=True,
        )  # fmt: skip

    def run() -> None:
        wrapper.run(q, (k_buffer, case["v_buffer"]), out=out)

    return plan, run, out


def plan_us(plan: Callable[[], None], repeats: int = 5) -> float:
    """Median host wall time of ``plan`` (it copies indptrs to the host, so it ends synchronised)."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        plan()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def run_config(bs: int, n: int, context: int, args: argparse.Namespace, flush: torch.Tensor | None,
               workspace: torch.Tensor | None, hbm: float, min_split_keys: int, tile: Tile | None) -> dict:  # fmt: skip
    case = make_case(bs, n, context, args)
    inputs = [case[k] for k in ("q", "k_buffer", "v_buffer", "req_to_token", "req_pool_indices", "prefix_lens",
                                "tree_mask")]  # fmt: skip
    sm_scale = args.head_dim**-0.5
    kv_bytes = 2 * bs * (context + n) * args.kv_heads * args.head_dim * 2
    nbytes = kv_bytes + 2 * case["q"].numel() * 2
    row = {"bs": bs, "N": n, "context": context, "min_split_keys": min_split_keys,
           "tile": "default" if tile is None else "x".join(map(str, tile)), "bytes": nbytes,
           "flops": 4 * bs * n * (context + n) * args.q_heads * args.head_dim}  # fmt: skip

    want = tree_attention_reference(*inputs, sm_scale)
    baseline_err = (tree_attention_reference(*inputs, sm_scale, dtype=torch.bfloat16).double() - want).abs().max()
    row["bf16_torch_err"] = baseline_err.item()
    ours_out = torch.empty_like(case["q"])
    grid = args.grid_context or context
    fused_out = torch.empty_like(case["q"])
    counters = torch.zeros(merge_counter_slots(bs, n, args.q_heads, args.kv_heads, args.head_dim, tile=tile),
                           dtype=torch.int32, device=fused_out.device)  # fmt: skip
    paths = {"ours": (lambda: tree_attention(*inputs, sm_scale, grid, out=ours_out, min_split_keys=min_split_keys,
                                             tile=tile), ours_out),
             "fused": (lambda: tree_attention(*inputs, sm_scale, grid, out=fused_out, min_split_keys=min_split_keys,
                                              merge_counters=counters, tile=tile), fused_out)}  # fmt: skip
    if workspace is not None:
        try:  # any FlashInfer failure (JIT build, plan, run) is recorded; ours is still timed
            plan, run, fi_out = flashinfer_verify(case, sm_scale, workspace)
            row["flashinfer_plan_us"] = round(plan_us(plan), 1)
            run()
            paths["flashinfer"] = (run, fi_out)
        except Exception as err:
            row["flashinfer_error"] = f"{type(err).__name__}: {err}"
    for name, (fn, out) in paths.items():
        try:  # a tile of the sweep may not fit this shape (shared memory, registers): recorded, the rest go on
            fn()
        except Exception as err:
            row[f"{name}_error"] = f"not run: {type(err).__name__}: {str(err)[:200]}"
            continue
        err = (out.double() - want).abs().max().item()
        row[f"{name}_err"] = err
        if err > 2 * row["bf16_torch_err"] + 1e-6:
            row[f"{name}_error"] = "output differs from the reference beyond tolerance; not timed"
            continue
        try:  # FlashInfer's run may refuse graph capture outside its CUDA-graph wrapper
            us = (graph_time_us(fn, args.iters, args.warmup) if args.graph
                  else event_time_us(fn, args.iters, args.warmup, flush))
        except RuntimeError as err:
            row[f"{name}_error"] = f"not timed: {type(err).__name__}: {err}"
            continue
        row[f"{name}_us"] = round(us, 2)
        row[f"{name}_hbm_fraction"] = round(nbytes / us / 1e3 / hbm, 3)
        row[f"{name}_tflops"] = round(row["flops"] / us / 1e6, 1)
    if "flashinfer_us" in row and "ours_us" in row:
        row["flashinfer_over_ours"] = row["flashinfer_us"] / row["ours_us"]
    return row


# (header, row key, format): a missing key (a path not timed) prints "-"
COLUMNS = (
    ("bs", "bs", "{}"), ("N", "N", "{}"), ("context", "context", "{}"), ("split keys", "min_split_keys", "{}"),
    ("tile", "tile", "{}"),
    ("ours us", "ours_us", "{}"), ("fused-merge us", "fused_us", "{}"),
    ("FI us", "flashinfer_us", "{}"), ("FI plan us", "flashinfer_plan_us", "{}"),
    ("FI / ours", "flashinfer_over_ours", "{:.2f}x"), ("bytes moved", "bytes", "{:.3g}"),
    ("ours HBM frac", "ours_hbm_fraction", "{}"), ("FI HBM frac", "flashinfer_hbm_fraction", "{}"),
    ("ours TFLOP/s", "ours_tflops", "{}"), ("FI TFLOP/s", "flashinfer_tflops", "{}"),
    ("ours err", "ours_err", "{:.2g}"), ("fused-merge err", "fused_err", "{:.2g}"),
    ("FI err", "flashinfer_err", "{:.2g}"),
    ("bf16 torch err", "bf16_torch_err", "{:.2g}"),
)  # fmt: skip


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.format(r[key]) if key in r else "-" for _, key, fmt in COLUMNS) + " |")
    errors = [f"- bs={r['bs']} N={r['N']} context={r['context']}: {v}" for r in rows for k, v in r.items()
              if k.endswith("_error")]  # fmt: skip
    about = [f"- {k}: {v}" for k, v in meta.items()]
    title = f"# Tree attention for verify: ours vs FlashInfer ({meta['gpu']}, {meta['date']})"
    return "\n".join([title, "", *about, "", *lines, *(["", "Errors:", *errors] if errors else [])]) + "\n"


def flashinfer_status() -> str:
    try:
        import flashinfer  # noqa: F401
    except Exception as err:  # not installed, or built for another torch / CUDA
        return f"unavailable: {type(err).__name__}: {err}"
    return "timed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--budgets", type=int, nargs="+", default=[16, 64, 128, 256])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 4096, 32768])
    parser.add_argument("--q-heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=10, help="draft depth D of the random trees")
    parser.add_argument("--topk", type=int, default=8, help="draft top-K of the random trees")
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--hot", action="store_true", help="do not flush L2 before each call")
    parser.add_argument("--graph", action="store_true",
                        help="time calls replayed back to back from a CUDA graph, as serving runs them (implies --hot)")
    parser.add_argument("--grid-context", type=int, default=0,
                        help="max_prefix_len passed to the kernel, as serving passes its context length (0: the case's)")
    parser.add_argument("--min-split-keys", type=int, nargs="+", default=[MIN_SPLIT_KEYS],
                        help="the kernel's min_split_keys values to time (one row each)")
    parser.add_argument("--tiles", nargs="+", default=["default"],
                        help="launch configurations to time, BLOCK_MxBLOCK_NxWARPSxSTAGES or default (one row each)")
    parser.add_argument("--no-flashinfer", action="store_true",
                        help="time ours only (FlashInfer's first use on a fresh machine JIT-compiles for minutes)")
    parser.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = parser.parse_args()
    args.hot = args.hot or args.graph
    tiles = [None if text == "default" else Tile.parse(text) for text in args.tiles]

    fi_note = "not timed (--no-flashinfer)" if args.no_flashinfer else flashinfer_status()
    hbm = hbm_gbps()
    meta = {
        **run_metadata(("triton", "flashinfer-python")),
        "shape": f"Hq={args.q_heads}, Hkv={args.kv_heads}, head_dim={args.head_dim}, bf16, page_size 1",
        "flashinfer": fi_note,
        "measured HBM GB/s (D2D copy, read + write)": round(hbm, 1),
        "timing": (f"CUDA graph of 20 back-to-back calls, median replay of {args.iters} / 20 (--graph, L2 not flushed)"
                   if args.graph else f"CUDA events per call, median of {args.iters} after {args.warmup} warm-up, "
                   + ("L2 not flushed (--hot)" if args.hot else "L2 flushed before each")),
        "grid": f"max_prefix_len {args.grid_context}" if args.grid_context else "max_prefix_len = each case's context",
        "bytes": "KV read (prefix + tree, K and V) + Q read + O written",
        "flops": "4 * bs * N * (context + N) * Hq * head_dim: every key, masked tree keys included",
    }
    flush = None if args.hot else torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda") if fi_note == "timed" else None
    rows = []
    for context in args.contexts:
        for bs in args.bs:
            for n in args.budgets:
                sweep = [(keys, tile) for keys in args.min_split_keys for tile in tiles]
                for i, (min_split_keys, tile) in enumerate(sweep):
                    rows.append(run_config(bs, n, context, args, flush, workspace if i == 0 else None, hbm,
                                           min_split_keys, tile))  # fmt: skip
                    save_rows(Path(args.out), meta, rows, markdown)
                    torch.cuda.empty_cache()
    print(markdown(meta, rows))


if __name__ == "__main__":
    main()

"""Per-call time of the tree-building paths on one GPU, eager and as CUDA-graph replays.

- ``fused``: ``jetspec_sglang.kernels.build_tree_fused``, the tree plus its EAGLE lineage in one launch.
- ``torch``: ``tree.build_tree`` then ``sglang.lineage.encode_lineage``, the same outputs from torch ops.
- ``sgl``: the tree kernel SGLang 0.5.17 runs next in verify, on the fused lineage: it turns the
  lineage into the verify mask, positions and retrieve lists. ``sgl_kernel.build_tree_kernel_efficient``
  is called as ``speculative/eagle_utils.py::build_tree_kernel_efficient`` calls it on a GPU with a
  preallocated FULL_MASK buffer (filled with True first under ``--fill-prefix``), the retrieve arrays
  reset to -1 first. It runs only when ``sgl_kernel`` imports.
- ``fusedv``: the whole tree side of a step with our kernels: ``build_tree_fused`` then
  ``build_verify_inputs_fused`` (FULL_MASK, prefix filled under ``--fill-prefix``), which writes what
  ``sgl`` does straight from the tree.
- ``torchsgl``: the same outputs the way SGLang gets them from the torch builder: ``torch`` then ``sgl``
  (only when ``sgl_kernel`` imports).

Times come from CUDA events over ``--iters`` calls after ``--warmup`` calls. Bytes are logical:
inputs read once plus outputs written once. The fused outputs are checked equal to the torch ones
before anything is timed, and so are the fused verify inputs to ``tree_layout.eagle_verify_inputs``.

    python benchmark/kernels/tree_build_bench.py --out benchmark/results/tree_build_h200/tree_build
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Callable, Optional

import torch
from bench_io import save_rows  # benchmark/kernels/, beside this script
from jetspec_sglang.kernels import (
    build_tree_fused,
    build_verify_inputs_fused,
    empty_tree_outputs,
    empty_verify_inputs,
    verify_mask_numel,
)
from jetspec_sglang.run_meta import run_metadata
from jetspec_sglang.sglang.lineage import EagleLineage, encode_lineage, lineage_topk
from jetspec_sglang.tree import FanoutCap, build_tree
from jetspec_sglang.tree_layout import TreeMaskMode, eagle_verify_inputs

FULL_MASK = TreeMaskMode.FULL_MASK  # sglang.srt.speculative.eagle_utils.TreeMaskMode.FULL_MASK


def time_us(fn: Callable[[], object], iters: int, warmup: int) -> float:
    """Mean microseconds per call, from CUDA events around ``iters`` back-to-back calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return 1000.0 * start.elapsed_time(end) / iters


def graphed(fn: Callable[[], object]) -> Callable[[], None]:
    """Capture one call of ``fn`` (after a warm-up on a side stream) and return the replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def mask_bytes(bs: int, budget: int, seq_len: int, fill_prefix: bool) -> int:
    """FULL_MASK cells written per call: the tree cells, plus the prefix cells when they are filled."""
    return bs * budget * budget + (bs * budget * seq_len if fill_prefix else 0)


def sgl_tree_kernel(bs: int, budget: int, seq_len: int, fill_prefix: bool) -> Callable[[EagleLineage], None]:
    """SGLang's lineage -> mask/positions/retrieve kernel on preallocated buffers, as eagle_utils.py runs it."""
    import sgl_kernel

    seq_lens = torch.full((bs,), seq_len, dtype=torch.int64, device="cuda")
    mask = torch.empty(bs * budget * (seq_len + budget), dtype=torch.bool, device="cuda")
    positions = torch.empty(bs * budget, dtype=torch.int64, device="cuda")
    retrieve = torch.empty(3, bs, budget, dtype=torch.int64, device="cuda")

    def call(lineage: EagleLineage) -> None:
        if fill_prefix:
            mask.fill_(True)
        retrieve.fill_(-1)
        sgl_kernel.build_tree_kernel_efficient(
            lineage.parent_list, lineage.top_scores_index, seq_lens, mask, positions,
            retrieve[0], retrieve[1], retrieve[2], lineage.topk, lineage.depth, budget, FULL_MASK,
        )  # fmt: skip

    return call


def probe_sgl(seq_len: int) -> str:
    """``"timed"`` when SGLang's tree kernel imports and runs on a small tree, else why it is skipped."""
    try:
        ids = torch.arange(12, device="cuda").view(1, 3, 4)
        logprobs = torch.log_softmax(torch.arange(12.0, 0.0, -1.0, device="cuda").view(1, 3, 4), -1)
        _, lineage = build_tree_fused(ids, logprobs, ids[:, 0, 0].contiguous(), 9, 4)
        sgl_tree_kernel(1, 9, seq_len, False)(lineage)
        torch.cuda.synchronize()
    except (ImportError, RuntimeError, TypeError) as err:
        return f"skipped: {type(err).__name__}: {err}"
    return "timed"


def run_config(bs: int, budget: int, args: argparse.Namespace, cap: Optional[FanoutCap], sgl: bool) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(bs * 1000 + budget)
    logits = torch.randn(bs, args.depth, args.vocab, generator=gen, device="cuda") * 3
    logprobs, ids = torch.log_softmax(logits, -1).topk(args.topk, -1)
    roots = torch.randint(0, args.vocab, (bs,), generator=gen, device="cuda")
    k_enc = lineage_topk(budget, args.depth, args.topk)
    out = empty_tree_outputs(bs, budget, args.depth, k_enc, "cuda")
    seq_lens = torch.full((bs,), args.seq_len, dtype=torch.int64, device="cuda")
    verify_out = empty_verify_inputs(bs, budget, verify_mask_numel(FULL_MASK, bs, budget, bs * args.seq_len), "cuda")

    def fused() -> None:
        build_tree_fused(ids, logprobs, roots, budget, k_enc, cap, out=out)

    def vectorised() -> EagleLineage:
        return encode_lineage(build_tree(ids, logprobs, roots, budget, cap), k_enc)

    def fused_verify() -> None:
        tree, _ = build_tree_fused(ids, logprobs, roots, budget, k_enc, cap, out=out)
        build_verify_inputs_fused(tree, seq_lens, FULL_MASK, verify_out, fill_prefix_mask=args.fill_prefix)

    fused()
    tree = build_tree(ids, logprobs, roots, budget, cap)
    lineage = encode_lineage(tree, k_enc)
    for name in ("tokens", "parents", "depths", "scores", "num_nodes"):
        assert torch.equal(getattr(out[0], name), getattr(tree, name)), f"fused {name} differs from build_tree"
    for name in ("parent_list", "top_scores_index", "draft_tokens"):
        assert torch.equal(getattr(out[1], name), getattr(lineage, name)), f"fused {name} differs from encode_lineage"
    build_verify_inputs_fused(out[0], seq_lens, FULL_MASK, verify_out)
    want = eagle_verify_inputs(tree, seq_lens, FULL_MASK)
    for name in (field.name for field in dataclasses.fields(want)):
        assert torch.equal(getattr(verify_out, name), getattr(want, name)), f"fused verify {name} differs"

    cols = out[1].parent_list.shape[1]
    read = bs * args.depth * args.topk * (8 + 4) + 8 * bs + (8 * bs * args.depth if cap else 0)
    written = bs * budget * (3 * 8 + 4) + 8 * bs + 2 * 8 * bs * (budget - 1) + 8 * bs * cols
    nodes, cells = bs * budget, mask_bytes(bs, budget, args.seq_len, args.fill_prefix)
    row = {"bs": bs, "N": budget, "D": args.depth, "K": args.topk, "K_enc": k_enc, "cap": "top2gap" if cap else "none",
           "fused_bytes": read + written,  # fusedv: + tokens, parents and seq_lens read, mask cells and 5 per node
           "fusedv_bytes": read + written + 2 * 8 * nodes + 8 * bs + cells + 5 * 8 * nodes}  # fmt: skip
    paths = {"fused": fused, "torch": vectorised, "fusedv": fused_verify}
    if sgl:
        sgl_call = sgl_tree_kernel(bs, budget, args.seq_len, args.fill_prefix)
        paths["sgl"] = lambda: sgl_call(out[1])
        paths["torchsgl"] = lambda: sgl_call(vectorised())
        lineage_read = 8 * (out[1].parent_list.numel() + out[1].top_scores_index.numel() + bs)  # + seq_lens
        row["sgl_bytes"] = lineage_read + cells + 8 * nodes + 2 * 8 * 3 * nodes  # retrieve lists: -1 fill, then written
    for name, fn in paths.items():
        row[f"{name}_eager_us"] = round(time_us(fn, args.iters, args.warmup), 2)
        row[f"{name}_graph_us"] = round(time_us(graphed(fn), args.iters, args.warmup), 2)
    return row


def markdown(meta: dict, rows: list[dict]) -> str:
    sgl = "sgl_eager_us" in rows[0]
    head = ["bs", "N", "cap", "fused eager us", "fused graph us", "torch eager us", "torch graph us",
            "speedup eager", "speedup graph", "fused bytes", "fused GB/s (graph)",
            "fused+verify eager us", "fused+verify graph us", "fused+verify bytes"]  # fmt: skip
    head += ["sgl eager us", "sgl graph us", "sgl bytes", "torch+sgl eager us", "torch+sgl graph us",
             "fused+verify speedup vs torch+sgl (graph)"] if sgl else []  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["bs"], r["N"], r["cap"], r["fused_eager_us"], r["fused_graph_us"], r["torch_eager_us"],
                 r["torch_graph_us"], f"{r['torch_eager_us'] / r['fused_eager_us']:.1f}x",
                 f"{r['torch_graph_us'] / r['fused_graph_us']:.1f}x"]  # fmt: skip
        cells += [r["fused_bytes"], f"{r['fused_bytes'] / r['fused_graph_us'] / 1e3:.2f}"]
        cells += [r["fusedv_eager_us"], r["fusedv_graph_us"], r["fusedv_bytes"]]
        cells += [r["sgl_eager_us"], r["sgl_graph_us"], r["sgl_bytes"], r["torchsgl_eager_us"], r["torchsgl_graph_us"],
                  f"{r['torchsgl_graph_us'] / r['fusedv_graph_us']:.1f}x"] if sgl else []  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    about = [f"- {k}: {v}" for k, v in meta.items()]
    return "\n".join([f"# Fused tree builder vs torch ({meta['gpu']}, {meta['date']})", "", *about, "", *lines]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--budgets", type=int, nargs="+", default=[16, 64, 128, 256])
    parser.add_argument("--depth", type=int, default=15)
    parser.add_argument("--topk", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--caps", nargs="+", choices=["none", "top2gap"], default=["none", "top2gap"])
    parser.add_argument("--seq-len", type=int, default=1024, help="prefix length for SGLang's FULL_MASK layout")
    parser.add_argument("--fill-prefix", action="store_true",
                        help="write True into the mask's prefix cells (SGLang's fill_prefix_mask) in sgl and fusedv")
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = parser.parse_args()

    sgl_note = probe_sgl(args.seq_len)
    meta = {
        **run_metadata(("sglang", "sglang-kernel")),
        "sgl path": sgl_note,
        "timing": f"CUDA events, mean of {args.iters} calls after {args.warmup} warm-up calls",
        "bytes": "logical: inputs read once + outputs written once",
        "mask": f"FULL_MASK, seq_len {args.seq_len}, prefix {'filled' if args.fill_prefix else 'not filled'}",
    }
    rows = []
    for cap_name in args.caps:
        for bs in args.bs:
            for budget in args.budgets:
                rows.append(run_config(bs, budget, args, FanoutCap() if cap_name == "top2gap" else None,
                                       sgl_note == "timed"))
                save_rows(Path(args.out), meta, rows, markdown)
    print(markdown(meta, rows))

if __name__ == "__main__":
    main()

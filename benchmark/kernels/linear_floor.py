"""What a target's linear layers alone cost per forward, by tokens per forward: the floor under a verify step.

A verify forward of ``N`` tree nodes at batch size ``bs`` pushes ``bs * N`` tokens through every
weight matrix of the target, where a plain decode step pushes ``bs``. This times exactly that part,
and nothing else: per layer the QKV, output, gate-up and down projections (``torch.nn.functional.linear``,
i.e. cuBLAS, bf16, distinct random weights per layer so nothing stays in L2), then the LM head. No
attention, norms, rotary or sampling: a real forward costs more. The ratio ``ms(T) / ms(bs)`` is a
lower bound, from the matrices alone, on what a verify of ``T`` tokens costs in plain decode steps of
batch ``bs``.

Each forward is captured in one CUDA graph and timed with CUDA events (median of ``--iters`` replays).
Shapes come from a model's ``config.json`` (Llama/Qwen style keys).

    python benchmark/kernels/linear_floor.py --config /tmp/models/qwen3-8b-dummy/config.json \\
        --tokens 1 4 16 32 64 128 256 512 --out benchmark/results/step_breakdown_h200/linear-floor-qwen3-8b
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from jetspec_sglang.run_meta import run_metadata


def layer_shapes(config: dict) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """``(out, in)`` of each linear of one decoder layer, and of the LM head."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or hidden // heads
    inter = config["intermediate_size"]
    per_layer = [
        ((heads + 2 * kv_heads) * head_dim, hidden),  # fused QKV
        (hidden, heads * head_dim),  # output projection
        (2 * inter, hidden),  # fused gate and up
        (hidden, inter),  # down
    ]
    return per_layer, (config["vocab_size"], hidden)


class LinearStack:
    """Random bf16 weights in a target's shape, and one forward of its linears."""

    def __init__(self, config: dict, device: torch.device) -> None:
        per_layer, head = layer_shapes(config)
        self.hidden = config["hidden_size"]
        self.inter = config["intermediate_size"]
        self.layers = [[torch.randn(shape, dtype=torch.bfloat16, device=device) * 0.02 for shape in per_layer]
                       for _ in range(config["num_hidden_layers"])]
        self.lm_head = torch.randn(head, dtype=torch.bfloat16, device=device) * 0.02
        self.weight_bytes = sum(w.numel() * 2 for layer in self.layers for w in layer) + self.lm_head.numel() * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for qkv, out, gate_up, down in self.layers:
            attn_in = F.linear(x, qkv)[:, : out.shape[1]]  # stands in for attention's output
            x = x + F.linear(attn_in, out)
            gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, down)
        return F.linear(x, self.lm_head)


def time_forward_ms(stack: LinearStack, tokens: int, iters: int) -> float:
    """Median milliseconds of one graphed forward of ``tokens`` rows."""
    x = torch.randn((tokens, stack.hidden), dtype=torch.bfloat16, device=stack.lm_head.device) * 0.1
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm cuBLAS's workspace and heuristics outside the capture
        for _ in range(3):
            stack.forward(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        stack.forward(x)
    for _ in range(5):
        graph.replay()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a model's config.json")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 4, 16, 32, 64, 128, 256, 512])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("linear_floor.py times cuBLAS on a GPU; no CUDA device is visible")
    config = json.loads(args.config.read_text())
    stack = LinearStack(config, torch.device("cuda"))
    rows = []
    for tokens in args.tokens:
        ms = time_forward_ms(stack, tokens, args.iters)
        rows.append({"tokens": tokens, "ms": round(ms, 4),
                     "weight_tb_per_s": round(stack.weight_bytes / ms / 1e9, 2),
                     "tflop_per_s": round(stack.weight_bytes * tokens / ms / 1e9, 1)})  # 2 flops per bf16 weight
    base = rows[0]["ms"]
    for row in rows:
        row["vs_first"] = round(row["ms"] / base, 3)
    meta = {**run_metadata(()), "config": str(args.config), "weight_gb": round(stack.weight_bytes / 1e9, 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Linear layers alone, {args.config}", ""] + [f"- {k}: {v}" for k, v in meta.items()] + [
        "", f"| tokens | ms | vs {rows[0]['tokens']} token(s) | weights TB/s | TFLOP/s |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['tokens']} | {r['ms']} | {r['vs_first']} | {r['weight_tb_per_s']} | {r['tflop_per_s']} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(rows) - 2:]))


if __name__ == "__main__":
    main()

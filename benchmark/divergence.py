"""Where speculative outputs part from plain ones, and whether each parting is a near tie.

Reads a ``side_by_side.py`` result (.json), rebuilds its prompts, and for every
configuration's output that differs from plain greedy decoding finds the first
differing token and the float32 logit gap there between plain's token and the
other's, from HF transformers in float32 (CPU is fine). bf16 serving kernels
reorder sums, so a speculative run and a plain run may pick different tokens
where the two best logits are within bf16 noise (SGLang's own NGRAM, STANDALONE
and DFLASH do this too); a large gap would instead point at a bug.

    python benchmark/divergence.py benchmark/results/NAME.json --model SMOLLM2_DIR --out NAME-divergence
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (the shorter length if one is a prefix of the other), None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", help="side_by_side.py .json output")
    parser.add_argument("--model", required=True, help="HF folder of the target the result was measured on")
    parser.add_argument("--near-tie", type=float, default=0.3, help="float32 logit gap counted as a near tie")
    parser.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = parser.parse_args()

    from jetspec_sglang.datasets import load_eval_prompts, render_prompt
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = json.loads(Path(args.result).read_text())
    meta = result["meta"]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    prompts = [render_prompt(tokenizer, p.messages) for p in load_eval_prompts(meta["dataset"], limit=meta["num_prompts"])]
    plain = next(r for r in result["rows"] if r["config"] == "plain")["outputs"]

    report = []
    for row in result["rows"]:
        if row["config"] == "plain":
            continue
        for i, (expected, got) in enumerate(zip(plain, row["outputs"])):
            first = first_difference(expected, got)
            if first is None or first >= min(len(expected), len(got)):
                report.append({"config": row["config"], "prompt": i, "first": first, "gap": None})
                continue
            with torch.no_grad():
                logits = model(torch.tensor([prompts[i] + expected[:first]])).logits[0, -1]
            gap = float(logits[expected[first]] - logits[got[first]])
            rank = int((logits > logits[expected[first]]).sum())
            report.append({"config": row["config"], "prompt": i, "first": first, "gap": round(gap, 4),
                           "plain_token_rank_fp32": rank})

    lines = [f"# First divergences from plain, {Path(args.result).name}", "",
             f"float32 logit gap (plain's token minus the other's) at the first differing token; "
             f"near tie: |gap| < {args.near_tie}. Plain's token rank under float32 (0 = argmax).", "",
             "| config | identical | diverged | near ties | largest abs gap | gaps |", "| --- | --- | --- | --- | --- | --- |"]
    for config in dict.fromkeys(r["config"] for r in report):
        rows = [r for r in report if r["config"] == config]
        gaps = [r["gap"] for r in rows if r["gap"] is not None]
        identical = sum(r["first"] is None for r in rows)
        near = sum(abs(g) < args.near_tie for g in gaps)
        lines.append(f"| {config} | {identical}/{len(rows)} | {len(gaps)} | {near}/{len(gaps)} | "
                     f"{max(map(abs, gaps), default=0):.3f} | {', '.join(f'{g:+.3f}' for g in gaps)} |")
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"source": args.result, "near_tie": args.near_tie,
                                                     "divergences": report}, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

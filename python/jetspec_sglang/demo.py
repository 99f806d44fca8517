"""``jetspec demo``: one chat answer from SmolLM2-135M-Instruct, with JetSpec and plainly, on a CPU.

No GPU and no model hub: the target comes from its PyPI package (converted once into
the local cache), the head from ``--head`` (default: the reference head committed
under ``benchmark/artifacts/``). Both answers are greedy, so they are identical;
the demo prints them with the accepted length and the speed of each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REFERENCE_HEAD = Path(__file__).resolve().parents[2] / "benchmark" / "artifacts" / "smollm2-135m-jetspec"
DEFAULT_PROMPT = "A shop sells pens for $3 each. Mia buys 7 pens and pays with a $50 bill. How much change does she get?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--head", default=str(REFERENCE_HEAD), help="draft head folder for SmolLM2-135M-Instruct")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--budget", type=int, default=32, help="tree nodes per step (CPU-sized)")
    parser.add_argument("--topk", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .assets import ensure_smollm2
    from .datasets import render_prompt
    from .draft_head import DraftHead
    from .ref_engine import speculative_generate, target_generate

    if not (Path(args.head) / "config.json").exists():
        raise SystemExit(
            f"no draft head at {args.head}: pass --head, or train the reference one with "
            "`jetspec train --config benchmark/recipes/smollm2-135m.json` (see README)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = ensure_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    target = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    head = DraftHead.from_pretrained(args.head, dtype=torch.float32).eval()
    ids = render_prompt(tokenizer, [{"role": "user", "content": args.prompt}])
    eos = tokenizer.eos_token_id
    plain = target_generate(target, ids, args.max_new_tokens, eos_token_id=eos)
    spec = speculative_generate(target, head, ids, args.max_new_tokens, budget=args.budget, topk=args.topk,
                                eos_token_id=eos)
    print(f"prompt: {args.prompt}\n")
    print(f"plain greedy ({len(plain.tokens)} tokens):\n{tokenizer.decode(plain.tokens, skip_special_tokens=True)}\n")
    print(f"JetSpec ({len(spec.tokens)} tokens):\n{tokenizer.decode(spec.tokens, skip_special_tokens=True)}\n")
    print(f"identical: {spec.tokens == plain.tokens}")
    print(f"{'':10} {'tokens/s':>9} {'tau':>6}")
    print(f"{'plain':10} {plain.tokens_per_second:9.1f} {1.0:6.2f}")
    print(f"{'JetSpec':10} {spec.tokens_per_second:9.1f} {spec.tau:6.2f}   "
          f"(budget {args.budget}, top-{args.topk}; speedup {spec.tokens_per_second / plain.tokens_per_second:.2f}x)")
    return 0 if spec.tokens == plain.tokens else 1

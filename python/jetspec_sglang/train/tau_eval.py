"""``jetspec eval-tau``: accepted length (tau) of a head with the reference engine.

tau is tokens committed per target forward (accepted drafts + bonus), averaged
per prompt and then over prompts (the DFlash protocol), greedy. Settings are
best-first trees at several node budgets (top-K per depth) plus the chain
(top-1, ``budget = depth + 1``), which is what SGLang's DFLASH would accept.
The trainer calls ``evaluate_tau`` on held-out training prompts; the command
runs it on the evaluation sets of ``jetspec_sglang.datasets``.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..draft_head import DraftHead
from ..ref_engine import speculative_generate

DEFAULT_BUDGETS = (16, 64, 128)


@dataclass(frozen=True, slots=True)
class TauSetting:
    """One engine setting: ``budget`` nodes (root included), ``topk`` candidates per depth."""

    name: str
    budget: int
    topk: int


def tau_settings(budgets: Sequence[int], topk: int, depth: int, chain: bool = True) -> list[TauSetting]:
    """Tree settings named ``budget<N>`` plus, if ``chain``, ``chain`` (top-1, ``depth + 1`` nodes).

    Examples:
        >>> [s.name for s in tau_settings((16, 64), 8, depth=15)]
        ['budget16', 'budget64', 'chain']
    """
    settings = [TauSetting(f"budget{b}", int(b), topk) for b in budgets]
    if chain:
        settings.append(TauSetting("chain", depth + 1, 1))
    return settings


@torch.no_grad()
def evaluate_tau(
    target: nn.Module,
    head: DraftHead,
    prompts: Sequence[Sequence[int]],
    settings: Sequence[TauSetting],
    *,
    max_new_tokens: int,
    depth: Optional[int] = None,
    eos_token_id: Optional[int | Sequence[int]] = None,
) -> dict[str, float]:
    """Mean per-prompt tau for each setting, greedy.

    Parameters:
        target: HF causal LM; head: a head for it (any dtype; left in its mode afterwards).
        prompts: token ids of each prompt (chat template applied).
        settings: see ``tau_settings``.
        depth: tree depth; defaults to ``head.config.block_size - 1``.
    """
    from tqdm.auto import tqdm

    if not prompts:
        raise ValueError("evaluate_tau needs at least one prompt")
    was_training = head.training
    head.eval()
    result = {}
    bar = tqdm(total=len(settings) * len(prompts), desc="tau", unit="prompt")  # minutes a setting on a CPU
    try:
        for s in settings:
            taus = []
            for p in prompts:
                taus.append(speculative_generate(target, head, list(p), max_new_tokens, budget=s.budget, topk=s.topk,
                                                 depth=depth, eos_token_id=eos_token_id).tau)
                bar.update()
            result[s.name] = sum(taus) / len(taus)
    finally:
        bar.close()
        head.train(was_training)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="HF folder (or hub id) of the target model")
    parser.add_argument("--head", required=True, help="head folder (config.json + model.safetensors) or hub id")
    parser.add_argument("--datasets", default=None,
                        help="comma-separated names from jetspec_sglang.datasets.EVAL_DATASETS (default: all)")
    parser.add_argument("--prompts-file", default=None,
                        help='JSONL of {"messages": [...]} or {"prompt": "..."}, instead of --datasets')
    parser.add_argument("--num-prompts", type=int, default=16, help="prompts per dataset")
    parser.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)))
    parser.add_argument("--topk", type=int, default=8)
    parser.add_argument("--depth", type=int, default=None, help="default: block_size - 1")
    parser.add_argument("--no-chain", action="store_true", help="skip the top-1 chain setting")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument("--dtype", default="bfloat16", help="target/head dtype on GPU (CPU uses float32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="tau.json")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..datasets import render_prompt
    from .data_gen import eos_ids

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float32 if device == "cpu" else getattr(torch, args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=dtype).to(device).eval()
    head = DraftHead.from_pretrained(args.head, device=device, dtype=dtype).eval()
    depth = args.depth or head.config.max_depth
    settings = tau_settings([int(b) for b in args.budgets.split(",") if b], args.topk, depth, not args.no_chain)
    eos = eos_ids(tokenizer, args.target)

    report: dict[str, Any] = {"target": args.target, "head": args.head, "max_new_tokens": args.max_new_tokens,
                              "depth": depth, "settings": [asdict(s) for s in settings], "tau": {}}
    for name, messages in load_eval_sets(args).items():
        prompts = [render_prompt(tokenizer, m) for m in messages]
        report["tau"][name] = evaluate_tau(target, head, prompts, settings, max_new_tokens=args.max_new_tokens,
                                           depth=depth, eos_token_id=eos)
        report["tau"][name]["num_prompts"] = len(prompts)
    print(format_table(report["tau"], [s.name for s in settings]))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return 0


def load_eval_sets(args: argparse.Namespace) -> dict[str, list[list[dict[str, str]]]]:
    """Chat messages per evaluation set, from ``--prompts-file`` or ``jetspec_sglang.datasets``."""
    if args.prompts_file:
        rows = [json.loads(line) for line in Path(args.prompts_file).read_text(encoding="utf-8").splitlines() if line]
        msgs = [r["messages"] if "messages" in r else [{"role": "user", "content": r["prompt"]}] for r in rows]
        return {Path(args.prompts_file).stem: msgs[: args.num_prompts]}
    from .data_gen import user_turns

    datasets = importlib.import_module("jetspec_sglang.datasets")
    names = args.datasets.split(",") if args.datasets else list(datasets.EVAL_DATASETS)
    unknown = [n for n in names if n not in datasets.EVAL_DATASETS]
    if unknown:
        raise SystemExit(f"unknown eval datasets {unknown}; known: {sorted(datasets.EVAL_DATASETS)}")
    out = {}
    for name in names:
        prompts = datasets.load_eval_prompts(name, limit=args.num_prompts, seed=args.seed)
        out[name] = [user_turns(p.messages) for p in prompts]
    return out


def format_table(tau: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """A Markdown table: one row per dataset, one column per setting."""
    lines = ["| dataset | n | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for name, row in tau.items():
        cells = " | ".join(f"{row[c]:.2f}" for c in columns)
        lines.append(f"| {name} | {int(row.get('num_prompts', 0))} | {cells} |")
    return "\n".join(lines)

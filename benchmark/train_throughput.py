"""Training-step throughput and memory of ``jetspec train`` on a random target of a real shape.

Builds a random-weight target (default: SmolLM2-135M's shape), a synthetic
token set with chat-like lengths, then

1. times optimizer steps for each ``--grid`` entry ``batch_size:num_anchors``
   (bf16 autocast on CUDA), reporting seconds per step, tokens/s and peak memory;
2. checks which SDPA backends accept the head's masked GQA attention;
3. with ``--e2e-steps N``, runs ``train()`` end to end (logs, tau eval, checkpoints).

Random weights make losses meaningless; only time and memory are measured.
Writes ``train_throughput.json`` (and the e2e logs) under ``--out``.

    python benchmark/train_throughput.py --out /tmp/tt --grid 8:64,16:64,16:128 --e2e-steps 40
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from jetspec_sglang.train.config import TrainConfig
from jetspec_sglang.train.loss import DistillConfig
from jetspec_sglang.train.token_data import (
    FORMAT,
    MANIFEST_NAME,
    TokenDataset,
    collate,
    shard_name,
    write_json_atomic,
    write_shard,
)
from jetspec_sglang.train.trainer import (
    HeadForTraining,
    build_head,
    load_target,
    micro_step,
    train,
)

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                    rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1,
                    eos_token_id=2, pad_token_id=2)


def make_target(path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).to(torch.bfloat16)
    model.save_pretrained(path)


def make_data(path: Path, rows: int, prompt_len: tuple[int, int], response_len: tuple[int, int]) -> int:
    """Random token rows with uniform prompt/response lengths; returns the token count."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    records, tokens = [], 0
    for i in range(rows):
        p, r = int(rng.integers(*prompt_len)), int(rng.integers(*response_len))
        ids = rng.integers(3, SMOLLM2_135M["vocab_size"] - 1, p + r).tolist()
        records.append(dict(prompt_index=i, source="synthetic", temperature=0.0, prompt_ids=ids[:p],
                            response_ids=ids[p:], finished=True))
        tokens += p + r
    for s, start in enumerate(range(0, rows, 1024)):
        write_shard(path / shard_name(s), records[start : start + 1024])
    write_json_atomic(path / MANIFEST_NAME, {"format": FORMAT, "tokenizer": {"eos_token_id": 2}, "complete": True})
    return tokens


def time_steps(cfg: TrainConfig, batch_size: int, anchors: int, steps: int, device: torch.device) -> dict:
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "batch_size": batch_size, "num_anchors": anchors})
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    target = load_target(cfg, device, bf16=cuda)
    head = build_head(cfg, target).to(device)
    head_params = sum(p.numel() for p in head.parameters())
    model = HeadForTraining(head)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4, fused=cuda)
    data = TokenDataset.load(cfg.data)
    loss_cfg = DistillConfig(cfg.kd_temperature, cfg.gamma, cfg.loss_chunk_anchors)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, tokens = [], 0
    for i in range(steps + 3):
        rows = list(range(i * batch_size, (i + 1) * batch_size))
        batch = collate(data, rows, cfg.max_seq_len).to(device)
        sync()
        t0 = time.perf_counter()
        out = micro_step(model, head, target, batch, cfg, loss_cfg, torch.Generator().manual_seed(i), cuda)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= 3:
            times.append(time.perf_counter() - t0)
            tokens += int(batch.attention_mask.sum())
    del target, head, model, opt
    return {"batch_size": batch_size, "num_anchors": anchors, "s_per_step": float(np.median(times)),
            "tok_per_s": tokens / sum(times), "seq_per_s": steps * batch_size / sum(times),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
            "head_params_m": head_params / 1e6, "head_mb_bf16": head_params * 2 / 1e6}


def sdpa_backends(device: torch.device) -> dict:
    """Which SDPA backends run a masked GQA attention shaped like the training head's."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, 9, 1024, 64, device=device, dtype=torch.bfloat16)
    k = torch.randn(2, 3, 1536, 64, device=device, dtype=torch.bfloat16)
    mask = torch.rand(2, 1, 1024, 1536, device=device) > 0.5
    result = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        try:
            with sdpa_kernel([getattr(SDPBackend, name)]):
                torch.nn.functional.scaled_dot_product_attention(q, k, k, attn_mask=mask, enable_gqa=True)
            result[name] = "ok"
        except RuntimeError as e:
            result[name] = str(e).splitlines()[0][:160]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--grid", default="8:64,16:64,16:128")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--prompt-len", default="40,300")
    p.add_argument("--response-len", default="100,800")
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--e2e-steps", type=int, default=0)
    p.add_argument("--e2e-batch", default="16:64")
    p.add_argument("--device", default="cuda", help="cpu only for a dry run of the script")
    args = p.parse_args()
    out, device = Path(args.out), torch.device(args.device)
    make_target(out / "target")
    span = lambda s: tuple(int(x) for x in s.split(","))  # noqa: E731
    tokens = make_data(out / "data", args.rows, span(args.prompt_len), span(args.response_len))
    base = TrainConfig(target=str(out / "target"), data=str(out / "data"), output_dir=str(out / "run"),
                       num_hidden_layers=args.layers, max_seq_len=args.max_seq_len, eval_prompts=4,
                       eval_max_new_tokens=64)
    cuda = device.type == "cuda"
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "rows": args.rows, "data_tokens": tokens, "sdpa": sdpa_backends(device) if cuda else {}, "grid": []}
    for entry in args.grid.split(","):
        bs, m = (int(x) for x in entry.split(":"))
        report["grid"].append(time_steps(base, bs, m, args.steps, device))
        print(json.dumps(report["grid"][-1]), flush=True)
        if cuda:
            torch.cuda.empty_cache()
    if args.e2e_steps:
        bs, m = (int(x) for x in args.e2e_batch.split(":"))
        cfg = TrainConfig.from_dict({**base.to_dict(), "batch_size": bs, "num_anchors": m,
                                     "max_steps": args.e2e_steps, "log_every": 10, "save_every": args.e2e_steps // 2})
        t0 = time.perf_counter()
        train(cfg)
        report["e2e"] = {"steps": args.e2e_steps, "batch_size": bs, "num_anchors": m,
                         "seconds": time.perf_counter() - t0}
    (out / "train_throughput.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""``jetspec train``: train a draft head by forward-KL distillation from the frozen target.

Each micro-step:

1. **target**: one no-grad forward of the frozen target over the batch gives the
   tap-layer features (``output_hidden_states``) and the teacher logits;
2. **anchors**: sample anchors, build their blocks and the multi-block mask;
3. **head**: one head forward over every block (context K/V of the whole
   sequence, the mask restricting each block to context ``< a``), bf16 autocast
   over float32 master weights;
4. **loss**: forward KL per block row against the teacher (``loss.py``).

AdamW with warmup + cosine, gradient clipping, DDP under ``torchrun`` (one
process per GPU, rows sharded per rank), checkpoints and ``--resume``, CSV
(and TensorBoard) logs, periodic offline tau on held-out prompts. The output
directory ends up holding the head in the published DFlash format.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..draft_head import DraftHead, tap_layer_outputs
from ..head_config import DraftHeadConfig
from .anchors import block_inputs, block_targets, sample_anchors, training_mask
from .checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from .config import TrainConfig, add_config_arguments, load_config
from .loss import DistillConfig, DistillOutput, distill_loss
from .run_log import RunLog
from .tau_eval import evaluate_tau, tau_settings
from .token_data import Batch, TokenDataset, collate, epoch_batches, write_json_atomic


class HeadForTraining(nn.Module):
    """Context projection, context K/V and the block forward as one module (what DDP wraps)."""

    def __init__(self, head: DraftHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, taps: Tensor, block_embeds: Tensor, block_positions: Tensor, mask: Tensor) -> Tensor:
        """``taps: [bs, T, F]``, ``block_embeds: [bs, m*B, H]``, ``mask: [bs, 1, m*B, T + m*B]`` -> ``[bs, m*B, H]``."""
        bs, seq_len = taps.shape[:2]
        ctx_positions = torch.arange(seq_len, device=taps.device)[None].expand(bs, -1)
        context = self.head.context_kv(self.head.project_context(taps), ctx_positions)
        return self.head(block_embeds, block_positions, context, mask)


@dataclass(frozen=True, slots=True)
class DistEnv:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="JSON file of TrainConfig fields (e.g. a benchmark recipe)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="continue from the newest checkpoint in output_dir, or from the given checkpoint")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "resume")}
    try:
        train(load_config(args.config, overrides), resume=args.resume)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def setup_distributed(device_type: Optional[str] = None) -> DistEnv:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``; pick this rank's device.

    ``device_type`` "cuda" or "cpu"; None takes CUDA when available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_type is None else device_type == "cuda"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistEnv(rank, world, device)


def load_target(cfg: TrainConfig, device: torch.device, bf16: bool) -> nn.Module:
    """The frozen target (bf16 when ``bf16``, float32 otherwise), in eval mode."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16 else torch.float32
    target = AutoModelForCausalLM.from_pretrained(cfg.target, dtype=dtype).to(device).eval()
    target.requires_grad_(False)
    return target


def build_head(cfg: TrainConfig, target: nn.Module) -> DraftHead:
    """A fresh head shaped by ``cfg`` for ``target`` (or ``cfg.init_head``), float32."""
    if cfg.init_head:
        head = DraftHead.from_pretrained(cfg.init_head, dtype=torch.float32)
    else:
        config = DraftHeadConfig.for_target(
            target.config, num_hidden_layers=cfg.num_hidden_layers, num_taps=cfg.num_taps,
            target_layer_ids=cfg.target_layer_ids, mask_token_id=cfg.mask_token_id, block_size=cfg.block_size,
            causal=cfg.causal, intermediate_size=cfg.intermediate_size,
        )
        torch.manual_seed(cfg.seed)
        head = DraftHead(config)
    head.check_target(target.config)
    return head.float()


def lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float):
    """Linear warmup to 1, then cosine down to ``min_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def micro_step(model: nn.Module, head: DraftHead, target: nn.Module, batch: Batch, cfg: TrainConfig,
               loss_cfg: DistillConfig, generator: torch.Generator, bf16: bool) -> DistillOutput:
    """Target forward, anchors, head forward and loss for one micro-batch (no backward)."""
    hc = head.config
    with torch.no_grad():
        out = target(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        taps = tap_layer_outputs(out.hidden_states, hc.target_layer_ids)  # [bs, T, num_taps * H]
        teacher = out.logits  # [bs, T, V]
        del out
        anchors = sample_anchors(batch.loss_mask, cfg.num_anchors, generator)
        ids, positions = block_inputs(batch.input_ids, anchors, hc.block_size, hc.mask_token_id)
        embeds = target.get_input_embeddings()(ids)  # [bs, m*B, H]
        mask = training_mask(anchors, batch.input_ids.shape[1], hc.block_size, hc.causal)
        teacher_index, valid = block_targets(batch.loss_mask, anchors, hc.block_size)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        hidden = model(taps, embeds, positions, mask)
        bs, m = anchors.positions.shape
        hidden = hidden.view(bs, m, hc.block_size, -1)[:, :, 1:]  # row 0 (the bonus) predicts nothing
        return distill_loss(hidden, target.get_output_embeddings(), teacher, teacher_index, valid, loss_cfg)


def train(cfg: TrainConfig, resume: Optional[str] = None) -> Path:
    """Run the whole training; returns the output directory (the final head is saved there)."""
    from tqdm.auto import tqdm

    env = setup_distributed(cfg.device)
    bf16 = cfg.bf16 if cfg.bf16 is not None else env.device.type == "cuda"
    out_dir = Path(cfg.output_dir)
    target = load_target(cfg, env.device, bf16)
    head = build_head(cfg, target).to(env.device)
    data = TokenDataset.load(cfg.data)
    train_rows, eval_rows = data.split(cfg.eval_prompts, cfg.max_seq_len, cfg.seed)
    lengths = data.lengths(cfg.max_seq_len)
    epoch_of = _EpochBatches(train_rows, lengths, cfg, env)
    total_steps = cfg.max_steps or max(1, cfg.epochs * epoch_of.num_batches // cfg.grad_accum)

    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, warmup, cfg.min_lr_ratio))
    step = 0
    ckpt = resolve_checkpoint(out_dir, resume) if resume else None
    if ckpt is not None:
        step = int(load_checkpoint(ckpt, head, optimizer, scheduler, env.device)["step"])
    model: nn.Module = HeadForTraining(head)
    if env.world_size > 1:
        ids = [env.device.index] if env.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    log = RunLog(out_dir / "logs", enabled=env.is_main, resume_step=step)
    if env.is_main:
        write_json_atomic(out_dir / "logs" / "train_config.json",
                          {**cfg.to_dict(), "world_size": env.world_size, "total_steps": total_steps,
                           "train_rows": int(len(train_rows)), "head": head.config.to_hf_dict()})
    loss_cfg = DistillConfig(cfg.kd_temperature, cfg.gamma, cfg.loss_chunk_anchors)
    eval_prompts = [data.prompt_ids(r) for r in eval_rows]
    eos = _eos_ids(target, data.manifest)

    bar = tqdm(total=total_steps, initial=step, disable=not env.is_main, desc="train", unit="step")
    window = _Window(head.config.block_size - 1, env.device)
    head.train()
    while step < total_steps:
        for i in range(cfg.grad_accum):
            micro = step * cfg.grad_accum + i
            batch = collate(data, epoch_of(micro), cfg.max_seq_len).to(env.device)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + micro * env.world_size + env.rank)
            sync = i == cfg.grad_accum - 1 or env.world_size == 1
            with contextlib.nullcontext() if sync else model.no_sync():
                result = micro_step(model, head, target, batch, cfg, loss_cfg, gen, bf16)
                (result.loss / cfg.grad_accum).backward()
            window.add(result, batch)
        grad_norm = nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip or float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == total_steps:
            row = window.flush(step, scheduler.get_last_lr()[0], grad_norm, (micro + 1) / epoch_of.num_batches)
            log.train(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc1=f"{row['acc_d1']:.2f}", chain=f"{row['chain_len']:.2f}")
        paused = time.perf_counter()  # evaluation and saving are left out of the throughput columns
        if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
            _evaluate(head, target, eval_prompts, cfg, eos, step, log, env)
        if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
            _save(out_dir, step, head, optimizer, scheduler, cfg, env)
        window.start += time.perf_counter() - paused
    bar.close()
    _save(out_dir, step, head, optimizer, scheduler, cfg, env)
    if env.is_main:  # the head is usable before the (slow) final evaluation ends
        head.save_pretrained(out_dir, dtype=getattr(torch, cfg.save_dtype))
    final_tau = _evaluate(head, target, eval_prompts, cfg, eos, step, log, env)
    if env.is_main:
        write_json_atomic(out_dir / "logs" / "tau.json", {"step": step, "tau": final_tau})
        log.close()
    if dist.is_initialized():
        dist.barrier()
    return out_dir


class _EpochBatches:
    """Micro-batch index -> this rank's rows, crossing epochs; the epoch order is cached."""

    def __init__(self, rows: Any, lengths: Any, cfg: TrainConfig, env: DistEnv) -> None:
        self._args = dict(rows=rows, lengths=lengths, batch_size=cfg.batch_size, rank=env.rank,
                          world_size=env.world_size, seed=cfg.seed)
        self._epoch, self._batches = 0, epoch_batches(epoch=0, **self._args)
        self.num_batches = len(self._batches)

    def __call__(self, micro: int) -> list[int]:
        epoch, index = divmod(micro, self.num_batches)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(epoch=epoch, **self._args)
        return self._batches[index].tolist()


class _Window:
    """Metric sums over one logging interval, all-reduced across ranks when flushed (one host sync)."""

    def __init__(self, depth: int, device: torch.device) -> None:
        self.depth, self.device = depth, device
        self._reset()

    def _reset(self) -> None:
        self.sums = torch.zeros(5 + 2 * self.depth, dtype=torch.float64, device=self.device)
        self.micro_steps, self.start = 0, time.perf_counter()

    def add(self, r: DistillOutput, batch: Batch) -> None:
        tokens = batch.attention_mask.sum().double()
        scalars = torch.stack([r.loss.detach().double(), r.chain_len.double(), r.anchors.double(), tokens,
                               torch.tensor(batch.input_ids.shape[0], dtype=torch.float64, device=self.device)])
        self.sums += torch.cat([scalars, r.agree.double(), r.rows.double()])
        self.micro_steps += 1

    def flush(self, step: int, lr: float, grad_norm: Tensor, epoch: float) -> dict[str, float]:
        sums = self.sums.clone()
        world = dist.get_world_size() if dist.is_initialized() else 1
        if world > 1:
            dist.all_reduce(sums)
        s = sums.tolist()  # host sync, once per logging interval
        seconds = time.perf_counter() - self.start
        agree, rows = s[5 : 5 + self.depth], s[5 + self.depth :]
        acc = [a / max(n, 1.0) for a, n in zip(agree, rows)]
        row = {"step": step, "epoch": round(epoch, 4), "lr": lr, "loss": s[0] / (self.micro_steps * world),
               "grad_norm": float(grad_norm), "chain_len": s[1] / max(s[2], 1.0),
               "acc_mean": sum(agree) / max(sum(rows), 1.0), **{f"acc_d{k + 1}": a for k, a in enumerate(acc)},
               "seq_per_s": s[4] / seconds, "tok_per_s": s[3] / seconds}
        self._reset()
        return row


def _eos_ids(target: nn.Module, manifest: dict[str, Any]) -> list[int]:
    ids = {manifest.get("tokenizer", {}).get("eos_token_id")}
    gen = getattr(getattr(target, "generation_config", None), "eos_token_id", None)
    ids |= set(gen) if isinstance(gen, list) else {gen}
    return sorted(int(i) for i in ids if i is not None)


def _evaluate(head: DraftHead, target: nn.Module, prompts: list[list[int]], cfg: TrainConfig, eos: list[int],
              step: int, log: RunLog, env: DistEnv) -> dict[str, float]:
    """Offline tau on rank 0 (others wait at the barrier)."""
    tau: dict[str, float] = {}
    if env.is_main and prompts:
        settings = tau_settings(cfg.eval_budgets, cfg.eval_topk, head.config.max_depth, cfg.eval_chain)
        tau = evaluate_tau(target, head, prompts, settings, max_new_tokens=cfg.eval_max_new_tokens,
                           eos_token_id=eos or None)
        log.tau(step, tau)
    if dist.is_initialized():
        dist.barrier()
    return tau


def _save(out_dir: Path, step: int, head: DraftHead, optimizer: torch.optim.Optimizer, scheduler: Any,
          cfg: TrainConfig, env: DistEnv) -> None:
    if env.is_main:
        save_checkpoint(out_dir, step, head, optimizer, scheduler, {"config": cfg.to_dict()}, cfg.keep_checkpoints)
    if dist.is_initialized():
        dist.barrier()

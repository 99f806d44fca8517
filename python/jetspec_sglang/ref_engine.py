"""Reference JetSpec engine on HF transformers (CPU or GPU, one request).

This is the oracle the SGLang worker is compared with and the offline
estimator of accepted length during training. Each step:

1. **draft**: the head runs once over ``[bonus, MASK x D]`` and yields per-depth top-K;
2. **tree**: a best-first tree of ``budget`` nodes is built from them;
3. **verify**: the target scores the whole tree in one forward (tree-causal mask);
4. **accept**: the walk along the target's choices gives the accepted path and bonus;
5. **commit**: the target cache keeps the path's KV, the head's context gains its taps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .draft_head import ContextKV, DraftHead, per_depth_topk
from .hf_target import HFTarget
from .tree import FanoutCap, build_tree
from .tree_layout import tree_ancestor_mask
from .verify import SamplingConfig, accept_tree, target_choices


@dataclass
class GenerationResult:
    """New tokens and per-step accepted lengths (tokens committed per target forward)."""

    tokens: list[int]
    accept_lengths: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tau(self) -> float:
        """Mean tokens committed per verify step (accepted drafts + bonus)."""
        return sum(self.accept_lengths) / max(len(self.accept_lengths), 1)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("nan")


def draft_step(
    head: DraftHead,
    target: HFTarget,
    context: ContextKV,
    bonus: Tensor,
    seq_len: int,
    depth: int,
    topk: int,
) -> tuple[Tensor, Tensor]:
    """One head pass over ``[bonus, MASK x depth]`` at positions ``seq_len ..``.

    Returns per-depth ``ids, logprobs``: ``[1, depth, topk]`` each.
    """
    dev = bonus.device
    block = torch.full((1, depth + 1), head.config.mask_token_id, dtype=torch.int64, device=dev)
    block[:, 0] = bonus
    positions = seq_len + torch.arange(depth + 1, device=dev)[None]
    ctx_valid = torch.ones(1, seq_len, dtype=torch.bool, device=dev)
    hidden = head(target.embed_tokens(block), positions, context, head.block_mask(ctx_valid, depth + 1))
    logits = target.lm_head(hidden[:, 1:].to(target.dtype))
    return per_depth_topk(logits, topk)


def extend_context(head: DraftHead, context: Optional[ContextKV], taps: Tensor, positions: Tensor) -> ContextKV:
    """Append the head's context K/V for newly committed tokens (``taps: [1, n, F]``)."""
    new = head.context_kv(head.project_context(taps), positions)
    if context is None:
        return new
    return [(torch.cat((k, nk), dim=2), torch.cat((v, nv), dim=2)) for (k, v), (nk, nv) in zip(context, new)]


@torch.no_grad()
def speculative_generate(
    target: nn.Module,
    head: DraftHead,
    input_ids: Tensor | Sequence[int],
    max_new_tokens: int,
    *,
    budget: int = 64,
    topk: int = 8,
    depth: Optional[int] = None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    fanout_cap: Optional[FanoutCap] = None,
    eos_token_id: Optional[int | Sequence[int]] = None,
    generator: Optional[torch.Generator] = None,
) -> GenerationResult:
    """Generate with JetSpec: one draft pass and one target pass per step, lossless.

    Parameters:
        target: an HF causal LM (full-attention KV cache).
        head: a draft head whose ``target_layer_ids`` index ``target``'s layers.
        input_ids: the prompt, ``[P]`` or ``[1, P]``.
        budget: tree nodes per step, root included (1 = plain decoding).
        topk: candidates per depth (K).
        depth: tree depth D; defaults to ``head.config.block_size - 1``.
        temperature, top_k, top_p: target sampling; ``temperature=0`` is greedy.
        fanout_cap: optional ``top2gap`` fan-out cap.
        eos_token_id: stop after emitting one of these.
        generator: RNG for sampling.

    Returns:
        The new tokens (at most ``max_new_tokens``) and per-step accepted lengths.
    """
    head.check_target(target.config)
    sampling = SamplingConfig(temperature, top_k, top_p)
    depth = depth or head.config.max_depth
    stop = _stop_set(eos_token_id)
    tgt = HFTarget(target, head.config.target_layer_ids)
    ids = _as_batch(input_ids, tgt.embed_tokens.weight.device)
    start = time.perf_counter()

    prompt_len = ids.shape[1]
    positions = torch.arange(prompt_len, device=ids.device)[None]
    logits, taps, cache = tgt.forward(ids, positions, None)
    bonus = target_choices(logits[:, -1], sampling, generator)
    context = extend_context(head, None, taps, positions)
    result = GenerationResult(tokens=[int(bonus)])
    seq_len = prompt_len

    while len(result.tokens) < max_new_tokens and result.tokens[-1] not in stop:
        topk_ids, topk_lp = draft_step(head, tgt, context, bonus, seq_len, depth, topk)
        tree = build_tree(topk_ids, topk_lp, bonus, budget, fanout_cap)
        anc = tree_ancestor_mask(tree)
        node_positions = tree.positions(torch.tensor([seq_len], device=ids.device))
        prefix = torch.ones(1, budget, seq_len, dtype=torch.bool, device=ids.device)
        logits, taps, cache = tgt.forward(tree.tokens, node_positions, cache, torch.cat((prefix, anc), dim=2))
        accepted = accept_tree(tree, anc, target_choices(logits, sampling, generator))

        n_accepted = int(accepted.accept_len)
        path = accepted.path[0, : n_accepted + 1]
        tgt.keep_committed(cache, seq_len, path)
        context = extend_context(head, context, taps[:, path], node_positions[:, path])
        seq_len += n_accepted + 1
        bonus = accepted.bonus
        result.accept_lengths.append(n_accepted + 1)
        result.tokens.extend(accepted.emitted_tokens(tree)[0, : n_accepted + 1].tolist())
        _truncate_at_stop(result.tokens, stop)

    del result.tokens[max_new_tokens:]
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def target_generate(
    target: nn.Module,
    input_ids: Tensor | Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id: Optional[int | Sequence[int]] = None,
    generator: Optional[torch.Generator] = None,
) -> GenerationResult:
    """Plain KV-cached decoding, one target forward per token: the baseline."""
    sampling = SamplingConfig(temperature, top_k, top_p)
    stop = _stop_set(eos_token_id)
    tgt = HFTarget(target, layer_ids=())
    ids = _as_batch(input_ids, tgt.embed_tokens.weight.device)
    start = time.perf_counter()
    positions = torch.arange(ids.shape[1], device=ids.device)[None]
    logits, _, cache = tgt.forward(ids, positions, None, with_taps=False)
    result = GenerationResult(tokens=[])
    while True:
        token = target_choices(logits[:, -1], sampling, generator)
        result.tokens.append(int(token))
        result.accept_lengths.append(1)
        if len(result.tokens) >= max_new_tokens or result.tokens[-1] in stop:
            break
        positions = positions[:, -1:] + 1
        logits, _, cache = tgt.forward(token[:, None], positions, cache, with_taps=False)
    result.seconds = time.perf_counter() - start
    return result


def _as_batch(input_ids: Tensor | Sequence[int], device: torch.device) -> Tensor:
    ids = torch.as_tensor(input_ids, dtype=torch.int64, device=device)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise ValueError(f"the reference engine takes one non-empty prompt, got shape {tuple(ids.shape)}")
    return ids


def _stop_set(eos_token_id: Optional[int | Sequence[int]]) -> frozenset[int]:
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, int):
        return frozenset((eos_token_id,))
    return frozenset(int(t) for t in eos_token_id)


def _truncate_at_stop(tokens: list[int], stop: frozenset[int]) -> None:
    for i, t in enumerate(tokens):
        if t in stop:
            del tokens[i + 1 :]
            return

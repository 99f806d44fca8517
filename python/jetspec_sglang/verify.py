"""Lossless tree verification.

The target scores every tree node in one pass. Each node then gets one
*choice*: the target's next token at that node, the argmax for greedy
decoding or a sample from the processed target distribution otherwise.
The accepted path starts at the root and follows the child whose token equals
its parent's choice; the bonus is the choice at the deepest accepted node.

Why this is lossless: every emitted token is exactly the target's choice given
the accepted prefix; the draft only decides which choices were computed in
advance. Per-node samples are independent, and only those on the walk are
used, so sampling all nodes at once changes nothing. Siblings carry distinct
tokens (a depth's top-K are distinct), so at most one child matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .tree import DraftTree


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """How the target's next token is chosen. ``temperature == 0`` means greedy.

    ``top_k <= 0`` and ``top_p >= 1`` disable those filters.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def target_probs(logits: Tensor, sampling: SamplingConfig) -> Tensor:
    """Temperature, top-k and top-p applied to ``logits: [..., V]``; float32 probabilities.

    Top-p keeps the smallest prefix of the sorted distribution whose mass reaches
    ``top_p`` (the token that crosses it included), as SGLang and HF do.
    """
    if sampling.greedy:
        raise ValueError("greedy decoding has no sampling distribution; use argmax")
    scaled = logits.float() / sampling.temperature
    vocab = scaled.shape[-1]
    if 0 < sampling.top_k < vocab:
        kth = scaled.topk(sampling.top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if sampling.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_p.cumsum(dim=-1) - sorted_p
        sorted_p = sorted_p.masked_fill(mass_before >= sampling.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def target_choices(
    logits: Tensor, sampling: SamplingConfig, generator: Optional[torch.Generator] = None
) -> Tensor:
    """The target's token at every position of ``logits: [..., V]`` -> ``[...]`` int64."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = target_probs(logits, sampling)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


@dataclass(frozen=True, slots=True)
class Acceptance:
    """Result of walking the trees.

    Attributes:
        accepted: ``[bs, N]`` bool, the nodes on the accepted path (root included).
        accept_len: ``[bs]`` int64 accepted draft nodes, root excluded.
        path: ``[bs, D + 1]`` int64 node slots of root and accepted nodes by depth; ``-1`` past the end.
        bonus: ``[bs]`` int64, the target's choice at the deepest accepted node.
    """

    accepted: Tensor
    accept_len: Tensor
    path: Tensor
    bonus: Tensor

    def emitted_tokens(self, tree: DraftTree) -> Tensor:
        """``[bs, D + 1]`` int64 tokens this step commits after the root: accepted nodes, then the bonus; ``-1`` pad."""
        bs, width = self.path.shape
        steps = torch.arange(width, device=self.path.device)
        nxt = self.path[:, 1:].clamp_min(0)
        drafted = tree.tokens.gather(1, nxt)
        out = torch.full((bs, width), -1, dtype=torch.int64, device=self.path.device)
        out[:, :-1] = torch.where(steps[None, :-1] < self.accept_len[:, None], drafted, -1)
        return out.scatter(1, self.accept_len[:, None], self.bonus[:, None])


def accept_tree(tree: DraftTree, anc: Tensor, choices: Tensor) -> Acceptance:
    """Walk each tree along the target's choices, vectorised over nodes.

    A node is accepted iff it and all its ancestors match their parent's choice
    (the root always matches). Nothing here syncs with the host.

    Parameters:
        tree: the draft trees (``N`` slots).
        anc: ``[bs, N, N]`` ancestor-or-self mask of ``tree``.
        choices: ``[bs, N]`` int64 target choice at every node.
    """
    parent_choice = choices.gather(1, tree.parents.clamp_min(0))
    match = (tree.tokens == parent_choice) & tree.valid
    match[:, 0] = True
    accepted = ~(anc & ~match[:, None, :]).any(dim=-1)
    accepted &= tree.valid
    accept_len = accepted.sum(dim=1) - 1
    bs = tree.tokens.shape[0]
    width = tree.max_depth + 1
    path = torch.full((bs, width + 1), -1, dtype=torch.int64, device=choices.device)
    slot = torch.where(accepted, tree.depths, width)  # rejected nodes land in a spill column
    path.scatter_(1, slot, torch.arange(tree.budget, device=choices.device).expand(bs, -1).contiguous())
    path = path[:, :width]
    path = torch.where(torch.arange(width, device=choices.device)[None, :] <= accept_len[:, None], path, -1)
    last = path.gather(1, accept_len[:, None]).squeeze(1)
    bonus = choices.gather(1, last[:, None]).squeeze(1)
    return Acceptance(accepted, accept_len, path, bonus)

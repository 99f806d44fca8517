"""Best-first draft trees from per-depth top-K proposals.

A tree has ``N`` (the budget) node slots per request, the root (the pending bonus
token) in slot 0. Parents always precede children. The builder follows
JetSpec's heap rule: pop the node with the best cumulative log-prob and give it
up to ``min(K, cap_d, budget - n)`` children, the top tokens of the next depth
in rank order. Ties in score are broken by (depth, parent pop order, rank), so
the vectorised builder and the heap reference agree exactly.

``build_tree`` is the vectorised torch builder (a loop over depth, never over
nodes); ``build_tree_reference`` is the per-request heap it is tested against.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

MIN_LOGPROB = -1.0e4
"""Log-probs are clamped to this, so that scores stay finite and ``-inf`` can mark empty slots."""


@dataclass(frozen=True, slots=True)
class FanoutCap:
    """JetSpec's ``top2gap`` fan-out cap.

    A node at depth ``d - 1`` gets at most
    ``cap_d = max(1, round(K * sigmoid(-beta * (lp1_d - lp2_d - g0))))`` children,
    where ``lp1_d, lp2_d`` are the two best log-probs at depth ``d``: a confident
    depth (large gap) gets a narrow fan-out. JetSpec's bench uses beta 2, g0 1.
    """

    beta: float = 2.0
    g0: float = 1.0


@dataclass(frozen=True, slots=True)
class DraftTree:
    """A batch of draft trees, ``N`` node slots each.

    Attributes:
        tokens: ``[bs, N]`` int64; slot 0 is the root; padding slots repeat the root token.
        parents: ``[bs, N]`` int64; ``-1`` at the root and at padding.
        depths: ``[bs, N]`` int64; 0 at the root and at padding.
        scores: ``[bs, N]`` float32 cumulative draft log-prob; ``-inf`` at padding.
        num_nodes: ``[bs]`` int64; slots ``>= num_nodes`` are padding (unreachable leaves).
        max_depth: the deepest level the builder could use (``D``).
    """

    tokens: Tensor
    parents: Tensor
    depths: Tensor
    scores: Tensor
    num_nodes: Tensor
    max_depth: int

    @property
    def budget(self) -> int:
        return self.tokens.shape[1]

    @property
    def valid(self) -> Tensor:
        """``[bs, N]`` bool: real nodes (not padding)."""
        slots = torch.arange(self.budget, device=self.tokens.device)
        return slots[None, :] < self.num_nodes[:, None]

    def positions(self, seq_lens: Tensor) -> Tensor:
        """``[bs, N]`` int64 absolute positions ``seq_lens + depth`` (root at ``seq_lens``)."""
        return seq_lens.to(torch.int64)[:, None] + self.depths


def child_counts(topk_logprobs: Tensor, fanout_cap: Optional[FanoutCap] = None) -> Tensor:
    """Children each node at depth ``d - 1`` may get from depth ``d``: ``[bs, D]`` int64.

    Parameters:
        topk_logprobs: ``[bs, D, K]`` log-probs, best first.
    """
    bs, depth, k = topk_logprobs.shape
    counts = torch.full((bs, depth), k, dtype=torch.int64, device=topk_logprobs.device)
    if fanout_cap is None or k == 1:
        return counts
    lp = topk_logprobs.float().clamp_min(MIN_LOGPROB)
    gap = lp[..., 0] - lp[..., 1]
    cap = torch.round(k * torch.sigmoid(-fanout_cap.beta * (gap - fanout_cap.g0))).to(torch.int64)
    return cap.clamp(1, k)


def build_tree(
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    root_tokens: Tensor,
    budget: int,
    fanout_cap: Optional[FanoutCap] = None,
) -> DraftTree:
    """Build best-first trees for a batch, vectorised over requests and nodes.

    Parameters:
        topk_ids: ``[bs, D, K]`` int64, the draft's top-K tokens at depths ``1..D``, best first.
        topk_logprobs: ``[bs, D, K]`` float log-probs of those tokens (full-vocab normalised).
        root_tokens: ``[bs]`` int64, the pending bonus token of each request.
        budget: node slots ``N`` per tree, root included (>= 1).
        fanout_cap: optional ``top2gap`` cap.

    Returns:
        A ``DraftTree`` identical to ``build_tree_reference`` on the same inputs.
        The build never syncs with the host, so it can run inside a CUDA step.

    Why it is exact: scores only fall along a path, so the heap pops nodes in
    the global (score, depth, parent order, rank) order of the whole K-ary tree,
    and the built tree is the first ``N - 1`` entries of "children of popped
    nodes, in pop order". The pops are among the ``N`` best nodes, which a
    per-depth beam of width ``N`` contains.

    Examples:
        >>> lp = torch.log(torch.tensor([[[0.6, 0.3], [0.9, 0.05]]]))
        >>> ids = torch.tensor([[[5, 6], [7, 8]]])
        >>> t = build_tree(ids, lp, torch.tensor([1]), budget=4)
        >>> t.tokens.tolist(), t.parents.tolist()
        ([[1, 5, 6, 7]], [[-1, 0, 0, 1]])
    """
    _check_inputs(topk_ids, topk_logprobs, root_tokens, budget)
    bs, max_depth, k = topk_ids.shape
    dev = topk_ids.device
    lp = topk_logprobs.float().clamp_min(MIN_LOGPROB)
    counts = child_counts(topk_logprobs, fanout_cap)
    width = budget  # beam per depth; enough to hold every pop (see docstring)
    neg_inf = torch.full((), float("-inf"), device=dev)
    ranks = torch.arange(k, device=dev)

    # Per-depth beams, each sorted in global order restricted to its depth.
    beam_score = [torch.zeros(bs, 1, device=dev)]
    beam_parent = [torch.full((bs, 1), -1, dtype=torch.int64, device=dev)]
    beam_rank = [torch.zeros(bs, 1, dtype=torch.int64, device=dev)]
    for d in range(1, max_depth + 1):
        prev = beam_score[-1]  # [bs, P]
        cand = prev[:, :, None] + lp[:, d - 1, None, :]  # [bs, P, K], parent-major then rank
        allowed = (ranks[None, None, :] < counts[:, d - 1, None, None]) & (prev[:, :, None] > neg_inf)
        cand = torch.where(allowed, cand, neg_inf).flatten(1)
        order = torch.sort(cand, dim=1, descending=True, stable=True).indices[:, :width]
        beam_score.append(cand.gather(1, order))
        beam_parent.append(order // k)
        beam_rank.append(order % k)

    # Global order over all beams: stable sort keeps (depth, within-depth order) for ties.
    sizes = [s.shape[1] for s in beam_score]
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).tolist()
    all_score = torch.cat(beam_score, dim=1)
    all_depth = torch.cat([torch.full((bs, n), d, dtype=torch.int64, device=dev) for d, n in enumerate(sizes)], 1)
    all_parent = torch.cat(
        [torch.where(p >= 0, p + offsets[max(d - 1, 0)], p) for d, p in enumerate(beam_parent)], dim=1
    )
    all_rank = torch.cat(beam_rank, dim=1)
    order = torch.sort(all_score, dim=1, descending=True, stable=True).indices[:, :width]  # [bs, M]
    # Concatenated index -> position in the global order (0 for entries past the cut:
    # only dead entries, whose results are never used, can point there).
    inverse = torch.zeros_like(all_score, dtype=torch.int64).scatter_(
        1, order, torch.arange(order.shape[1], device=dev).expand(bs, -1).contiguous()
    )
    g_score = all_score.gather(1, order)
    g_depth = all_depth.gather(1, order)
    g_rank = all_rank.gather(1, order)
    g_alive = g_score > neg_inf
    g_parent_concat = all_parent.gather(1, order)
    g_parent = torch.where(g_parent_concat >= 0, inverse.gather(1, g_parent_concat.clamp_min(0)), -1)

    # Children of popped nodes, in pop order: entry m owns slots [C[m], C[m] + c[m]).
    expandable = g_alive & (g_depth < max_depth)
    depth_idx = g_depth.clamp_max(max_depth - 1)  # depth of the children, 0-based
    c = torch.where(expandable, counts.gather(1, depth_idx), 0)
    start = torch.cumsum(c, dim=1) - c  # exclusive cumsum
    node_index = torch.where(g_parent >= 0, start.gather(1, g_parent.clamp_min(0)) + g_rank + 1, 0)

    n_child = budget - 1
    slot = start[:, :, None] + ranks[None, None, :]  # [bs, M, K]
    take = (ranks[None, None, :] < c[:, :, None]) & (slot < n_child)
    child_depth = (g_depth + 1)[:, :, None].expand(-1, -1, k)
    per_child = depth_idx[:, :, None].expand(-1, -1, k)
    child_tokens = topk_ids.gather(1, per_child)
    child_scores = g_score[:, :, None] + lp.gather(1, per_child)

    # Scatter children into their slots; entries that do not fit land in a spill column.
    dst = torch.where(take, slot + 1, budget).flatten(1)  # [bs, M*K]
    tokens = root_tokens.to(torch.int64)[:, None].repeat(1, budget + 1)
    parents = torch.full((bs, budget + 1), -1, dtype=torch.int64, device=dev)
    depths = torch.zeros((bs, budget + 1), dtype=torch.int64, device=dev)
    scores = torch.full((bs, budget + 1), float("-inf"), device=dev)
    scores[:, 0] = 0.0
    tokens.scatter_(1, dst, child_tokens.flatten(1))
    parents.scatter_(1, dst, node_index[:, :, None].expand(-1, -1, k).flatten(1))
    depths.scatter_(1, dst, child_depth.flatten(1))
    scores.scatter_(1, dst, child_scores.flatten(1))
    tokens, parents, depths, scores = (t[:, :budget] for t in (tokens, parents, depths, scores))
    num_nodes = 1 + c.sum(dim=1).clamp_max(n_child)
    return DraftTree(tokens, parents, depths, scores, num_nodes, max_depth)


def build_tree_reference(
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    root_tokens: Tensor,
    budget: int,
    fanout_cap: Optional[FanoutCap] = None,
) -> DraftTree:
    """The heap builder, one request and one node at a time (tests only; slow).

    Same parameters and result as ``build_tree``. Heap keys are
    ``(-score, depth, parent pop index, rank)``; scores are summed in float32.
    """
    _check_inputs(topk_ids, topk_logprobs, root_tokens, budget)
    bs, max_depth, k = topk_ids.shape
    lp_all = topk_logprobs.float().clamp_min(MIN_LOGPROB).cpu().numpy()
    ids_all = topk_ids.cpu().numpy()
    counts_all = child_counts(topk_logprobs, fanout_cap).cpu().numpy()
    tokens = np.repeat(root_tokens.cpu().numpy().astype(np.int64)[:, None], budget, axis=1)
    parents = np.full((bs, budget), -1, dtype=np.int64)
    depths = np.zeros((bs, budget), dtype=np.int64)
    scores = np.full((bs, budget), -np.inf, dtype=np.float32)
    num_nodes = np.ones(bs, dtype=np.int64)
    for b in range(bs):
        scores[b, 0] = 0.0
        n = 1
        heap = [(np.float32(-0.0), 0, -1, 0, 0)]
        pops = 0
        while heap and n < budget:
            _, d, _, _, node = heapq.heappop(heap)
            pop_index = pops
            pops += 1
            if d == max_depth:
                continue
            for j in range(min(int(counts_all[b, d]), budget - n)):
                s = np.float32(scores[b, node] + lp_all[b, d, j])
                tokens[b, n], parents[b, n], depths[b, n], scores[b, n] = ids_all[b, d, j], node, d + 1, s
                heapq.heappush(heap, (-s, d + 1, pop_index, j, n))
                n += 1
        num_nodes[b] = n
    dev = topk_ids.device
    as_t = lambda a: torch.from_numpy(a).to(dev)  # noqa: E731
    return DraftTree(as_t(tokens), as_t(parents), as_t(depths), as_t(scores), as_t(num_nodes), max_depth)


def _check_inputs(topk_ids: Tensor, topk_logprobs: Tensor, root_tokens: Tensor, budget: int) -> None:
    if topk_ids.ndim != 3 or topk_ids.shape != topk_logprobs.shape:
        raise ValueError(
            f"topk_ids and topk_logprobs must both be [bs, D, K]; got {tuple(topk_ids.shape)} "
            f"and {tuple(topk_logprobs.shape)}"
        )
    if topk_ids.shape[1] < 1 or topk_ids.shape[2] < 1:
        raise ValueError(f"need at least one depth and one candidate per depth, got [bs, D, K]={tuple(topk_ids.shape)}")
    if root_tokens.shape != topk_ids.shape[:1]:
        raise ValueError(f"root_tokens must be [bs]={topk_ids.shape[0]}, got {tuple(root_tokens.shape)}")
    if budget < 1:
        raise ValueError(f"budget counts the root and must be >= 1, got {budget}")

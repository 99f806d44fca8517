"""Forward-KL distillation loss of the draft head against the frozen target (JetSpec Eq. 8-9).

For block row ``k`` of anchor ``a`` the teacher is the target's next-token
distribution at position ``a + k - 1`` (the distribution of ``x_{a+k}``) and
the student is the head's row ``k`` through the target's ``lm_head``:

    loss = tau^2 * sum_r w_r KL(softmax(t_r / tau) || softmax(s_r / tau)) / sum_r w_r

with ``w_r = exp(-(k - 1) / gamma)`` (1 when ``gamma`` is None) on trained rows
and 0 elsewhere. Everything is computed in float32. Only the teacher rows a
chunk needs are gathered, and with ``chunk_anchors`` the student logits are
recomputed chunk by chunk in the backward pass instead of being stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True, slots=True)
class DistillConfig:
    """Loss settings.

    Attributes:
        temperature: softening ``tau`` of both distributions (the loss is scaled by ``tau^2``).
        gamma: per-depth decay ``exp(-(k - 1) / gamma)``; None weighs every depth equally.
        chunk_anchors: anchors per chunk of student logits; None computes all at once.
    """

    temperature: float = 1.0
    gamma: Optional[float] = None
    chunk_anchors: Optional[int] = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.gamma is not None and not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 or None (uniform), got {self.gamma}")
        if self.chunk_anchors is not None and self.chunk_anchors < 1:
            raise ValueError(f"chunk_anchors must be >= 1 or None, got {self.chunk_anchors}")


@dataclass(frozen=True, slots=True)
class DistillOutput:
    """Loss and summable metrics (all-reduce the sums, then divide).

    Attributes:
        loss: scalar float32, differentiable.
        agree: ``[D]`` float32, rows per depth where the student's argmax equals the teacher's.
        rows: ``[D]`` float32, trained rows per depth.
        chain_len: scalar float32, sum over valid anchors of 1 + the leading run of agreeing
            rows (tokens a chain would commit if the data were the target's greedy output).
        anchors: scalar float32, anchors whose first row is trained.
    """

    loss: Tensor
    agree: Tensor
    rows: Tensor
    chain_len: Tensor
    anchors: Tensor


def depth_weights(num_depths: int, gamma: Optional[float], device: torch.device | str = "cpu") -> Tensor:
    """``[D]`` float32 weights ``exp(-(k - 1) / gamma)`` for depths ``k = 1 .. D`` (ones if None).

    Examples:
        >>> [round(w, 4) for w in depth_weights(3, 1.0).tolist()]
        [1.0, 0.3679, 0.1353]
    """
    k = torch.arange(num_depths, dtype=torch.float32, device=device)
    if gamma is None:
        return torch.ones_like(k)
    return torch.exp(-k / gamma)


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Row-wise ``KL(softmax(t / tau) || softmax(s / tau))`` in float32, without the ``tau^2`` factor.

    Parameters:
        student_logits, teacher_logits: ``[..., V]``, any float dtype.

    Returns:
        ``[...]`` float32.
    """
    t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(dim=-1)


def distill_loss(
    student_hidden: Tensor,
    lm_head: nn.Module,
    teacher_logits: Tensor,
    teacher_index: Tensor,
    valid: Tensor,
    config: DistillConfig,
) -> DistillOutput:
    """The block distillation loss and its metrics.

    Parameters:
        student_hidden: ``[bs, m, D, H]`` head outputs of block rows ``1 .. B-1`` (``D = B - 1``).
        lm_head: the target's output projection ``H -> V`` (frozen).
        teacher_logits: ``[bs, T, V]`` target logits of the sequence (no grad; any float dtype).
        teacher_index: ``[bs, m, D]`` int64 teacher position of each row (``a + k - 1``).
        valid: ``[bs, m, D]`` bool, rows that are trained.
        config: temperature, decay and chunking.

    Returns:
        ``DistillOutput``; the loss is 0 (still differentiable) when no row is valid.
    """
    bs, m, depth, _ = student_hidden.shape
    weights = valid.float() * depth_weights(depth, config.gamma, valid.device)
    batch_idx = torch.arange(bs, device=teacher_logits.device)[:, None, None]

    def chunk_terms(hidden: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        student = lm_head(hidden)  # [bs, c, D, V]
        teacher = teacher_logits[batch_idx, index]  # [bs, c, D, V], only the rows needed
        kl = forward_kl(student, teacher, config.temperature)
        return kl, student.argmax(dim=-1) == teacher.argmax(dim=-1)

    step = config.chunk_anchors or m
    use_checkpoint = config.chunk_anchors is not None and torch.is_grad_enabled()
    kls, agrees = [], []
    for start in range(0, m, step):
        h = student_hidden[:, start : start + step]
        idx = teacher_index[:, start : start + step]
        if use_checkpoint:
            kl, agree = checkpoint(chunk_terms, h, idx, use_reentrant=False)
        else:
            kl, agree = chunk_terms(h, idx)
        kls.append(kl)
        agrees.append(agree)
    kl = torch.cat(kls, dim=1)
    agree = torch.cat(agrees, dim=1) & valid

    scale = config.temperature**2
    loss = scale * (kl * weights).sum() / weights.sum().clamp_min(1e-6)
    first_valid = valid[:, :, 0]
    run = agree.long().cumprod(dim=-1).sum(dim=-1)  # leading agreeing rows per anchor
    return DistillOutput(
        loss=loss,
        agree=agree.float().sum(dim=(0, 1)),
        rows=valid.float().sum(dim=(0, 1)),
        chain_len=((1 + run).float() * first_valid).sum(),
        anchors=first_valid.float().sum(),
    )

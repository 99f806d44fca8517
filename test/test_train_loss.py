"""The forward-KL block loss against a per-position brute-force loop on a tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from jetspec_sglang.train.anchors import block_targets, sample_anchors, training_mask
from jetspec_sglang.train.loss import DistillConfig, depth_weights, distill_loss, forward_kl
from jetspec_sglang.train.trainer import HeadForTraining
from train_fixtures import target_and_blocks, tiny_head, tiny_llama


def _setup(seed: int = 0):
    """Tiny target + head, a batch with uneven responses, and the head's block hidden states."""
    torch.manual_seed(seed)
    target = tiny_llama(seed)
    head = tiny_head(target, block_size=5).train()
    seq_len, block = 21, head.config.block_size
    ids = torch.randint(7, 97, (3, seq_len))
    loss_mask = torch.zeros(3, seq_len, dtype=torch.bool)
    for row, (start, end) in enumerate([(4, 21), (9, 16), (2, 12)]):
        loss_mask[row, start:end] = True
    anchors = sample_anchors(loss_mask, 6, torch.Generator().manual_seed(seed))
    teacher_logits, taps, embeds, blk_pos = target_and_blocks(target, head, ids, anchors)
    hidden = HeadForTraining(head)(taps, embeds, blk_pos, training_mask(anchors, seq_len, block, True))
    hidden = hidden.view(3, anchors.num_anchors, block, -1)[:, :, 1:]
    return target, head, ids, loss_mask, anchors, teacher_logits, hidden


def _brute_force(target, ids, loss_mask, anchors, teacher_logits, hidden, temperature, gamma):
    """Loop over sequences, anchors and rows: KL of x_{a+k}'s teacher vs row k, weighted mean * tau^2."""
    seq_len = ids.shape[1]
    num, den = 0.0, 0.0
    agree = torch.zeros(hidden.shape[2])
    rows = torch.zeros(hidden.shape[2])
    for b in range(ids.shape[0]):
        for j in range(anchors.num_anchors):
            a = int(anchors.positions[b, j])
            if not anchors.valid[b, j]:
                continue
            for k in range(1, hidden.shape[2] + 1):
                if a + k >= seq_len or not loss_mask[b, a + k]:
                    continue
                t = teacher_logits[b, a + k - 1].double()
                with torch.no_grad():
                    s = target.lm_head(hidden[b, j, k - 1]).double()
                log_p, log_q = torch.log_softmax(t / temperature, -1), torch.log_softmax(s / temperature, -1)
                kl = float((log_p.exp() * (log_p - log_q)).sum())
                w = 1.0 if gamma is None else math.exp(-(k - 1) / gamma)
                num, den = num + w * kl, den + w
                agree[k - 1] += float(s.argmax() == t.argmax())
                rows[k - 1] += 1
    return temperature**2 * num / den, agree, rows


@pytest.mark.parametrize("temperature,gamma", [(1.0, None), (2.0, 3.0)])
def test_loss_matches_per_position_loop(temperature: float, gamma: float | None) -> None:
    target, head, ids, loss_mask, anchors, teacher, hidden = _setup()
    index, valid = block_targets(loss_mask, anchors, head.config.block_size)
    out = distill_loss(hidden, target.lm_head, teacher, index, valid, DistillConfig(temperature, gamma))
    ref, agree, rows = _brute_force(target, ids, loss_mask, anchors, teacher, hidden.detach(), temperature, gamma)
    assert out.loss.dtype == torch.float32
    assert abs(float(out.loss.detach()) - ref) <= 1e-5 * max(1.0, abs(ref))
    assert torch.equal(out.agree, agree) and torch.equal(out.rows, rows)


def test_chunked_loss_and_gradients_equal_unchunked() -> None:
    target, head, _, loss_mask, anchors, teacher, hidden = _setup(seed=1)
    index, valid = block_targets(loss_mask, anchors, head.config.block_size)
    results = []
    for chunk in (None, 4):
        head.zero_grad()
        h = hidden.detach().requires_grad_(True)
        out = distill_loss(h, target.lm_head, teacher, index, valid, DistillConfig(1.5, 7.0, chunk_anchors=chunk))
        out.loss.backward()
        results.append((out, h.grad.clone()))
    (full, g_full), (chunked, g_chunk) = results
    torch.testing.assert_close(chunked.loss, full.loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_chunk, g_full, rtol=1e-5, atol=1e-9)
    assert torch.equal(chunked.agree, full.agree) and torch.equal(chunked.chain_len, full.chain_len)


def test_chain_len_counts_leading_agreement() -> None:
    # Vocabulary of 3, one sequence, two anchors, three rows; student = teacher on chosen rows.
    teacher = torch.tensor([[[3.0, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0], [0, 3, 0]]])
    lm_head = torch.nn.Identity()
    index = torch.tensor([[[0, 1, 2], [2, 3, 4]]])
    valid = torch.tensor([[[True, True, True], [True, True, False]]])
    student = teacher[0, index[0]].clone()[None]
    student[0, 0, 1] = torch.tensor([0.0, 0, 5])  # anchor 0 breaks at row 2
    out = distill_loss(student, lm_head, teacher, index, valid, DistillConfig())
    assert out.agree.tolist() == [2.0, 1.0, 1.0]
    assert out.rows.tolist() == [2.0, 2.0, 1.0]
    assert float(out.chain_len) == (1 + 1) + (1 + 2)  # anchor 1's run stops at the invalid row
    assert float(out.anchors) == 2.0


def test_no_valid_rows_gives_zero_loss_and_zero_gradient() -> None:
    h = torch.randn(1, 2, 3, 4, requires_grad=True)
    lm_head = torch.nn.Linear(4, 6)
    out = distill_loss(h, lm_head, torch.randn(1, 5, 6), torch.zeros(1, 2, 3, dtype=torch.int64),
                       torch.zeros(1, 2, 3, dtype=torch.bool), DistillConfig())
    out.loss.backward()
    assert float(out.loss.detach()) == 0.0 and torch.count_nonzero(h.grad) == 0


def test_forward_kl_is_zero_on_equal_logits_and_positive_otherwise() -> None:
    x = torch.randn(4, 11, dtype=torch.bfloat16)
    assert torch.allclose(forward_kl(x, x), torch.zeros(4), atol=1e-6)
    assert (forward_kl(x, torch.randn(4, 11)) > 0).all()
    assert depth_weights(4, None).tolist() == [1.0] * 4


def test_config_rejects_bad_values() -> None:
    for kwargs in ({"temperature": 0.0}, {"gamma": -1.0}, {"chunk_anchors": 0}):
        with pytest.raises(ValueError):
            DistillConfig(**kwargs)

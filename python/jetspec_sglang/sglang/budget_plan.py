"""The tree budget of a verify step, by batch size (``JETSPEC_VERIFY_TOKENS``).

A verify forward pushes ``bs * N`` tokens through every weight of the target. On an H200 the
linear layers of a Qwen3-8B-shaped model cost 1.03x a one-token forward at 16 tokens, 1.17x at
128, 1.49x at 256 and 2.54x at 512 (``benchmark/kernels/linear_floor.py``, results in
``benchmark/results/step_breakdown_h200/``). So a budget that is cheap at bs 1 is ruinous at bs 16:
budget 128 cost 10.2 plain steps there, budget 16 cost 2.5. The worker therefore halves the budget
as the batch grows, until ``bs * N`` fits ``JETSPEC_VERIFY_TOKENS`` (default 128) or the budget
reaches its floor: 16 nodes, and never fewer than the draft block (``depth + 1``) so that a full-depth
chain still fits. ``--speculative-num-draft-tokens`` stays the budget of small batches.
``JETSPEC_VERIFY_TOKENS=0`` verifies the full budget at every batch size.

Raise the cap for small, host-bound targets (where extra tokens are nearly free) or heads whose
acceptance keeps growing with the budget; lower it for larger targets. This module imports no
sglang so it can be tested on CPUs.
"""

from __future__ import annotations

import os

DEFAULT_VERIFY_TOKENS = 128
MIN_BUDGET = 16


def verify_token_cap() -> int:
    """``$JETSPEC_VERIFY_TOKENS``: the tokens one verify forward should hold (0: no cap)."""
    value = os.environ.get("JETSPEC_VERIFY_TOKENS", str(DEFAULT_VERIFY_TOKENS))
    if not value.isdigit():
        raise ValueError(f"JETSPEC_VERIFY_TOKENS must be a whole number of tokens (0 turns the cap off), got {value!r}")
    return int(value)


def budget_for_batch(bs: int, max_budget: int, depth: int, cap: int) -> int:
    """The budget of a verify step of ``bs`` requests: ``max_budget`` halved while ``bs * budget``
    exceeds ``cap`` and a halving stays at or above the floor (``max(16, depth + 1)``)."""
    if bs < 1:
        raise ValueError(f"a verify batch holds at least one request, got {bs}")
    floor = max(MIN_BUDGET, depth + 1)
    budget = max_budget
    while cap and bs * budget > cap and budget // 2 >= floor:
        budget //= 2
    return budget


def budgets_by_batch(batch_sizes: list[int], max_budget: int, depth: int, cap: int) -> dict[int, list[int]]:
    """``{budget: [batch sizes that use it]}`` over ``batch_sizes``, largest budget first."""
    plan: dict[int, list[int]] = {}
    for bs in sorted(set(batch_sizes)):
        plan.setdefault(budget_for_batch(bs, max_budget, depth, cap), []).append(bs)
    return dict(sorted(plan.items(), reverse=True))


def describe(plan: dict[int, list[int]]) -> str:
    """``"budget 128 at bs 1, 64 at bs 2, 32 at bs 3-4"`` for the startup log."""
    parts = [f"{budget} at bs {sizes[0]}" + (f"-{sizes[-1]}" if len(sizes) > 1 else "")
             for budget, sizes in plan.items()]
    return "budget " + ", ".join(parts)

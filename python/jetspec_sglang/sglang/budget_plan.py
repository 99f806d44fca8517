"""The tree budget of a verify step, by batch size (``JETSPEC_VERIFY_TOKENS``).

A verify forward pushes ``bs * N`` tokens through every weight of the target. On an H200 the
linear layers of a Qwen3-8B-shaped model cost 1.03x a one-token forward at 16 tokens, 1.17x at
128, 1.49x at 256 and 2.54x at 512 (``benchmark/kernels/linear_floor.py``, results in
``benchmark/results/step_breakdown_h200/``). So a budget that is cheap at bs 1 is ruinous at bs 16:
budget 128 cost 10.3 plain steps there, budget 16 cost 2.6. The worker therefore halves the budget
as the batch grows, until ``bs * N`` fits the cap or the budget reaches its floor: 16 nodes, and
never fewer than the draft block (``depth + 1``) so that a full-depth chain still fits.
``--speculative-num-draft-tokens`` stays the budget of small batches.

Where the extra tokens start to cost depends on the target's width. The default cap is
``128 * (4096 / hidden_size) ** 1.5`` tokens, never below 128: fitted to the two shapes measured,
128 for the Qwen3-8B shape and about 2400 for SmolLM2-135M (hidden 576), where 2048 verify tokens
cost about what 256 did while the step was bound by the host (H200, fifth session). Since the step is GPU-bound
(the direct verify path), that no longer holds: on an H100 a SmolLM2-shaped step at bs 16 cost 1.80 plain steps
at budget 16 (256 tokens) and 3.28 at budget 128 (2048 tokens; ``benchmark/results/step_breakdown_h100/``, twelfth
session), which suggests a cap near 256 there. The default stays until a run with a trained head measures the
trade of accepted length against that cost (variant ``jetspec-cap256``). ``JETSPEC_VERIFY_TOKENS=N``
sets the cap for a deployment (``benchmark/step_breakdown.py`` measures what each budget costs
there); ``0`` verifies the full budget at every batch size. This module imports no sglang so it can
be tested on CPUs.
"""

from __future__ import annotations

import os
import re

MIN_BUDGET = 16
REFERENCE_WIDTH = 4096  # the Qwen3-8B shape, whose measured cap is REFERENCE_TOKENS
REFERENCE_TOKENS = 128


def default_verify_tokens(hidden_size: int) -> int:
    """The cap for a target of this width when ``JETSPEC_VERIFY_TOKENS`` is unset."""
    return round(REFERENCE_TOKENS * max(1.0, REFERENCE_WIDTH / hidden_size) ** 1.5)


def verify_token_cap(hidden_size: int) -> int:
    """``$JETSPEC_VERIFY_TOKENS``, else ``default_verify_tokens``: the tokens one verify forward should
    hold (0: no cap)."""
    value = os.environ.get("JETSPEC_VERIFY_TOKENS")
    if value is None:
        return default_verify_tokens(hidden_size)
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


LOG_PREFIX = "JETSPEC verifies "
_RANGE_RE = re.compile(r"(\d+) at bs (\d+)(?:-(\d+))?")


def describe(plan: dict[int, list[int]]) -> str:
    """``"budget 128 at bs 1, 64 at bs 2, 32 at bs 3-4"`` for the startup log (the worker's batch sizes are
    contiguous, so each budget's are a range)."""
    parts = [f"{budget} at bs {sizes[0]}" + (f"-{sizes[-1]}" if len(sizes) > 1 else "")
             for budget, sizes in plan.items()]
    return "budget " + ", ".join(parts)


def budget_in_log(log_text: str, bs: int) -> int | None:
    """The budget a server verified batches of ``bs`` requests with, read from its startup log line
    (``LOG_PREFIX`` + ``describe``); None where the log has no such line or range."""
    lines = [line for line in log_text.splitlines() if LOG_PREFIX in line]
    if not lines:
        return None
    for budget, first, last in _RANGE_RE.findall(lines[-1].split(LOG_PREFIX, 1)[1]):
        if int(first) <= bs <= int(last or first):
            return int(budget)
    return None

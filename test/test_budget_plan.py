"""Which tree budget a verify batch uses (``sglang/budget_plan.py``; no sglang needed)."""

from __future__ import annotations

import pytest

from jetspec_sglang.sglang.budget_plan import (
    LOG_PREFIX,
    budget_for_batch,
    budget_in_log,
    budgets_by_batch,
    default_verify_tokens,
    describe,
    verify_token_cap,
)


@pytest.mark.parametrize(
    ("bs", "expected"),
    [(1, 128), (2, 64), (3, 32), (4, 32), (5, 16), (8, 16), (16, 16), (32, 16), (256, 16)],
)
def test_the_budget_halves_until_the_batch_fits_the_cap(bs: int, expected: int) -> None:
    assert budget_for_batch(bs, max_budget=128, depth=15, cap=128) == expected


def test_no_cap_keeps_the_full_budget() -> None:
    assert {budget_for_batch(bs, 128, 15, cap=0) for bs in (1, 7, 64)} == {128}


def test_the_floor_keeps_a_full_depth_chain_and_odd_budgets_halve_down() -> None:
    assert budget_for_batch(32, max_budget=256, depth=31, cap=128) == 32  # not below depth + 1
    assert budget_for_batch(32, max_budget=100, depth=15, cap=128) == 25  # 100 -> 50 -> 25; 12 < 16
    assert budget_for_batch(32, max_budget=12, depth=7, cap=128) == 12  # a budget under the floor stays


def test_budgets_by_batch_groups_batch_sizes_largest_budget_first() -> None:
    plan = budgets_by_batch([4, 1, 2, 3, 8, 2], max_budget=64, depth=4, cap=96)
    assert plan == {64: [1], 32: [2, 3], 16: [4, 8]}
    assert list(plan) == [64, 32, 16]
    assert describe(plan) == "budget 64 at bs 1, 32 at bs 2-3, 16 at bs 4-8"
    assert budgets_by_batch([1, 2, 3, 8], max_budget=48, depth=4, cap=96) == {48: [1, 2], 24: [3, 8]}


def test_a_batch_of_no_requests_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one request"):
        budget_for_batch(0, 64, 15, 128)


def test_the_default_cap_follows_the_target_width() -> None:
    assert default_verify_tokens(4096) == 128  # the Qwen3-8B shape, measured
    assert 2300 < default_verify_tokens(576) < 2500  # SmolLM2-135M: 2048 verify tokens cost about what 256 do
    assert default_verify_tokens(8192) == 128  # never below the reference
    assert default_verify_tokens(1024) > default_verify_tokens(2048) > default_verify_tokens(4096)


def test_the_cap_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JETSPEC_VERIFY_TOKENS", raising=False)
    assert verify_token_cap(4096) == 128 and verify_token_cap(576) == default_verify_tokens(576)
    monkeypatch.setenv("JETSPEC_VERIFY_TOKENS", "0")
    assert verify_token_cap(576) == 0
    monkeypatch.setenv("JETSPEC_VERIFY_TOKENS", "512")
    assert verify_token_cap(4096) == 512
    for bad in ("-4", "many", "1.5"):
        monkeypatch.setenv("JETSPEC_VERIFY_TOKENS", bad)
        with pytest.raises(ValueError, match="JETSPEC_VERIFY_TOKENS"):
            verify_token_cap(4096)


def test_the_startup_log_line_names_each_batch_sizes_budget() -> None:
    plan = budgets_by_batch(list(range(1, 33)), max_budget=128, depth=15, cap=128)
    log = f"noise\n[2026-11-28 18:57:08] {LOG_PREFIX}{describe(plan)} (JETSPEC_VERIFY_TOKENS=128)\nDecode batch"
    assert [budget_in_log(log, bs) for bs in (1, 2, 3, 4, 5, 32)] == [128, 64, 32, 32, 16, 16]
    assert budget_in_log(log, 33) is None and budget_in_log("plain server log", 1) is None

"""Benchmark run metadata: the commit a result names, and the fields every result carries."""

from __future__ import annotations

from jetspec_sglang.run_meta import git_commit, run_metadata


def test_commit_named_by_the_caller_wins_over_the_checkout(monkeypatch) -> None:
    monkeypatch.setenv("JETSPEC_COMMIT", "abc1234")
    assert git_commit() == "abc1234"
    assert run_metadata(())["commit"] == "abc1234"


def test_metadata_names_date_commit_command_and_versions(monkeypatch) -> None:
    monkeypatch.delenv("JETSPEC_COMMIT", raising=False)
    meta = run_metadata(("torch", "no-such-distribution"))
    assert {"date", "gpu", "commit", "command", "torch", "host_python_ms", "no-such-distribution"} <= set(meta)
    assert meta["host_python_ms"] > 0
    assert meta["no-such-distribution"] is None
    assert meta["commit"]  # a short hash, or "unknown" outside git

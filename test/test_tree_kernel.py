"""The fused CUDA tree builder: its algorithm on a CPU model, its source, its wrapper, and the kernel itself.

The CPU model (``tree_kernel_sim``) runs the kernel's thread-level algorithm against
``build_tree_reference`` + ``encode_lineage``; the ``gpu`` tests check the compiled
kernel against the same reference, exactly, field by field.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from jetspec_sglang.kernels import build_tree_fused, empty_tree_outputs
from jetspec_sglang.sglang.lineage import EagleLineage, encode_lineage
from jetspec_sglang.tree import DraftTree, FanoutCap, build_tree_reference, child_counts
from test_tree import random_proposals
from tree_kernel_sim import simulate_request

CSRC = Path(__file__).resolve().parents[1] / "csrc"
TREE_FIELDS = ("tokens", "parents", "depths", "scores", "num_nodes")
LINEAGE_FIELDS = ("top_scores_index", "parent_list", "draft_tokens")


def random_case(gen: torch.Generator, case: int, max_depth: int = 15, max_k: int = 8):
    """Proposals, budget, cap and ``K_enc``; ``case`` cycles budget kinds, exact-tie patterns and the cap."""

    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    bs, depth, k = draw(1, 4), draw(1, max_depth), draw(1, max_k)
    if case % 5 == 4:  # a budget beyond the reachable tree
        depth, k = draw(1, 3), draw(1, 4)
    reachable = sum(k**d for d in range(depth + 1))
    budget = [1, 2, draw(3, 15), draw(16, 256), min(512, reachable + draw(1, 40))][case % 5]
    ids, logprobs, roots = random_proposals(gen, bs, depth, k, quantize=case % 3 == 1)
    if case % 7 == 3:  # every candidate ties
        logprobs = torch.full_like(logprobs, [0.0, -0.5][case % 2])
    if case % 7 == 5:  # -inf tails clamp to MIN_LOGPROB and tie there
        logprobs[..., k // 2 :] = float("-inf")
    cap = FanoutCap(beta=4 * float(torch.rand(1, generator=gen)), g0=2 * float(torch.rand(1, generator=gen)))
    return ids, logprobs, roots, budget, cap if case % 2 == 0 else None, draw(1, 40)


def reference(
    ids, logprobs, roots, budget: int, cap: Optional[FanoutCap], k_enc: int
) -> tuple[DraftTree, EagleLineage]:
    tree = build_tree_reference(ids.cpu(), logprobs.cpu(), roots.cpu(), budget, cap)
    return tree, encode_lineage(tree, k_enc)


def assert_same_outputs(got: tuple[DraftTree, EagleLineage], want: tuple[DraftTree, EagleLineage]) -> None:
    (tree, lineage), (tree_ref, lineage_ref) = got, want
    for name in TREE_FIELDS:
        assert torch.equal(getattr(tree, name).cpu(), getattr(tree_ref, name)), name
    for name in LINEAGE_FIELDS:
        assert torch.equal(getattr(lineage, name).cpu(), getattr(lineage_ref, name)), name
    assert tree.max_depth == tree_ref.max_depth
    assert (lineage.topk, lineage.depth) == (lineage_ref.topk, lineage_ref.depth)


def limit_case(budget: int, depth: int, k: int, capped: bool):
    gen = torch.Generator().manual_seed(budget + depth + k)
    ids, logprobs, roots = random_proposals(gen, 2, depth, k, vocab=64, quantize=capped)
    return ids, logprobs, roots, budget, FanoutCap(beta=1.0, g0=0.5) if capped else None, 33


LIMIT_CASES = [(512, 64, 32), (512, 15, 8), (300, 40, 20), (129, 64, 1), (97, 7, 32)]


# --- the algorithm, on the CPU model ------------------------------------------------------


def simulate(ids, logprobs, roots, budget: int, cap: Optional[FanoutCap], k_enc: int) -> dict[str, np.ndarray]:
    counts = child_counts(logprobs, cap).numpy()
    rows = [
        simulate_request(ids[b].numpy(), logprobs[b].numpy(), int(roots[b]), counts[b], budget, k_enc)
        for b in range(ids.shape[0])
    ]
    return {name: np.array([row[name] for row in rows]) for name in TREE_FIELDS + LINEAGE_FIELDS}


def assert_model_matches_reference(ids, logprobs, roots, budget: int, cap: Optional[FanoutCap], k_enc: int) -> None:
    got = simulate(ids, logprobs, roots, budget, cap, k_enc)
    tree, lineage = reference(ids, logprobs, roots, budget, cap, k_enc)
    for name in TREE_FIELDS:
        assert np.array_equal(got[name], getattr(tree, name).numpy()), name
    for name in LINEAGE_FIELDS:
        assert np.array_equal(got[name], getattr(lineage, name).numpy()), name


def test_kernel_model_matches_heap_reference_on_random_trees() -> None:
    gen = torch.Generator().manual_seed(2024)
    trees = case = 0
    while trees < 1200:
        ids, logprobs, roots, budget, cap, k_enc = random_case(gen, case)
        assert_model_matches_reference(ids, logprobs, roots, budget, cap, k_enc)
        trees, case = trees + ids.shape[0], case + 1


@pytest.mark.parametrize("budget,depth,k", LIMIT_CASES)
@pytest.mark.parametrize("capped", [False, True])
def test_kernel_model_at_the_size_limits(budget: int, depth: int, k: int, capped: bool) -> None:
    assert_model_matches_reference(*limit_case(budget, depth, k, capped))


# --- the source and the wrapper, without a GPU -----------------------------------------------


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_kernel_source_compiles_for_sm90(tmp_path: Path) -> None:
    cmd = ["nvcc", "-c", str(CSRC / "tree_build.cu"), "-gencode", "arch=compute_90,code=sm_90"]
    cmd += ["-o", str(tmp_path / "tree_build.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def cpu_inputs(bs: int = 2, depth: int = 3, k: int = 4):
    return torch.zeros(bs, depth, k, dtype=torch.int64), torch.zeros(bs, depth, k), torch.zeros(bs, dtype=torch.int64)


@pytest.mark.parametrize(
    "depth,k,budget,k_enc,match",
    [(3, 4, 513, 4, "budget <= 512"), (3, 33, 8, 4, "K <= 32"), (65, 4, 8, 4, "D <= 64"),
     (3, 4, 0, 4, "budget"), (3, 4, 8, 0, "lineage_topk")],
)  # fmt: skip
def test_wrapper_rejects_sizes_beyond_the_kernel(depth: int, k: int, budget: int, k_enc: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_tree_fused(*cpu_inputs(depth=depth, k=k), budget, k_enc)


def test_wrapper_rejects_bad_tensors() -> None:
    ids, logprobs, roots = cpu_inputs()
    with pytest.raises(ValueError, match="topk_logprobs must be torch.float32"):
        build_tree_fused(ids, logprobs.double(), roots, 8, 4)
    with pytest.raises(ValueError, match="topk_ids must be torch.int64"):
        build_tree_fused(ids.int(), logprobs, roots, 8, 4)
    with pytest.raises(ValueError, match="contiguous"):
        build_tree_fused(ids.transpose(0, 1).contiguous().transpose(0, 1), logprobs, roots, 8, 4)
    with pytest.raises(ValueError, match="one CUDA device"):
        build_tree_fused(ids, logprobs, roots, 8, 4)


def test_wrapper_rejects_mismatched_out_buffers() -> None:
    ids, logprobs, roots = cpu_inputs()
    with pytest.raises(ValueError, match=r"out tokens must be torch.int64 \(2, 8\)"):
        build_tree_fused(ids, logprobs, roots, 8, 4, out=empty_tree_outputs(2, 9, 3, 4, "cpu"))
    with pytest.raises(ValueError, match="out was made for D=2"):
        build_tree_fused(ids, logprobs, roots, 8, 4, out=empty_tree_outputs(2, 8, 2, 4, "cpu"))
    with pytest.raises(ValueError, match="must be contiguous on cpu, got a tensor on meta"):
        build_tree_fused(ids, logprobs, roots, 8, 4, out=empty_tree_outputs(2, 8, 3, 4, "meta"))


def test_empty_outputs_have_the_lineage_shapes() -> None:
    tree, lineage = empty_tree_outputs(3, 10, 5, 4, "meta")
    assert tree.tokens.shape == tree.scores.shape == (3, 10) and tree.num_nodes.shape == (3,)
    assert lineage.parent_list.shape == (3, 4 * 4 + 1) and lineage.draft_tokens.shape == (3, 9)
    assert empty_tree_outputs(3, 10, 1, 4, "meta")[1].parent_list.shape == (3, 1)


# --- the kernel ------------------------------------------------------------------------------


def poisoned_outputs(bs: int, budget: int, depth: int, k_enc: int) -> tuple[DraftTree, EagleLineage]:
    return poison(empty_tree_outputs(bs, budget, depth, k_enc, "cuda"))


def poison(out: tuple[DraftTree, EagleLineage]) -> tuple[DraftTree, EagleLineage]:
    """Fill the outputs with values the kernel never writes, so an unwritten slot fails the comparison."""
    tree, lineage = out
    for t in [getattr(tree, n) for n in TREE_FIELDS] + [getattr(lineage, n) for n in LINEAGE_FIELDS]:
        t.fill_(float("nan") if t.is_floating_point() else -12345)
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("max_depth,max_k", [(15, 8), (64, 32)])
def test_fused_builder_matches_reference_on_random_trees(max_depth: int, max_k: int) -> None:
    gen = torch.Generator().manual_seed(99 + max_k)
    trees, case, goal = 0, 0, 1000 if max_k == 8 else 200
    while trees < goal:
        ids, logprobs, roots, budget, cap, k_enc = random_case(gen, case, max_depth, max_k)
        out = poisoned_outputs(ids.shape[0], budget, ids.shape[1], k_enc)
        got = build_tree_fused(ids.cuda(), logprobs.cuda(), roots.cuda(), budget, k_enc, cap, out=out)
        assert got is out
        assert_same_outputs(got, reference(ids, logprobs, roots, budget, cap, k_enc))
        trees, case = trees + ids.shape[0], case + 1


@pytest.mark.gpu
@pytest.mark.parametrize("budget,depth,k", LIMIT_CASES)
@pytest.mark.parametrize("capped", [False, True])
def test_fused_builder_at_the_size_limits(budget: int, depth: int, k: int, capped: bool) -> None:
    ids, logprobs, roots, budget, cap, k_enc = limit_case(budget, depth, k, capped)
    out = poisoned_outputs(ids.shape[0], budget, depth, k_enc)
    build_tree_fused(ids.cuda(), logprobs.cuda(), roots.cuda(), budget, k_enc, cap, out=out)
    assert_same_outputs(out, reference(ids, logprobs, roots, budget, cap, k_enc))


@pytest.mark.gpu
def test_fused_builder_never_syncs() -> None:
    ids, logprobs, roots = random_proposals(torch.Generator().manual_seed(5), 3, 6, 4)
    ids, logprobs, roots = ids.cuda(), logprobs.cuda(), roots.cuda()
    build_tree_fused(ids, logprobs, roots, 40, 8, FanoutCap())  # builds and loads the extension
    torch.cuda.set_sync_debug_mode("error")
    try:
        build_tree_fused(ids, logprobs, roots, 40, 8, FanoutCap())
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.parametrize("cap", [None, FanoutCap()])
def test_fused_builder_replays_in_a_cuda_graph(cap: Optional[FanoutCap]) -> None:
    gen = torch.Generator().manual_seed(11)
    bs, depth, k, budget, k_enc = 5, 9, 6, 77, 10
    static = [t.cuda() for t in random_proposals(gen, bs, depth, k)]
    out = poisoned_outputs(bs, budget, depth, k_enc)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (and build) outside the capture
        build_tree_fused(*static, budget, k_enc, cap, out=out)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        build_tree_fused(*static, budget, k_enc, cap, out=out)
    for _ in range(3):
        fresh = random_proposals(gen, bs, depth, k, quantize=True)
        for dst, src in zip(static, fresh):
            dst.copy_(src)
        poison(out)
        graph.replay()
        torch.cuda.synchronize()
        assert_same_outputs(out, reference(*fresh, budget, cap, k_enc))

"""SGLang's verify inputs of a tree: the reference, the CPU model of ``csrc/verify_inputs.cu``, the wrapper, the kernel.

The reference (``tree_layout.eagle_verify_inputs``) reads padding as SGLang reads our lineage;
the CPU model runs the kernel's warp-level algorithm against the reference; the ``gpu`` tests
check the compiled kernel against the reference and against ``sgl_kernel.build_tree_kernel_efficient``
itself, the kernel it replaces.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from jetspec_sglang.kernels import (
    build_tree_fused,
    build_verify_inputs_fused,
    empty_tree_outputs,
    empty_verify_inputs,
    verify_mask_numel,
)
from jetspec_sglang.sglang.lineage import EagleLineage, decode_lineage_reference, encode_lineage, lineage_topk
from jetspec_sglang.tree import DraftTree, build_tree
from jetspec_sglang.tree_layout import TreeMaskMode, VerifyInputs, eagle_verify_inputs, verify_mask, verify_parents
from test_tree import random_proposals
from test_tree_kernel import LIMIT_CASES, limit_case, random_case
from tree_kernel_sim import MaskMemory, simulate_verify_launch

CSRC = Path(__file__).resolve().parents[1] / "csrc"
NODE_FIELDS = ("positions", "retrieve_index", "retrieve_next_token", "retrieve_next_sibling", "draft_tokens")
POISON = 7  # a mask byte the kernel never writes (it writes 0 and 1)
MODES = (TreeMaskMode.FULL_MASK, TreeMaskMode.QLEN_ONLY)


def random_seq_lens(gen: torch.Generator, bs: int, case: int) -> torch.Tensor:
    """Mostly short prefixes; some zero, some long (a few thousand cells per row)."""
    high = [40, 1, 3000][case % 3]
    return torch.randint(0, high, (bs,), generator=gen)


def expected_mask(ref: VerifyInputs, seq_lens: torch.Tensor, n: int, mode: int, fill: bool, numel: int) -> np.ndarray:
    """The mask buffer after a call: the reference's cells (prefix cells too when filled), POISON elsewhere."""
    want = ref.tree_mask.to(torch.uint8)
    if mode == TreeMaskMode.FULL_MASK and not fill:
        prefix = verify_mask(torch.zeros(len(seq_lens), n, n, dtype=torch.bool), seq_lens)[0]
        want = torch.where(prefix, POISON, want)
    buf = np.full(numel, POISON, dtype=np.uint8)
    kept = min(numel, want.numel())
    buf[:kept] = want[:kept].numpy()
    return buf


# --- the reference and the CPU model ----------------------------------------------------------


def test_verify_parents_are_how_sglang_reads_our_lineage() -> None:
    gen = torch.Generator().manual_seed(31)
    for case in range(150):
        ids, logprobs, roots, budget, cap, _ = random_case(gen, case)
        tree = build_tree(ids, logprobs, roots, budget, cap)
        lineage = encode_lineage(tree, lineage_topk(budget, ids.shape[1], ids.shape[2]))
        assert torch.equal(decode_lineage_reference(lineage), verify_parents(tree.parents)), case


def assert_model_matches_reference(tree: DraftTree, seq_lens: torch.Tensor, mode: int, fill: bool, addr: int,
                                   extra: int) -> None:  # fmt: skip
    """Run the model on a POISON-filled buffer of ``extra`` cells more (fewer when < 0) than the mask needs."""
    bs, n = tree.tokens.shape
    ref = eagle_verify_inputs(tree, seq_lens, TreeMaskMode(mode))
    numel = max(bs * n * n, ref.tree_mask.numel() + extra)
    mask = MaskMemory(np.full(numel, POISON, dtype=np.uint8), addr)
    got = simulate_verify_launch(tree.tokens.numpy(), tree.parents.numpy(), seq_lens.numpy(), mode, fill, mask)
    for name in NODE_FIELDS:
        assert np.array_equal(got[name], getattr(ref, name).flatten().numpy()), name
    want = expected_mask(ref, seq_lens, n, mode, fill, numel)
    assert np.array_equal(mask.cells, want)
    assert np.array_equal(mask.writes, (want != POISON).astype(np.int64)), "a cell written twice, or a stray write"


def test_verify_model_matches_reference_on_random_trees() -> None:
    gen = torch.Generator().manual_seed(77)
    trees = case = 0
    while trees < 1000:
        ids, logprobs, roots, budget, cap, _ = random_case(gen, case)
        tree = build_tree(ids, logprobs, roots, budget, cap)
        seq_lens = random_seq_lens(gen, ids.shape[0], case)
        extra = -int(torch.randint(1, 300, (1,), generator=gen)) if case % 11 == 7 else 37  # some buffers too short
        addr = 4096 + int(torch.randint(0, 16, (1,), generator=gen))  # the buffer's alignment
        assert_model_matches_reference(tree, seq_lens, MODES[case % 2], case % 3 != 2, addr, extra)
        trees, case = trees + ids.shape[0], case + 1


@pytest.mark.parametrize("budget,depth,k", LIMIT_CASES)
def test_verify_model_at_the_size_limits(budget: int, depth: int, k: int) -> None:
    ids, logprobs, roots, budget, cap, _ = limit_case(budget, depth, k, capped=True)
    tree = build_tree(ids, logprobs, roots, budget, cap)
    assert_model_matches_reference(tree, torch.tensor([1000, 3]), TreeMaskMode.FULL_MASK, True, 4099, 0)


# --- the source and the wrapper, without a GPU ------------------------------------------------


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_verify_kernel_source_compiles_for_sm90(tmp_path: Path) -> None:
    cmd = ["nvcc", "-c", str(CSRC / "verify_inputs.cu"), "-gencode", "arch=compute_90,code=sm_90"]
    result = subprocess.run([*cmd, "-o", str(tmp_path / "verify_inputs.o")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def cpu_case(bs: int = 2, n: int = 6) -> tuple[DraftTree, torch.Tensor, VerifyInputs]:
    ids, logprobs, roots = random_proposals(torch.Generator().manual_seed(0), bs, 3, 2)
    tree = build_tree(ids, logprobs, roots, n)
    tree = DraftTree(tree.tokens.contiguous(), tree.parents.contiguous(), tree.depths, tree.scores, tree.num_nodes, 3)
    return tree, torch.full((bs,), 5), empty_verify_inputs(bs, n, bs * n * (5 + n), "cpu")


def test_wrapper_rejects_bad_arguments() -> None:
    tree, seq_lens, out = cpu_case()
    full = TreeMaskMode.FULL_MASK
    with pytest.raises(ValueError, match=r"mask_mode must be FULL_MASK \(0\) or QLEN_ONLY \(1\), got 2"):
        build_verify_inputs_fused(tree, seq_lens, 2, out)
    with pytest.raises(ValueError, match=r"seq_lens must be contiguous torch.int64 \(2,\)"):
        build_verify_inputs_fused(tree, seq_lens.int(), full, out)
    with pytest.raises(ValueError, match="tokens must be contiguous"):  # build_tree's are slices
        build_verify_inputs_fused(build_tree(*random_proposals(torch.Generator(), 2, 3, 2), 6), seq_lens, full, out)
    with pytest.raises(ValueError, match=r"tree_mask needs at least bs \* N \* N = 72 cells, got 71"):
        build_verify_inputs_fused(tree, seq_lens, full, dataclasses.replace(out, tree_mask=out.tree_mask[:71]))
    with pytest.raises(ValueError, match="tree_mask must be a contiguous 1-D bool or uint8"):
        build_verify_inputs_fused(tree, seq_lens, full, dataclasses.replace(out, tree_mask=out.tree_mask.float()))
    with pytest.raises(ValueError, match="one CUDA device"):
        build_verify_inputs_fused(tree, seq_lens, full, out)
    with pytest.raises(ValueError, match="N <= 512"):
        build_verify_inputs_fused(cpu_case(1, 513)[0], torch.zeros(1, dtype=torch.int64), full, out)


def test_mask_numel_and_empty_outputs() -> None:
    assert verify_mask_numel(TreeMaskMode.FULL_MASK, 3, 10, 1000) == 10 * 1000 + 3 * 100
    assert verify_mask_numel(TreeMaskMode.QLEN_ONLY, 3, 10, 1000) == 300
    out = empty_verify_inputs(3, 10, 300, "meta", torch.uint8)
    assert out.tree_mask.shape == (300,) and out.tree_mask.dtype == torch.uint8
    assert out.positions.shape == out.draft_tokens.shape == (30,) and out.retrieve_next_sibling.shape == (3, 10)


# --- the kernel ---------------------------------------------------------------------------------


def poison(out: VerifyInputs) -> VerifyInputs:
    """Fill the outputs with values the kernel never writes, so an unwritten slot fails the comparison."""
    out.tree_mask.view(torch.uint8).fill_(POISON)
    for name in NODE_FIELDS:
        getattr(out, name).fill_(-12345)
    return out


def poisoned_outputs(bs: int, n: int, numel: int, mask_dtype: torch.dtype, offset: int) -> VerifyInputs:
    """Poisoned outputs whose mask starts ``offset`` bytes into its allocation (unaligned when ``offset % 16``)."""
    mask = torch.empty(numel + offset, dtype=mask_dtype, device="cuda")[offset:]
    return poison(dataclasses.replace(empty_verify_inputs(bs, n, 0, "cuda"), tree_mask=mask))


def assert_kernel_matches_reference(out: VerifyInputs, tree: DraftTree, seq_lens: torch.Tensor, mode: int,
                                    fill: bool) -> None:  # fmt: skip
    tree_cpu = DraftTree(*(getattr(tree, f).cpu() for f in ("tokens", "parents", "depths", "scores", "num_nodes")),
                         max_depth=tree.max_depth)  # fmt: skip
    ref = eagle_verify_inputs(tree_cpu, seq_lens.cpu(), TreeMaskMode(mode))
    for name in NODE_FIELDS:
        assert torch.equal(getattr(out, name).cpu(), getattr(ref, name).reshape(getattr(out, name).shape)), name
    want = expected_mask(ref, seq_lens.cpu(), tree.budget, mode, fill, out.tree_mask.numel())
    assert np.array_equal(out.tree_mask.view(torch.uint8).cpu().numpy(), want)


@pytest.mark.gpu
def test_fused_verify_inputs_match_reference_on_random_trees() -> None:
    gen = torch.Generator().manual_seed(404)
    trees = case = 0
    while trees < 1000:
        ids, logprobs, roots, budget, cap, k_enc = random_case(gen, case)
        bs, mode, fill = ids.shape[0], MODES[case % 2], case % 3 != 2
        tree, _ = build_tree_fused(ids.cuda(), logprobs.cuda(), roots.cuda(), budget, k_enc, cap)
        seq_lens = random_seq_lens(gen, bs, case)
        numel = verify_mask_numel(mode, bs, budget, int(seq_lens.sum()))
        numel = max(bs * budget * budget, numel - 100 if case % 11 == 7 else numel + 37)  # some buffers too short
        out = poisoned_outputs(bs, budget, numel, [torch.bool, torch.uint8][case // 2 % 2], case % 16)
        assert build_verify_inputs_fused(tree, seq_lens.cuda(), mode, out, fill) is out
        assert_kernel_matches_reference(out, tree, seq_lens, mode, fill)
        trees, case = trees + bs, case + 1


@pytest.mark.gpu
@pytest.mark.parametrize("budget,depth,k", LIMIT_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_fused_verify_inputs_at_the_size_limits(budget: int, depth: int, k: int, mode: TreeMaskMode) -> None:
    ids, logprobs, roots, budget, cap, k_enc = limit_case(budget, depth, k, capped=True)
    tree, _ = build_tree_fused(ids.cuda(), logprobs.cuda(), roots.cuda(), budget, k_enc, cap)
    seq_lens = torch.tensor([5000, 1])
    out = poisoned_outputs(2, budget, verify_mask_numel(mode, 2, budget, 5001), torch.bool, 3)
    build_verify_inputs_fused(tree, seq_lens.cuda(), mode, out)
    assert_kernel_matches_reference(out, tree, seq_lens, mode, True)


def sgl_kernel_or_skip() -> ModuleType:
    try:
        import sgl_kernel
    except (ImportError, OSError) as err:  # OSError: a wheel built for another CUDA or torch
        pytest.skip(f"needs sgl_kernel (SGLang's CUDA kernels), which does not import here: {err}")
    return sgl_kernel


def sgl_verify_inputs(
    roots: torch.Tensor, lineage: EagleLineage, seq_lens: torch.Tensor, n: int, mode: int
) -> VerifyInputs:
    """SGLang 0.5.17's ``eagle_utils.build_tree_kernel_efficient`` on a GPU, with the buffers it allocates itself."""
    sgl_kernel = sgl_kernel_or_skip()
    bs = roots.shape[0]
    mask = torch.full((verify_mask_numel(mode, bs, n, int(seq_lens.sum())),), True, dtype=torch.bool, device="cuda")
    lists = torch.full((3, bs, n), -1, dtype=torch.int64, device="cuda")
    positions = torch.empty(bs * n, dtype=torch.int64, device="cuda")
    sgl_kernel.build_tree_kernel_efficient(
        lineage.parent_list, lineage.top_scores_index, seq_lens, mask, positions, *lists,
        lineage.topk, lineage.depth, n, int(mode),
    )  # fmt: skip
    return VerifyInputs(mask, positions, *lists, torch.cat((roots[:, None], lineage.draft_tokens), dim=1).flatten())


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_fused_verify_inputs_equal_sglang_tree_kernel(mode: TreeMaskMode) -> None:
    gen = torch.Generator().manual_seed(505 + mode)
    trees = case = 0
    while trees < 300:
        ids, logprobs, roots, budget, cap, _ = random_case(gen, case)
        ids, logprobs, roots = ids.cuda(), logprobs.cuda(), roots.cuda()
        tree, lineage = build_tree_fused(ids, logprobs, roots, budget, lineage_topk(budget, *ids.shape[1:]), cap)
        seq_lens = random_seq_lens(gen, ids.shape[0], case).cuda()
        want = sgl_verify_inputs(roots, lineage, seq_lens, budget, mode)
        out = poisoned_outputs(ids.shape[0], budget, want.tree_mask.numel(), torch.bool, 0)
        build_verify_inputs_fused(tree, seq_lens, mode, out)
        for name in ("tree_mask", *NODE_FIELDS):
            assert torch.equal(getattr(out, name), getattr(want, name)), (case, name)
        trees, case = trees + ids.shape[0], case + 1


@pytest.mark.gpu
def test_fused_verify_inputs_never_sync() -> None:
    ids, logprobs, roots = (t.cuda() for t in random_proposals(torch.Generator().manual_seed(5), 3, 6, 4))
    tree, _ = build_tree_fused(ids, logprobs, roots, 40, 8)
    seq_lens = torch.tensor([9, 0, 100], device="cuda")
    out = poisoned_outputs(3, 40, verify_mask_numel(TreeMaskMode.FULL_MASK, 3, 40, 109), torch.bool, 0)
    build_verify_inputs_fused(tree, seq_lens, TreeMaskMode.FULL_MASK, out)  # builds and loads the extension
    torch.cuda.set_sync_debug_mode("error")
    try:
        build_verify_inputs_fused(tree, seq_lens, TreeMaskMode.FULL_MASK, out)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_tree_and_verify_inputs_replay_in_a_cuda_graph(mode: TreeMaskMode) -> None:
    gen = torch.Generator().manual_seed(12)
    bs, depth, k, budget, k_enc, max_seq_len = 5, 9, 6, 77, 10, 500
    static = [t.cuda() for t in random_proposals(gen, bs, depth, k)]
    seq_lens = torch.zeros(bs, dtype=torch.int64, device="cuda")
    tree_out = empty_tree_outputs(bs, budget, depth, k_enc, "cuda")
    out = poisoned_outputs(bs, budget, verify_mask_numel(mode, bs, budget, bs * max_seq_len), torch.uint8, 0)

    def step() -> None:
        tree, _ = build_tree_fused(*static, budget, k_enc, out=tree_out)
        build_verify_inputs_fused(tree, seq_lens, mode, out)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (and build) outside the capture
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for _ in range(3):
        fresh = random_proposals(gen, bs, depth, k, quantize=True)
        for dst, src in zip(static, fresh):
            dst.copy_(src)
        seq_lens.copy_(torch.randint(0, max_seq_len, (bs,), generator=gen))
        poison(out)
        graph.replay()
        torch.cuda.synchronize()
        assert_kernel_matches_reference(out, build_tree(*fresh, budget), seq_lens.cpu(), mode, True)

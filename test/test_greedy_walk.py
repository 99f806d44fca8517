"""``kernels.greedy_walk``: the one-launch greedy acceptance against SGLang's walk, written out in Python, and that
walk against the core's ``accept_tree``.

Without CUDA the Triton kernel runs in Triton's interpreter, in a fresh process (``triton_interpreter``). Every
output buffer starts as garbage, so an output the kernel forgets to write shows up; padding rows (root-only trees,
as ``pad_verify_inputs`` leaves them) must accept, move and commit nothing.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from jetspec_sglang.kernels.greedy_walk import WalkOutputs, greedy_walk, select_accept_walk
from jetspec_sglang.tree import build_tree
from jetspec_sglang.tree_layout import TreeMaskMode, eagle_verify_inputs, tree_ancestor_mask
from jetspec_sglang.verify import accept_tree
from test_greedy_accept import target_choices_along
from test_tree import random_proposals
from triton_interpreter import compiled_or_interpreted

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
VOCAB = 40
# (rows, real requests, budget N, depth D, top-K): full batches, padded ones, a budget past a power of 2, a chain
CASES = ((4, 4, 24, 5, 4), (4, 2, 24, 5, 4), (3, 3, 33, 8, 3), (2, 0, 16, 4, 4), (1, 1, 64, 15, 2), (2, 2, 12, 11, 1))


def sglang_walk(choices: list[int], candidates: list[int], next_token: list[int], next_sibling: list[int],
                width: int) -> list[int]:
    """The nodes SGLang's ``verify_tree_greedy`` accepts in one tree, root first."""
    path = [0]
    for _ in range(1, width):
        child = next_token[path[-1]]
        while child != -1 and candidates[child] != choices[path[-1]]:
            child = next_sibling[child]
        if child == -1:
            break
        path.append(child)
    return path


def walk_case(seed: int, rows: int, real: int, n: int, depth: int, topk: int) -> dict:
    """A batch of verified trees: the kernel's inputs, the target's choices, and which rows are padding."""
    gen = torch.Generator().manual_seed(seed)
    tree = build_tree(*random_proposals(gen, rows, depth, topk, VOCAB), n)
    seq_lens = torch.randint(0, 500, (rows,), generator=gen)
    lists = eagle_verify_inputs(tree, seq_lens, TreeMaskMode.QLEN_ONLY)
    is_real = torch.arange(rows) < real
    root_only = lambda t: torch.where(is_real[:, None], t, -1)  # noqa: E731  (padding: what pad_verify_inputs leaves)
    return {
        "tree": tree,
        "inputs": [t.contiguous() for t in (
            target_choices_along(tree, gen), tree.tokens, lists.retrieve_index, root_only(lists.retrieve_next_token),
            root_only(lists.retrieve_next_sibling), is_real, seq_lens,
            torch.randperm(rows * n + 100, generator=gen)[: rows * n].view(rows, n) + 1)],
        "width": depth + 1,
    }  # fmt: skip


def expected(case: dict) -> dict[str, torch.Tensor]:
    """``WalkOutputs`` as ``greedy_walk`` defines them, from ``sglang_walk``."""
    choices, candidates, index, next_token, next_sibling, is_real, seq_lens, slots = case["inputs"]
    rows, n = choices.shape
    w = case["width"]
    out = {k: torch.zeros_like(v) for k, v in WalkOutputs.empty(rows, n, w, "cpu")._asdict().items()}
    for b in range(rows):
        path = sglang_walk(choices[b].tolist(), candidates[b].tolist(), next_token[b].tolist(),
                           next_sibling[b].tolist(), w)  # fmt: skip
        length = len(path) if is_real[b] else 0
        out["bonus"][b] = choices[b, path[-1]]
        out["new_seq_lens"][b] = seq_lens[b] + length
        if not length:
            continue
        out["predict"][b, :length] = choices[b, path]
        out["accept_lens"][b] = length
        out["accepted_nodes"][b, :length] = index[b, path]
        out["move_tgt"][b * w : b * w + length] = slots[b, :length]
        out["move_src"][b * w : b * w + length] = slots[b, path]
    return out


def fused_equals_walk() -> dict:
    """Per case: the outputs in which the kernel (on ``DEVICE``) and ``expected`` differ."""
    results = {}
    for seed, (rows, real, n, depth, topk) in enumerate(CASES):
        case = walk_case(seed, rows, real, n, depth, topk)
        gen = torch.Generator().manual_seed(100 + seed)
        out = WalkOutputs(*(torch.randint(-9, 10**6, t.shape, generator=gen, dtype=t.dtype).to(DEVICE)
                            for t in WalkOutputs.empty(rows + 2, n, case["width"], "cpu"))).rows(rows)  # fmt: skip
        greedy_walk(*(t.to(DEVICE) for t in case["inputs"]), out)
        want = expected(case)
        results[case_name(rows, real, n, depth, topk)] = [k for k, v in out._asdict().items()
                                                          if not torch.equal(v.cpu(), want[k])]  # fmt: skip
    return results


def case_name(rows: int, real: int, n: int, depth: int, topk: int) -> str:
    return f"{real} of {rows} rows, N {n}, D {depth}, K {topk}"


@pytest.fixture(scope="module")
def results() -> dict:
    return compiled_or_interpreted("test_greedy_walk", "fused_equals_walk")


@needs_triton
@pytest.mark.parametrize("name", [case_name(*c) for c in CASES])
def test_one_launch_writes_what_sglang_walk_accepts(results: dict, name: str) -> None:
    assert results[name] == [], f"outputs that differ: {results[name]}"


@pytest.mark.parametrize("case", CASES, ids=[case_name(*c) for c in CASES])
def test_sglang_walk_accepts_what_the_core_accepts(case: tuple) -> None:
    """The Python walk the kernel is checked against is the core's acceptance rule, and the cases go deep."""
    c = walk_case(CASES.index(case), *case)
    tree, (choices, candidates, _, next_token, next_sibling, is_real, *_) = c["tree"], c["inputs"]
    ref = accept_tree(tree, tree_ancestor_mask(tree), choices)
    for b in range(int(is_real.sum())):
        path = sglang_walk(choices[b].tolist(), candidates[b].tolist(), next_token[b].tolist(),
                           next_sibling[b].tolist(), c["width"])  # fmt: skip
        assert path == ref.path[b, : int(ref.accept_len[b]) + 1].tolist()


def test_the_cases_accept_deep_paths() -> None:
    """Paths several levels deep, so that a kernel which stops early or compacts wrongly fails."""
    deepest = []
    for seed, case in enumerate(CASES):
        c = walk_case(seed, *case)
        ref = accept_tree(c["tree"], tree_ancestor_mask(c["tree"]), c["inputs"][0])
        deepest.append(int(ref.accept_len[c["inputs"][5]].max(0).values) if c["inputs"][5].any() else 0)
    assert max(deepest) >= 6 and sum(d >= 2 for d in deepest) >= 4, deepest


@needs_triton
def test_the_kernel_compiles_for_hopper() -> None:
    """The interpreter never runs Triton's compiler; this builds the kernel for sm_90 (no GPU needed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from jetspec_sglang.kernels import greedy_walk_triton as kernels

    constexprs = dict(BLOCK_W=16, BLOCK_N=64)
    pointers = {"real": "*i1", "predict": "*i32", "accept_lens": "*i32", "bonus": "*i32"}
    signature = {name: "constexpr" if name in constexprs else "i32" if name in ("n", "width")
                 else pointers.get(name, "*i64") for name in kernels.greedy_walk_rows.arg_names}  # fmt: skip
    triton.compile(ASTSource(kernels.greedy_walk_rows, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": 1})


def test_a_wrong_dtype_is_refused() -> None:
    c = walk_case(0, *CASES[0])
    c["inputs"][0] = c["inputs"][0].int()
    with pytest.raises(ValueError, match="contiguous int64"):
        greedy_walk(*c["inputs"], WalkOutputs.empty(4, 24, 6, "cpu"))


def test_switch_takes_sglang_or_fused(monkeypatch) -> None:
    monkeypatch.delenv("JETSPEC_ACCEPT_WALK", raising=False)
    assert select_accept_walk() == "sglang"
    monkeypatch.setenv("JETSPEC_ACCEPT_WALK", "fused")
    assert select_accept_walk() == "fused"
    monkeypatch.setenv("JETSPEC_ACCEPT_WALK", "triton")
    with pytest.raises(ValueError, match="JETSPEC_ACCEPT_WALK must be one of"):
        select_accept_walk()

"""``tree_attention`` against its float64 reference, ``tree_attention_reference``.

Without CUDA the Triton kernels run in Triton's interpreter, in a fresh process (see
``case_results``) with the interpreter's bfloat16 arithmetic made the GPU's; with CUDA the same
cases, and the ``gpu`` tests at serving sizes, run the compiled kernels. The tolerance is
flash-attention's: at most twice the error of the same computation done by PyTorch in the inputs'
dtype (bfloat16, or float32 for the fp32 cases), plus 1e-6 for cases where both are exact. Outputs are NaN-filled first, and the KV pool's unused
slots hold NaN, so unwritten rows and reads past a request's keys both show up as NaN.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from jetspec_sglang.kernels import tree_attention, tree_attention_reference, tree_mask_from_parents
from jetspec_sglang.kernels.tree_attention import (
    MAX_SPLITS,
    MERGE_WARPS,
    MIN_SPLIT_KEYS,
    Tile,
    _tile_config,
    build_tree_mask,
    merge_counter_slots,
    unpack_tree_mask,
)
from jetspec_sglang.tree import DraftTree, build_tree
from jetspec_sglang.tree_layout import TreeMaskMode, ancestor_mask, eagle_verify_inputs, verify_parents
from test_tree import random_proposals
from triton_interpreter import interpreted

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="needs triton (pip install triton)"
)

# name: make_inputs arguments, plus num_splits / max_prefix_len (default: max(prefix_lens)) / min_split_keys (the
# keys per active split: small here, so that requests of one batch use different numbers of the grid's splits).
CASES = {
    "one node, no prefix (o = v)": dict(n=1, prefix_lens=[0], num_kv_heads=1, group=1),
    "GQA 4, default splits": dict(n=3, prefix_lens=[97], num_kv_heads=2, group=4),
    "bs 3, one split": dict(n=3, prefix_lens=[0, 97, 5], num_kv_heads=1, group=4, num_splits=1),
    "3 of 3 splits and 1, 3 heads": dict(n=16, prefix_lens=[97, 0], num_kv_heads=3, group=1, num_splits=3,
                                         min_split_keys=32),
    "2 splits and 1, GQA 4": dict(n=16, prefix_lens=[97, 1, 40], num_kv_heads=1, group=4, num_splits=2,
                                  min_split_keys=32),
    "4 and 3 splits, N 1": dict(n=1, prefix_lens=[97, 33], num_kv_heads=2, group=4, num_splits=4, min_split_keys=16),
    "N 100: 4 mask words, 2 tree tiles, an empty split": dict(n=100, prefix_lens=[5, 0], num_kv_heads=1, group=2,
                                                              num_splits=2, min_split_keys=4),
    "prefix past max_prefix_len": dict(n=3, prefix_lens=[150, 20], num_kv_heads=1, group=4, num_splits=2,
                                       max_prefix_len=64, min_split_keys=32),
    "short prefixes in a grid of 8 splits": dict(n=16, prefix_lens=[40, 3], num_kv_heads=2, group=2, num_splits=8),
    "float32 (IEEE dots), GQA 4": dict(n=16, prefix_lens=[97, 5], num_kv_heads=1, group=4, dtype="float32"),
    "float32, 2 splits and 1, N 100": dict(n=100, prefix_lens=[70, 0], num_kv_heads=2, group=1, num_splits=2,
                                           dtype="float32", min_split_keys=32),
    "window 2: nodes see the prefix's last keys and near ancestors": dict(n=16, prefix_lens=[97, 5], num_kv_heads=1,
                                                                         group=4, sliding_window=2),
    "window 40 over 3 splits: the first splits see nothing": dict(n=16, prefix_lens=[97, 40, 0], num_kv_heads=2,
                                                                 group=2, num_splits=3, min_split_keys=32,
                                                                 sliding_window=40),
    "float32, window 0: each node sees itself only": dict(n=8, prefix_lens=[20, 3], num_kv_heads=1, group=2,
                                                         dtype="float32", sliding_window=0),
    "tile 32x128x4x2: 2 row tiles, 128-key tiles, 2 splits and 1": dict(n=16, prefix_lens=[97, 1, 40], num_kv_heads=1,
                                                                       group=4, num_splits=2, min_split_keys=32,
                                                                       tile="32x128x4x2"),
    "tile 16x32x2x1, window 5": dict(n=8, prefix_lens=[40, 3], num_kv_heads=2, group=2, sliding_window=5,
                                     tile="16x32x2x1"),
}  # fmt: skip
# Cases with requests of several active splits, run again with the last split merging (``merge_counters``).
FUSED_MERGE_CASES = ("3 of 3 splits and 1, 3 heads", "2 splits and 1, GQA 4", "4 and 3 splits, N 1",
                     "N 100: 4 mask words, 2 tree tiles, an empty split", "prefix past max_prefix_len",
                     "float32, 2 splits and 1, N 100",
                     "window 40 over 3 splits: the first splits see nothing",
                     "tile 32x128x4x2: 2 row tiles, 128-key tiles, 2 splits and 1")  # fmt: skip


def random_parents(gen: torch.Generator, bs: int, n: int) -> torch.Tensor:
    """``[bs, N]`` int64 random trees, nodes in random order (a parent may follow its child), -1 at the root."""
    topo = (torch.rand(bs, n, generator=gen) * torch.arange(n)).long()  # node i hangs under a node < i
    topo[:, 0] = -1
    rename = torch.argsort(torch.rand(bs, n, generator=gen), dim=1)  # node i becomes rename[b, i]
    parents = torch.empty_like(topo)
    return parents.scatter_(1, rename, torch.where(topo >= 0, rename.gather(1, topo.clamp_min(0)), -1))


def make_inputs(seed: int, n: int, prefix_lens: list[int], num_kv_heads: int, group: int, head_dim: int,
                dtype: str = "bfloat16") -> tuple:
    """``tree_attention``'s tensor inputs on ``DEVICE``, in a shuffled pool whose unused slots hold NaN.

    Each request's ``req_to_token`` row points at NaN slots past ``prefix_len + N`` (and spare rows
    are all NaN slots), so a kernel that reads beyond its keys produces NaN.
    """
    gen = torch.Generator().manual_seed(seed)
    bs, used = len(prefix_lens), sum(prefix_lens) + len(prefix_lens) * n
    pool = used + 7
    k_buffer = torch.randn(pool, num_kv_heads, head_dim, generator=gen).to(getattr(torch, dtype))
    v_buffer = torch.randn(pool, num_kv_heads, head_dim, generator=gen).to(getattr(torch, dtype))
    order = torch.randperm(pool, generator=gen)
    k_buffer[order[used:]] = float("nan")
    v_buffer[order[used:]] = float("nan")
    req_to_token = torch.full((bs + 2, max(prefix_lens) + n + 5), int(order[used]), dtype=torch.int32)
    req_pool_indices = torch.randperm(bs + 2, generator=gen)[:bs]
    start = 0
    for row, prefix_len in zip(req_pool_indices.tolist(), prefix_lens):
        req_to_token[row, : prefix_len + n] = order[start : start + prefix_len + n]
        start += prefix_len + n
    q = torch.randn(bs * n, num_kv_heads * group, head_dim, generator=gen).to(getattr(torch, dtype))
    tree_mask = tree_mask_from_parents(random_parents(gen, bs, n), max_depth=n - 1)
    tensors = (q, k_buffer, v_buffer, req_to_token, req_pool_indices, torch.tensor(prefix_lens, dtype=torch.int32),
               tree_mask)  # fmt: skip
    return tuple(t.to(DEVICE) for t in tensors)


def measure(inputs: tuple, max_prefix_len: int, num_splits: int | None = None,
            min_split_keys: int = MIN_SPLIT_KEYS, fused_merge: bool = False, sliding_window: int = -1,
            tile: str | None = None) -> dict:
    """Run the kernel into a NaN-filled buffer; its error and PyTorch's in q's dtype against the float64 reference.
    ``fused_merge``: the last split merges (``merge_counters``), which must leave every ticket at zero.
    ``sliding_window``: each node at its position, prefix length plus depth, sees that many positions back.
    ``tile``: a launch configuration (``Tile.parse``) instead of the one chosen by size."""
    tile = None if tile is None else Tile.parse(tile)
    q, k_buffer = inputs[0], inputs[1]
    sm_scale = q.shape[-1] ** -0.5
    window = dict(sliding_window=sliding_window, positions=node_positions(inputs[5], inputs[6]))
    out = torch.full_like(q, float("nan"))
    slots = merge_counter_slots(inputs[-1].shape[0], inputs[-1].shape[1], q.shape[1], k_buffer.shape[1], q.shape[2],
                                q.dtype, tile)  # fmt: skip
    counters = torch.zeros(slots + 3, dtype=torch.int32, device=q.device) if fused_merge else None
    got = tree_attention(*inputs, sm_scale, max_prefix_len, out=out, num_splits=num_splits,
                         min_split_keys=min_split_keys, merge_counters=counters, tile=tile, **window)
    want = tree_attention_reference(*inputs, sm_scale, **window)
    baseline = tree_attention_reference(*inputs, sm_scale, dtype=q.dtype, **window)
    return {
        "wrote_out": got is out,
        "nan": bool(got.isnan().any()),
        "err": (got.double() - want).abs().max().item(),
        "baseline_err": (baseline.double() - want).abs().max().item(),
        "tickets_left": 0 if counters is None else int(counters.abs().sum()),
    }


def node_positions(prefix_lens: torch.Tensor, tree_mask: torch.Tensor) -> torch.Tensor:
    """``[bs * N]`` int64: each node's position, its request's prefix length plus its depth (ancestors, self
    excluded), as SGLang positions a verified tree."""
    depth = unpack_tree_mask(tree_mask).sum(-1) - 1
    return (prefix_lens[:, None].to(torch.int64) + depth).flatten()


def assert_accurate(result: dict) -> None:
    assert result["wrote_out"], "the output is not the caller's buffer"
    assert not result["nan"], "rows left unwritten, or a read past the request's keys"
    assert result["tickets_left"] == 0, "the last split did not reset its merge ticket"
    err, baseline_err = result["err"], result["baseline_err"]
    assert err <= 2 * baseline_err + 1e-6, f"error {err:.3g}, PyTorch's in the same dtype {baseline_err:.3g}"


MASK_SIZES = (1, 2, 31, 32, 33, 100, 256)


def mask_results() -> dict:
    """Per N: whether ``build_tree_mask`` (Triton) equals ``tree_mask_from_parents`` (torch), written into a
    caller's buffer: 3 random trees, one half lone roots (padding), at their true depth; and "chain 40",
    each node under the previous one (40 hops, bit 31 set)."""
    cases = {}
    for seed, n in enumerate(MASK_SIZES):
        parents = random_parents(torch.Generator().manual_seed(seed), 3, n)
        parents[1, n // 2 :] = -1
        cases[str(n)] = parents
    cases["chain 40"] = torch.arange(-1, 39)[None]
    results = {}
    for name, parents in cases.items():
        n = parents.shape[1]
        depth = int(ancestor_mask(parents, n - 1).sum(-1).max()) - 1  # hops from the deepest node to its root
        parents = parents.to(DEVICE)
        out = torch.full((parents.shape[0], n, (n + 31) // 32), 7, dtype=torch.int32, device=DEVICE)
        got = build_tree_mask(parents, depth, out=out)
        results[name] = got is out and torch.equal(got, tree_mask_from_parents(parents, n - 1))
    tree = padded_tree()
    got = build_tree_mask(tree.parents.to(DEVICE), tree.max_depth, padding_to_root=True)
    results["padding to root"] = torch.equal(got.cpu(), tree_mask_from_parents(verify_parents(tree.parents), 3))
    return results


def padded_tree() -> DraftTree:
    """Best-first trees (budget 40, depth 3, K 4) of which request 1 keeps only the root's 4 children: its other
    slots are padding as ``DraftTree`` documents it (parent -1, depth 0, the root's token, score -inf)."""
    ids, logprobs, roots = random_proposals(torch.Generator().manual_seed(5), 3, 3, 4)
    tree = build_tree(ids, logprobs, roots, 40)
    tokens, parents, depths, scores = (t.clone() for t in (tree.tokens, tree.parents, tree.depths, tree.scores))
    tokens[1, 5:], parents[1, 5:], depths[1, 5:], scores[1, 5:] = tokens[1, 0], -1, 0, float("-inf")
    return DraftTree(tokens, parents, depths, scores, torch.tensor([40, 5, 40]), tree.max_depth)


def run_cases() -> dict:
    """``measure`` of every ``CASES`` entry on ``DEVICE``, and ``mask_results`` under "tree masks"."""
    results = {"tree masks": mask_results()}
    for seed, (name, case) in enumerate(CASES.items()):
        case = dict(case)
        num_splits, max_prefix_len = case.pop("num_splits", None), case.pop("max_prefix_len", None)
        min_split_keys, window = case.pop("min_split_keys", MIN_SPLIT_KEYS), case.pop("sliding_window", -1)
        tile = case.pop("tile", None)
        inputs = make_inputs(seed, **case, head_dim=64)
        bound = max_prefix_len or max(case["prefix_lens"])
        results[name] = measure(inputs, bound, num_splits, min_split_keys, sliding_window=window, tile=tile)
        if name in FUSED_MERGE_CASES:
            results[f"{name}, merged by the last split"] = measure(inputs, bound, num_splits, min_split_keys,
                                                                   fused_merge=True, sliding_window=window, tile=tile)
    return results


# Triton's interpreter (3.9.0) keeps bfloat16 as raw uint16 bits: tl.dot multiplies the bits
# (triton-lang/triton#11584, unsupported upstream), and fp32 -> bf16 casts truncate. These two
# wrappers give it the GPU's rules: bf16 operands widened exactly to fp32, casts rounded to nearest even.
def _widening_dot(create_dot):
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle

    def widen(h: TensorHandle) -> TensorHandle:
        if h.dtype.scalar != tl.bfloat16:
            return h
        bits = torch.from_numpy(np.ascontiguousarray(h.data).view(np.int16))
        return TensorHandle(bits.view(torch.bfloat16).float().numpy(), tl.float32)

    return lambda self, a, b, *rest: create_dot(self, widen(a), widen(b), *rest)


def _rounding_cast(cast_impl):
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle

    def cast(self, src: TensorHandle, dst_type):
        if src.dtype.scalar != tl.float32 or dst_type.scalar != tl.bfloat16:
            return cast_impl(self, src, dst_type)
        rounded = torch.from_numpy(np.ascontiguousarray(src.data)).bfloat16()
        return TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)

    return cast


def interpreted_results() -> dict:
    """``run_cases`` in this process, started with TRITON_INTERPRET=1, the interpreter given GPU bf16 rules."""
    from triton.runtime.interpreter import InterpreterBuilder

    InterpreterBuilder.create_dot = _widening_dot(InterpreterBuilder.create_dot)
    InterpreterBuilder.cast_impl = _rounding_cast(InterpreterBuilder.cast_impl)
    return run_cases()


@pytest.fixture(scope="module")
def case_results() -> dict:
    """``CASES`` measured by the compiled kernels on a GPU, else by Triton's interpreter in a fresh process."""
    if DEVICE == "cuda":
        return run_cases()
    return interpreted("test_tree_attention", "interpreted_results")


@needs_triton
@pytest.mark.parametrize("name", [*CASES, *(f"{name}, merged by the last split" for name in FUSED_MERGE_CASES)])
def test_matches_reference(case_results: dict, name: str) -> None:
    assert_accurate(case_results[name])


@needs_triton
@pytest.mark.parametrize("name", [*map(str, MASK_SIZES), "chain 40", "padding to root"])
def test_tree_mask_kernel_matches_the_torch_masks(case_results: dict, name: str) -> None:
    assert case_results["tree masks"][name]


def test_tree_mask_kernel_rejects_a_wrong_buffer() -> None:
    with pytest.raises(ValueError, match="out must be a contiguous int32"):
        build_tree_mask(torch.full((2, 40), -1), 39, out=torch.zeros(2, 40, 1, dtype=torch.int32))


# The kernels' argument types, for compiling them without a launch; unlisted arguments are i32.
ARG_TYPES = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "part_acc": "*fp32", "part_m": "*fp32",
             "part_l": "*fp32", "counters": "*i32", "req_to_token": "*i32", "req_pool_indices": "*i64",
             "prefix_lens": "*i32", "tree_mask": "*i32", "positions": "*i64", "qk_scale": "fp32", "parents": "*i64",
             "out": "*i32"}  # fmt: skip


def compile_for_sm90(kernel, constexprs: dict, data: str = "bf16", **options) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    types = {**ARG_TYPES, **{name: f"*{data}" for name in ("Q", "K", "V", "O")}}
    signature = {name: "constexpr" if name in constexprs else types.get(name, "i32") for name in kernel.arg_names}
    triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", 90, 32), options=options)


@needs_triton
@pytest.mark.parametrize("head_dim,rows,group,split,data,dot,window", [
    (128, 1024, 4, False, "bf16", "tf32", False), (128, 64, 4, True, "bf16", "tf32", False),
    (256, 256, 8, True, "bf16", "tf32", False), (64, 3, 1, False, "bf16", "tf32", False),
    (64, 192, 3, True, "fp32", "ieee", False), (64, 192, 3, False, "fp32", "tf32", False),
    (256, 64, 4, True, "bf16", "tf32", True), (128, 16, 2, False, "bf16", "tf32", True),
])  # fmt: skip
def test_kernels_compile_for_hopper(head_dim: int, rows: int, group: int, split: bool, data: str, dot: str,
                                    window: bool) -> None:
    """The interpreter never runs Triton's compiler; this builds the kernels for sm_90 (no GPU needed)."""
    from jetspec_sglang.kernels import tree_attention_triton as kernels

    block_m, block_n, num_warps, num_stages = _tile_config(head_dim, rows, 4 if data == "fp32" else 2)
    for fused_merge in (False, True) if split else (False,):
        constexprs = dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, SPLIT=split,
                          DOT_PRECISION=dot, FUSED_MERGE=fused_merge, WINDOW=window)
        compile_for_sm90(kernels.tree_attention_fwd, constexprs, data, num_warps=num_warps, num_stages=num_stages)
    if split:
        compile_for_sm90(kernels.merge_splits, dict(SPLITS=MAX_SPLITS, HEAD_DIM=head_dim), data, num_warps=MERGE_WARPS)


SWEEP_TILES = ("64x64x4x3", "64x128x4x2", "128x128x8x2", "32x64x4x3", "16x64x2x3", "32x128x4x2")


@needs_triton
@pytest.mark.parametrize("tile", SWEEP_TILES)
@pytest.mark.parametrize("head_dim,group", [(64, 3), (128, 4)])
def test_tiles_a_benchmark_sweeps_compile_for_hopper(tile: str, head_dim: int, group: int) -> None:
    """``tree_attention_bench.py --tiles`` times these at SmolLM2's shape (head_dim 64) and Qwen3-8B's (head_dim
    128), bf16, split and fused."""
    from jetspec_sglang.kernels import tree_attention_triton as kernels

    block_m, block_n, num_warps, num_stages = Tile.parse(tile)
    for fused_merge in (False, True):
        constexprs = dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, SPLIT=True,
                          DOT_PRECISION="tf32", FUSED_MERGE=fused_merge, WINDOW=False)
        compile_for_sm90(kernels.tree_attention_fwd, constexprs, "bf16", num_warps=num_warps, num_stages=num_stages)


@pytest.mark.parametrize("text", ["128x64x8", "128x48x8x3", "8x64x4x3", "128x64x3x3", "128x64x8x0", "axbxcxd"])
def test_a_tile_the_kernel_cannot_take_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="tile|block_m"):
        Tile.parse(text)


@needs_triton
def test_tree_mask_kernel_compiles_for_hopper() -> None:
    from jetspec_sglang.kernels import tree_attention_triton as kernels

    for padding_to_root in (False, True):
        compile_for_sm90(kernels.tree_mask_rows, dict(WORDS=8, PADDING_TO_ROOT=padding_to_root), num_warps=1)


def test_verify_tree_mask_sees_what_sglang_verify_mask_sees() -> None:
    """The target's tree-attention mask (``TreeMaskBuffer.write``: padding hangs off the root) equals the tree part
    of SGLang's verify mask of the same trees, padding slots included: SGLang verifies a padding slot as the root's
    child at depth 1, so if its token is accepted, the target's next token must come from a row that saw the root."""
    tree = padded_tree()
    ours = unpack_tree_mask(build_tree_mask(tree.parents, tree.max_depth, padding_to_root=True))
    sglang = eagle_verify_inputs(tree, torch.tensor([7, 0, 3]), TreeMaskMode.QLEN_ONLY).tree_mask.view(3, 40, 40)
    assert torch.equal(ours, sglang.bool())
    assert ours[1, 5:, 0].all() and not unpack_tree_mask(tree_mask_from_parents(tree.parents, 3))[1, 5:, 0].any()


@pytest.mark.parametrize("n", [1, 31, 32, 33, 100])
def test_tree_mask_from_parents_packs_the_ancestor_mask(n: int) -> None:
    parents = random_parents(torch.Generator().manual_seed(n), 3, n)
    tree_mask = tree_mask_from_parents(parents, max_depth=n - 1)
    assert tree_mask.dtype == torch.int32 and tree_mask.shape == (3, n, (n + 31) // 32)
    assert torch.equal(unpack_tree_mask(tree_mask), ancestor_mask(parents, n - 1))


def test_tree_mask_sets_the_sign_bit_for_node_31() -> None:
    chain = torch.arange(-1, 32)[None]  # node i's parent is i - 1
    assert tree_mask_from_parents(chain, max_depth=32)[0, 31:].tolist() == [[-1, 0], [-1, 1]]


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: a.update(q=a["q"].half()), "k_buffer must be a 3-d tensor of q's dtype"),
        (lambda a: a.update(q=a["q"].double(), k_buffer=a["k_buffer"].double(), v_buffer=a["v_buffer"].double()),
         "q must be a 3-d tensor of q's dtype \\(bfloat16, float16 or float32\\)"),
        (lambda a: a.update(k_buffer=a["k_buffer"][..., :32], v_buffer=a["v_buffer"][..., :32]), "head_dim"),
        (lambda a: a.update(q=a["q"][:, :3]), "multiple of Hkv"),
        (lambda a: a.update(tree_mask=a["tree_mask"][:1]), "bs \\* N"),
        (lambda a: a.update(prefix_lens=a["prefix_lens"].float()), "prefix_lens must be"),
        (lambda a: a.update(req_to_token=a["req_to_token"].long()), "req_to_token must be"),
        (lambda a: a.update(out=a["q"][:1]), "out must be"),
        (lambda a: a.update(max_prefix_len=-1), "max_prefix_len"),
        (lambda a: a.update(fp32_dot="fp16"), "fp32_dot must be"),
        (lambda a: a.update(sliding_window=4), "a sliding window needs positions: contiguous int32 or int64 \\[6\\]"),
        (lambda a: a.update(sliding_window=4, positions=torch.zeros(12, dtype=torch.int64, device=DEVICE)[::2]),
         "a sliding window needs positions"),
        (lambda a: a.update(sliding_window=4, positions=torch.zeros(5, dtype=torch.int64, device=DEVICE)),
         "a sliding window needs positions"),
    ],
)
def test_rejects_bad_inputs(change, message: str) -> None:
    names = ("q", "k_buffer", "v_buffer", "req_to_token", "req_pool_indices", "prefix_lens", "tree_mask")
    args = dict(zip(names, make_inputs(0, 3, [5, 6], num_kv_heads=2, group=2, head_dim=64)))
    args.update(sm_scale=0.125, max_prefix_len=6)
    change(args)
    with pytest.raises(ValueError, match=message):
        tree_attention(**args)


@needs_triton
@pytest.mark.gpu
@pytest.mark.parametrize("sliding_window", [-1, 511])
@pytest.mark.parametrize("fused_merge", [False, True])
@pytest.mark.parametrize(
    "bs,n,max_prefix_len,num_kv_heads,group,head_dim",
    [
        (1, 256, 32768, 8, 4, 128),
        (1, 16, 32000, 8, 4, 128),
        (8, 64, 4096, 4, 4, 256),
        (8, 128, 8000, 16, 1, 128),
        (8, 256, 3000, 2, 8, 256),
        (32, 16, 2000, 8, 4, 64),
        (32, 256, 1000, 8, 4, 128),
    ],
)
def test_matches_reference_at_serving_sizes(bs: int, n: int, max_prefix_len: int, num_kv_heads: int,
                                            group: int, head_dim: int, fused_merge: bool,
                                            sliding_window: int) -> None:  # fmt: skip
    gen = torch.Generator().manual_seed(bs + n)
    prefix_lens = torch.randint(0, max_prefix_len + 1, (bs,), generator=gen)
    prefix_lens[0] = max_prefix_len
    inputs = make_inputs(bs * n, n, prefix_lens.tolist(), num_kv_heads, group, head_dim)
    assert_accurate(measure(inputs, max_prefix_len, fused_merge=fused_merge, sliding_window=sliding_window))


@needs_triton
@pytest.mark.gpu
@pytest.mark.parametrize("fused_merge", [False, True])
def test_replays_in_a_cuda_graph_without_host_syncs(fused_merge: bool) -> None:
    first = make_inputs(1, 64, [3000, 17, 5], num_kv_heads=8, group=4, head_dim=128)
    q, k_buffer, v_buffer, req_to_token, req_pool_indices, prefix_lens, _ = first
    new_mask = tree_mask_from_parents(random_parents(torch.Generator().manual_seed(2), 3, 64), max_depth=63)
    # Shorter prefixes keep every key inside the slots make_inputs filled.
    second = (torch.randn_like(q), k_buffer, v_buffer, req_to_token, req_pool_indices, prefix_lens // 3,
              new_mask.to(DEVICE))  # fmt: skip
    static = [t.clone() for t in first]
    out = torch.empty_like(q)
    slots = merge_counter_slots(3, 64, q.shape[1], k_buffer.shape[1], q.shape[2])
    counters = torch.zeros(slots, dtype=torch.int32, device=DEVICE) if fused_merge else None
    tree_attention(*static, 0.1, 4096, out=out, merge_counters=counters)  # compiles the kernels
    torch.cuda.set_sync_debug_mode("error")
    try:
        tree_attention(*static, 0.1, 4096, out=out, merge_counters=counters)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tree_attention(*static, 0.1, 4096, out=out, merge_counters=counters)
    for inputs in (first, second):
        for buf, t in zip(static, inputs):
            buf.copy_(t)
        graph.replay()
        want = tree_attention_reference(*inputs, 0.1)
        baseline = tree_attention_reference(*inputs, 0.1, dtype=torch.bfloat16)
        assert (out.double() - want).abs().max() <= 2 * (baseline.double() - want).abs().max() + 1e-6
        assert counters is None or not counters.any()

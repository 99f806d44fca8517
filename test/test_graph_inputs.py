"""``kernels.graph_inputs``: the one-launch graph-input writes against their PyTorch references, element for element.

Without CUDA the Triton kernel runs in Triton's interpreter, in a fresh process (``triton_interpreter``). Every
buffer starts as garbage, and the step's static rows past the batch hold a larger earlier step's leftovers, so a
padding row the kernel forgets, or a real row it pads, shows up. (That the references themselves pad as SGLang's
own buffer fill does is ``test_direct_verify.py``'s.)
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from jetspec_sglang.kernels.draft_inputs import draft_inputs_torch
from jetspec_sglang.kernels.graph_inputs import (
    head_graph_inputs,
    head_graph_inputs_reference,
    pad_verify_inputs,
    pad_verify_inputs_reference,
    select_graph_inputs,
)
from triton_interpreter import compiled_or_interpreted

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
SLOTS = ("input_ids", "positions", "out_cache_loc", "seq_lens", "req_pool_indices")
# (rows in the graph, requests of this step, tokens a row): a full graph, padded ones, one lane past a power of 2
CASES = ((4, 4, 16), (4, 1, 16), (8, 5, 33), (3, 0, 7), (1, 1, 200))


def step(seed: int, rows: int, real: int, width: int) -> dict:
    """The step's static rows (``seq_lens``, request rows, bonus tokens; leftovers past ``real``), a slot table, and
    graph buffers and retrieve lists full of garbage."""
    gen = torch.Generator().manual_seed(seed)
    req_to_token = torch.randperm(10 * (width + 64), generator=gen).view(10, width + 64).to(torch.int32)
    garbage = lambda *shape: torch.randint(-9, 10**6, shape, generator=gen)  # noqa: E731
    return {
        "num_real": torch.tensor(real),
        "seq_lens": torch.randint(0, 60, (rows,), generator=gen),
        "req_pool_indices": torch.randperm(10, generator=gen)[:rows],
        "bonus": torch.randint(0, 1000, (rows,), generator=gen),
        "req_to_token": req_to_token,
        "buffers": {name: garbage(rows * width) if name in SLOTS[:3] else garbage(rows) for name in SLOTS},
        "block_slots": garbage(rows, width),
        "block_positions": garbage(rows, width),
        "lists": garbage(3, rows, width),
        "own_nodes": torch.arange(rows * width).view(rows, width) + 7000,
    }


def on(device: str, case: dict) -> dict:
    return {k: ({n: t.to(device) for n, t in v.items()} if isinstance(v, dict) else v.to(device)) for k, v in case.items()}


def head_args(c: dict) -> tuple:
    return (c["buffers"], c["block_slots"], c["block_positions"], c["num_real"], c["seq_lens"], c["req_pool_indices"],
            c["bonus"], c["req_to_token"], 99, 1)  # fmt: skip


def verify_args(c: dict) -> tuple:
    return (c["buffers"], c["lists"], c["num_real"], c["seq_lens"], c["req_pool_indices"], c["req_to_token"], 1,
            c["own_nodes"])  # fmt: skip


def outputs(c: dict) -> dict:
    return {**{f"buffer {n}": t.cpu() for n, t in c["buffers"].items()},
            **{k: c[k].cpu() for k in ("block_slots", "block_positions", "lists")}}  # fmt: skip


def fused_equals_reference() -> dict:
    """Per case and mode: the outputs that differ between the kernel (on ``DEVICE``) and the reference (on the
    CPU, with the block kernel's torch reference); empty lists where all agree."""
    results = {}
    for seed, (rows, real, width) in enumerate(CASES):
        for mode in ("head", "verify"):
            want, got = step(seed, rows, real, width), on(DEVICE, step(seed, rows, real, width))
            if mode == "head":
                head_graph_inputs_reference(*head_args(want), make_draft_inputs=draft_inputs_torch)
                head_graph_inputs(*head_args(got))
            else:
                pad_verify_inputs_reference(*verify_args(want))
                pad_verify_inputs(*verify_args(got))
            got, want = outputs(got), outputs(want)
            results[f"{mode}, {real} of {rows} rows, width {width}"] = [k for k in want if not torch.equal(got[k], want[k])]
    return results


@pytest.fixture(scope="module")
def results() -> dict:
    return compiled_or_interpreted("test_graph_inputs", "fused_equals_reference")


@needs_triton
@pytest.mark.parametrize("name", [f"{mode}, {real} of {rows} rows, width {width}" for rows, real, width in CASES
                                  for mode in ("head", "verify")])  # fmt: skip
def test_one_launch_writes_what_the_torch_ops_write(results: dict, name: str) -> None:
    assert results[name] == [], f"outputs that differ: {results[name]}"


@needs_triton
def test_the_kernel_compiles_for_hopper() -> None:
    """The interpreter never runs Triton's compiler; this builds the kernel for sm_90 (no GPU needed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from jetspec_sglang.kernels import graph_inputs_triton as kernels

    scalars = {"stride_r2t": "i64", "seq_len_fill": "i32", "width": "i32", "mask_token_id": "i32", "list_stride": "i32"}
    for head in (True, False):
        constexprs = dict(HEAD=head, BLOCK=64)
        signature = {name: "constexpr" if name in constexprs else scalars.get(name, "*i32" if name == "req_to_token"
                                                                                  else "*i64")
                     for name in kernels.graph_rows.arg_names}  # fmt: skip
        triton.compile(ASTSource(kernels.graph_rows, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 1})


def test_a_wrong_dtype_is_refused() -> None:
    c = step(0, 2, 1, 4)
    c["seq_lens"] = c["seq_lens"].int()
    with pytest.raises(ValueError, match="contiguous int64"):
        head_graph_inputs(*head_args(c))


def test_switch_takes_torch_or_fused(monkeypatch) -> None:
    monkeypatch.delenv("JETSPEC_GRAPH_INPUTS", raising=False)
    assert select_graph_inputs() == "torch"
    monkeypatch.setenv("JETSPEC_GRAPH_INPUTS", "fused")
    assert select_graph_inputs() == "fused"
    monkeypatch.setenv("JETSPEC_GRAPH_INPUTS", "triton")
    with pytest.raises(ValueError, match="JETSPEC_GRAPH_INPUTS must be one of"):
        select_graph_inputs()

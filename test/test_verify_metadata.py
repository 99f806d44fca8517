"""Where the TARGET_VERIFY attention metadata is refilled (``sglang/verify_metadata.py``), on a CPU.

A stand-in for SGLang's Triton backend records which of its methods run. The checks against SGLang's own
source (``needs_source``) pin what the moves rely on: that a TARGET_VERIFY replay's
``init_forward_metadata_out_graph`` does nothing else on a plain pool, and that the decode graph runner
records ``init_forward_metadata_in_graph`` inside each graph, before the forward. The GPU test
``test_tiny_fp32_graph_metadata_drafts_the_same_trees`` shows the head drafts the same trees either way.
"""

from __future__ import annotations

import ast
import types

import pytest
from sglang_source import sglang_source

from jetspec_sglang.sglang import verify_metadata as vm

needs_source = pytest.mark.skipif(sglang_source() is None, reason="sglang 0.5.17 source is not unpacked (.ci/run does it)")


class MHATokenToKVPool:
    """Stand-in for SGLang's plain KV pool (only its class name is read)."""


class TritonAttnBackend:
    """Stand-in for SGLang's Triton backend: the attributes the refusal reads, and methods that log their calls."""

    def __init__(self) -> None:
        self.token_to_kv_pool, self.page_size, self._translate_kv_loc, self.sliding_window_size = (
            MHATokenToKVPool(), 1, None, None)
        self.calls: list[tuple] = []

    def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
        self.calls.append(("out_graph", forward_batch.name, in_capture))

    def init_forward_metadata_in_graph(self, forward_batch):
        self.calls.append(("in_graph", forward_batch.name))

    def _apply_cuda_graph_metadata(self, bs, req_pool_indices, seq_lens, forward_mode, spec_info):
        self.calls.append(("refill", bs, req_pool_indices, seq_lens, spec_info))


def batch(name: str, verify: bool = True) -> types.SimpleNamespace:
    mode = types.SimpleNamespace(is_target_verify=lambda: verify)
    return types.SimpleNamespace(name=name, forward_mode=mode, batch_size=4, req_pool_indices="rows",
                                 seq_lens="lens", spec_info="spec")


@pytest.fixture(autouse=True)
def default_env(monkeypatch):
    monkeypatch.delenv(vm.ENV, raising=False)


def test_head_refill_moves_into_the_graph() -> None:
    backend = TritonAttnBackend()
    assert vm.refill_inside_graph(backend)
    backend.init_forward_metadata_out_graph(batch("capture"), in_capture=True)  # builds the view the graph reads
    backend.init_forward_metadata_in_graph(batch("recorded"))  # inside the capture: the refill is recorded
    backend.init_forward_metadata_out_graph(batch("replay"))  # before a replay: nothing left to do
    backend.init_forward_metadata_out_graph(batch("decode", verify=False))
    backend.init_forward_metadata_in_graph(batch("decode-in-graph", verify=False))
    assert backend.calls == [
        ("out_graph", "capture", True),
        ("in_graph", "recorded"), ("refill", 4, "rows", "lens", "spec"),
        ("out_graph", "decode", False),
        ("in_graph", "decode-in-graph"),
    ]  # fmt: skip


def test_target_refill_is_skipped_only_while_no_verify_layer_reads_it() -> None:
    backend, deferred = TritonAttnBackend(), [0]
    assert vm.skip_unread_refill(backend, lambda: deferred[0])
    backend.init_forward_metadata_out_graph(batch("capture"), in_capture=True)
    backend.init_forward_metadata_out_graph(batch("replay"))
    backend.init_forward_metadata_out_graph(batch("prefill", verify=False))
    deferred[0] = 1  # a layer went to SGLang's kernel, which reads the metadata
    backend.init_forward_metadata_out_graph(batch("replay-read"))
    backend.init_forward_metadata_in_graph(batch("in-graph"))
    assert backend.calls == [("out_graph", "capture", True), ("out_graph", "prefill", False),
                             ("out_graph", "replay-read", False), ("in_graph", "in-graph")]  # fmt: skip


@pytest.mark.parametrize("change", [dict(page_size=16), dict(_translate_kv_loc=lambda loc: loc),
                                    dict(sliding_window_size=512), dict(token_to_kv_pool=object())])  # fmt: skip
def test_other_pools_and_windows_keep_sglangs_refill(change: dict) -> None:
    backend = TritonAttnBackend()
    vars(backend).update(change)
    assert not vm.refill_movable(backend)
    assert not vm.refill_inside_graph(backend) and not vm.skip_unread_refill(backend, lambda: 0)
    assert "init_forward_metadata_out_graph" not in vars(backend) and "init_forward_metadata_in_graph" not in vars(backend)


def test_other_backends_and_the_switch_keep_sglangs_refill(monkeypatch) -> None:
    class FlashInferAttnBackend(TritonAttnBackend):
        pass

    assert not vm.refill_inside_graph(FlashInferAttnBackend())
    monkeypatch.setenv(vm.ENV, "0")
    backend = TritonAttnBackend()
    assert not vm.refill_inside_graph(backend) and not vm.skip_unread_refill(backend, lambda: 0)
    assert not vars(backend).keys() & {"init_forward_metadata_out_graph", "init_forward_metadata_in_graph"}
    monkeypatch.setenv(vm.ENV, "yes")
    with pytest.raises(ValueError, match="JETSPEC_GRAPH_METADATA must be 0 or 1"):
        vm.graph_metadata_enabled()


def _methods(relative: str, class_name: str) -> dict[str, ast.FunctionDef]:
    tree = ast.parse((sglang_source() / relative).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _called_methods(node: ast.AST) -> list[str]:
    return [n.func.attr for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]


@needs_source
def test_sglang_triton_replay_refill_is_the_only_verify_work_on_a_plain_pool() -> None:
    methods = _methods("sglang/srt/layers/attention/triton_backend.py", "TritonAttnBackend")
    out_graph = methods["init_forward_metadata_out_graph"]
    branch = next(n for n in ast.walk(out_graph) if isinstance(n, ast.If) and ast.unparse(n.test) == "in_capture")
    replay = _called_methods(ast.Module(body=branch.orelse, type_ignores=[]))
    assert sorted(replay) == ["_apply_cuda_graph_metadata", "_fill_cuda_graph_swa_out_cache_loc",
                              "_translate_cuda_graph_shared_pool_locs"]  # fmt: skip
    # Both others return before any work on a plain pool without sliding windows.
    translate = methods["_translate_cuda_graph_shared_pool_locs"].body
    swa = methods["_fill_cuda_graph_swa_out_cache_loc"].body
    first = lambda body: next(s for s in body if not isinstance(s, ast.Expr))  # noqa: E731 (after the docstring)
    assert ast.unparse(first(translate)) == "if self._translate_kv_loc is None:\n    return None"
    assert ast.unparse(first(swa)) == "if not self.use_sliding_window_kv_pool:\n    return None"
    refill = methods["_apply_cuda_graph_metadata"]
    assert [a.arg for a in refill.args.args] == ["self", "bs", "req_pool_indices", "seq_lens", "forward_mode",
                                                 "spec_info"]  # fmt: skip


@needs_source
def test_sglang_decode_graphs_record_the_in_graph_hook_before_the_forward() -> None:
    methods = _methods("sglang/srt/model_executor/runner/decode_cuda_graph_runner.py", "DecodeCudaGraphRunner")
    run_once = next(n for n in ast.walk(methods["capture_one_shape"])
                    if isinstance(n, ast.FunctionDef) and n.name == "run_once")  # fmt: skip
    calls = [ast.unparse(n.func) for n in ast.walk(run_once) if isinstance(n, ast.Call)]
    assert "attn_backend.init_forward_metadata_in_graph" in calls and "forward" in calls
    first_stmt = next(s for s in run_once.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)))
    assert ast.unparse(first_stmt) == "attn_backend.init_forward_metadata_in_graph(forward_batch)"
    # The replay view reads the runner's static inputs, the same tensors the capture's batch holds.
    view = ast.unparse(next(n for n in ast.parse((sglang_source() / "sglang/srt/model_executor/runner/"
                                                  "decode_cuda_graph_runner.py").read_text()).body
                            if isinstance(n, ast.FunctionDef) and n.name == "build_replay_fb_view"))  # fmt: skip
    assert "req_pool_indices=buffers.req_pool_indices[:bs]" in view and "seq_lens=buffers.seq_lens[:bs]" in view

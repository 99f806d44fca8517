"""Where a Triton backend refills its TARGET_VERIFY graph metadata: off the host path of a replay.

Before every replay of a TARGET_VERIFY CUDA graph, SGLang 0.5.17's Triton backend refills the buffers
its captured kernels read (``qo_indptr``, ``kv_indptr``, the KV indices, ``mask_indptr``) with about
ten eager launches (``TritonAttnBackend._apply_cuda_graph_metadata``). On a host-bound target that is
a large share of a step, and a JETSPEC step pays it twice, for the head and for the target. In a traced
SmolLM2 step (bs 1, budget 64) the refill took about 0.44 ms of the head's 1.41 ms and about 0.39 ms of
the verify's 2.84 ms (tracing inflates host time about 2.2x; ``benchmark/results/step_breakdown_h200/``).

Those buffers are static-shape functions of the graph's own static inputs (``req_pool_indices`` and
``seq_lens``, which the runner copies in before the refill), so:

- ``refill_inside_graph``: the head's backend records the same refill at the start of each captured
  graph, and its replays run it on the GPU with no host work;
- ``skip_unread_refill``: a target backend whose verify layers all run our tree kernel reads none of
  these buffers, so its replays skip the refill.

Both only move work for the plain MHA pool without sliding windows, where the replay refill is the only
thing ``init_forward_metadata_out_graph`` does for TARGET_VERIFY (its pool translation and SWA steps are
no-ops there); elsewhere SGLang's path stays. ``JETSPEC_GRAPH_METADATA=0`` keeps SGLang's path everywhere.
On an H100 (2026-12-06, SmolLM2 shape, budget 64) the step fell from 2.60 to 2.21 ms at bs 1 and from 3.30 to
2.53 ms at bs 4, and the fp32 GPU tests drafted the same trees either way (``benchmark/results/*_h100/``).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .tree_verify_attention import tree_attention_refusal

ENV = "JETSPEC_GRAPH_METADATA"


def graph_metadata_enabled() -> bool:
    """``$JETSPEC_GRAPH_METADATA``: ``1`` (the default) moves the refill, ``0`` keeps SGLang's."""
    value = os.environ.get(ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{ENV} must be 0 or 1, got {value!r}")
    return value == "1"


def refill_movable(backend: Any) -> bool:
    """Whether the replay refill of ``backend`` may leave SGLang's place: a backend the tree kernel can serve
    (Triton, page size 1, the plain MHA pool) with no sliding-window layers."""
    return tree_attention_refusal(backend) is None and (getattr(backend, "sliding_window_size", None) or 0) <= 0


def refill_inside_graph(backend: Any) -> bool:
    """Record ``backend``'s TARGET_VERIFY refill in its captured graphs instead of running it before each
    replay. Returns whether it did (see ``refill_movable``); call before the graphs are captured."""
    if not graph_metadata_enabled() or not refill_movable(backend):
        return False
    in_graph = backend.init_forward_metadata_in_graph

    def refill_in_graph(forward_batch: Any) -> None:
        in_graph(forward_batch)
        if forward_batch.forward_mode.is_target_verify():
            backend._apply_cuda_graph_metadata(
                bs=forward_batch.batch_size, req_pool_indices=forward_batch.req_pool_indices,
                seq_lens=forward_batch.seq_lens, forward_mode=forward_batch.forward_mode,
                spec_info=forward_batch.spec_info,
            )  # fmt: skip

    _skip_replay_refill(backend, lambda: True)
    backend.init_forward_metadata_in_graph = refill_in_graph
    return True


def skip_unread_refill(backend: Any, verify_layers_deferred: Callable[[], int]) -> bool:
    """Skip ``backend``'s TARGET_VERIFY refill before replays while ``verify_layers_deferred()`` is 0 (no verify
    layer went to SGLang's kernel, the only reader). Returns whether it installed the skip."""
    if not graph_metadata_enabled() or not refill_movable(backend):
        return False
    _skip_replay_refill(backend, lambda: verify_layers_deferred() == 0)
    return True


def _skip_replay_refill(backend: Any, skip: Callable[[], bool]) -> None:
    """``backend.init_forward_metadata_out_graph`` without the TARGET_VERIFY replay refill while ``skip()``.

    Capture (``in_capture``) still builds the metadata view the graph reads, and every other mode goes to
    SGLang's method as before. An instance attribute, like ``tree_verify_attention``'s ``forward_extend``."""
    out_graph = backend.init_forward_metadata_out_graph

    def out_graph_without_refill(forward_batch: Any, in_capture: bool = False) -> None:
        if in_capture or not forward_batch.forward_mode.is_target_verify() or not skip():
            out_graph(forward_batch, in_capture)

    backend.init_forward_metadata_out_graph = out_graph_without_refill

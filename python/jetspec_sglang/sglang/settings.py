"""JETSPEC's server flags: defaults from the head, and every check that must fail at startup.

Flag meanings (SGLang's generic speculative flags, reinterpreted):

- ``--speculative-num-draft-tokens``: the tree budget ``N`` (nodes, root included);
- ``--speculative-eagle-topk``: the per-depth candidate count ``K``;
- ``--speculative-num-steps``: the maximum tree depth ``D`` (the draft block is ``D + 1``).

Unset flags come from the head's ``config.json`` (``jetspec_config.{budget,topk,depth}``
if present, else budget 64, topk 8, depth ``block_size - 1``). ``validate_server_args``
runs in SGLang's main process inside ``ServerArgs.__post_init__``; what it
decides travels to the schedulers only through ``server_args`` fields.
Overlap scheduling follows SGLang's own ``--disable-overlap-schedule`` (on by default), or
``JETSPEC_OVERLAP=0`` to turn it off. Since the worker's step graphs it is faster at every batch
size measured (SmolLM2, budget 128: 2.67 vs 3.40 plain steps at bs 1, 4.67 vs 5.85 at bs 32) and
lossless in the fp32 GPU tests (``benchmark/results/step_breakdown_h200``, ``sglang_plugin_h200``).
This module imports no sglang so it can be tested on CPUs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..draft_head import check_head_matches_target
from ..head_config import DraftHeadConfig
from ..kernels.graph_inputs import select_graph_inputs
from ..kernels.greedy_walk import select_accept_walk
from .budget_plan import verify_token_cap
from .direct_verify import direct_verify_mode
from .draft_kv import select_context_kv
from .greedy_accept import greedy_accept_enabled
from .head_attention import select_head_attention
from .tree_builder import check_kernel_switches
from .tree_verify_attention import select_split_merge, select_tree_tile, select_verify_attention
from .verify_metadata import graph_metadata_enabled
from .vocab_topk import select_vocab_topk

logger = logging.getLogger(__name__)

DEFAULT_BUDGET = 64
DEFAULT_TOPK = 8
DEFAULT_MAX_RUNNING_REQUESTS = 32
SUPPORTED_ATTENTION_BACKENDS = ("triton", "flashinfer")


@dataclass(frozen=True, slots=True)
class TreeSettings:
    """The resolved tree shape: ``budget`` nodes, ``topk`` per depth, ``depth`` levels."""

    budget: int
    topk: int
    depth: int

    def __post_init__(self) -> None:
        if self.budget < 2:
            raise ValueError(
                f"--speculative-num-draft-tokens (the JETSPEC tree budget, root included) must be >= 2, got {self.budget}"
            )
        if self.topk < 1 or self.depth < 1:
            raise ValueError(
                f"--speculative-eagle-topk and --speculative-num-steps must be >= 1, got {self.topk} and {self.depth}"
            )
        reachable = sum(self.topk**d for d in range(self.depth + 1))
        if self.budget > reachable:
            raise ValueError(
                f"a tree of depth {self.depth} and {self.topk} candidates per depth holds at most {reachable} "
                f"nodes, fewer than --speculative-num-draft-tokens={self.budget}; lower the budget or raise "
                "--speculative-eagle-topk / --speculative-num-steps"
            )


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path} not found: pass a folder holding the model's config.json") from None


def resolve_tree_settings(
    head: DraftHeadConfig, budget: Optional[int], topk: Optional[int], depth: Optional[int]
) -> TreeSettings:
    """Fill unset flags from the head's ``jetspec_config`` (or the defaults) and cap depth.

    The depth never exceeds ``budget - 1`` (a deeper level cannot hold a node) and
    defaults to the head's trained block (``block_size - 1``).
    """
    recommended = dict(head.extra.get("jetspec_config") or {})
    budget = int(budget or recommended.get("budget", DEFAULT_BUDGET))
    topk = int(topk or recommended.get("topk", DEFAULT_TOPK))
    depth = int(depth or recommended.get("depth", head.max_depth))
    return TreeSettings(budget=budget, topk=topk, depth=min(depth, budget - 1))


def validate_server_args(server_args: Any) -> TreeSettings:
    """Check and complete ``server_args`` for JETSPEC; raise ``ValueError`` naming the fix.

    Writes the resolved tree flags and the settings SGLang's generic speculative
    code needs; rejects what JETSPEC does not support yet.
    """
    sa = server_args
    if not sa.speculative_draft_model_path:
        raise ValueError("JETSPEC needs --speculative-draft-model-path pointing at a JetSpec/DFlash draft head")
    if not str(getattr(sa, "device", "cuda") or "cuda").startswith("cuda"):
        raise ValueError(f"JETSPEC runs on CUDA devices only, got --device {sa.device}")
    if getattr(sa, "pp_size", 1) != 1:
        raise ValueError("JETSPEC does not support pipeline parallelism yet; drop --pp-size")
    if getattr(_resolved(sa), "enable_dp_attention", False):
        raise ValueError("JETSPEC does not support DP attention yet; drop --enable-dp-attention")
    if getattr(sa, "page_size", 1) not in (None, 1):
        raise ValueError(f"JETSPEC supports --page-size 1 only (the draft KV commit is per token), got {sa.page_size}")
    _check_attention_backends(sa)
    if getattr(sa, "speculative_use_rejection_sampling", False):
        raise ValueError("--speculative-use-rejection-sampling is not lossless for JETSPEC trees; drop it")
    for name in ("speculative_accept_threshold_single", "speculative_accept_threshold_acc"):
        value = getattr(sa, name, 1.0)
        if value != 1.0:
            raise ValueError(f"--{name.replace('_', '-')}={value} makes sampling lossy; JETSPEC needs 1.0")

    head_path = Path(sa.speculative_draft_model_path)
    head_dict = read_json(head_path / "config.json")
    head = DraftHeadConfig.from_hf_dict(head_dict)
    check_causal_flags_reach_sglang(head, head_dict, head_path)
    check_head_matches_target(head, read_json(Path(sa.model_path) / "config.json"))
    verify_token_cap(head.hidden_size)  # a bad JETSPEC_VERIFY_TOKENS fails here, not in the scheduler
    select_verify_attention()  # and a bad JETSPEC_VERIFY_ATTENTION
    select_split_merge()  # JETSPEC_SPLIT_MERGE
    select_tree_tile()  # JETSPEC_TREE_TILE
    graph_metadata_enabled()  # and a bad JETSPEC_GRAPH_METADATA
    check_kernel_switches()  # JETSPEC_TREE_BUILDER, JETSPEC_VERIFY_INPUTS, JETSPEC_DRAFT_INPUTS
    greedy_accept_enabled()  # JETSPEC_GREEDY_ACCEPT
    direct_verify_mode()  # JETSPEC_DIRECT_VERIFY
    select_graph_inputs()  # JETSPEC_GRAPH_INPUTS
    select_accept_walk()  # JETSPEC_ACCEPT_WALK
    select_context_kv()  # JETSPEC_CONTEXT_KV
    select_vocab_topk(1)  # JETSPEC_VOCAB_TOPK
    select_head_attention()  # JETSPEC_HEAD_ATTENTION

    tree = resolve_tree_settings(head, sa.speculative_num_draft_tokens, sa.speculative_eagle_topk, sa.speculative_num_steps)
    sa.speculative_num_draft_tokens = tree.budget
    sa.speculative_eagle_topk = tree.topk
    sa.speculative_num_steps = tree.depth
    if getattr(sa, "speculative_draft_attention_backend", None) is None:
        sa.speculative_draft_attention_backend = _target_attention_backend(sa)
    sa.enable_mixed_chunk = False
    if not sa.disable_overlap_schedule and overlap_refused():
        logger.info("JETSPEC runs with --disable-overlap-schedule, as JETSPEC_OVERLAP=0 asks")
        sa.disable_overlap_schedule = True
    if sa.max_running_requests is None:
        sa.max_running_requests = DEFAULT_MAX_RUNNING_REQUESTS
    return tree


def overlap_refused() -> bool:
    """Whether ``JETSPEC_OVERLAP=0`` turns overlap scheduling off (it is on unless SGLang's flag says otherwise)."""
    value = os.environ.get("JETSPEC_OVERLAP", "1")
    if value not in ("0", "1"):
        raise ValueError(f"JETSPEC_OVERLAP must be 0 or 1, got {value!r}")
    return value == "0"


def check_causal_flags_reach_sglang(head: DraftHeadConfig, head_dict: dict[str, Any], path: Path) -> None:
    """SGLang's ``DFlashDraftModel`` reads only top-level ``is_causal``, and only with ``layer_types`` set.

    A causal head saved elsewhere (``dflash_config.causal_head``) would silently run
    bidirectionally, so refuse it with the fix.
    """
    if not head.causal:
        return
    if head_dict.get("is_causal") is not True or not head_dict.get("layer_types"):
        raise ValueError(
            f"{path}/config.json marks a causal head, but SGLang reads causality from top-level "
            '"is_causal": true together with "layer_types"; add both with '
            f"`jetspec fix-head {path}`"
        )


def _check_attention_backends(sa: Any) -> None:
    for flag in ("attention_backend", "prefill_attention_backend", "decode_attention_backend",
                 "speculative_draft_attention_backend"):
        backend = getattr(sa, flag, None)
        if backend is not None and backend not in SUPPORTED_ATTENTION_BACKENDS:
            raise ValueError(
                f"--{flag.replace('_', '-')} {backend} is not supported with JETSPEC: tree verification needs "
                f"a backend that applies the tree mask; pass --attention-backend triton or flashinfer"
            )
    if _target_attention_backend(sa) is None:
        raise ValueError(
            "JETSPEC needs an explicit tree-mask-capable backend (the default on Hopper is fa3); "
            "pass --attention-backend triton or flashinfer"
        )


def _target_attention_backend(sa: Any) -> Optional[str]:
    return getattr(sa, "decode_attention_backend", None) or getattr(sa, "attention_backend", None)


def _resolved(sa: Any) -> Any:
    """SGLang's resolved view of ``server_args`` where available (overrides applied)."""
    try:
        from sglang.srt.arg_groups.overrides import resolved_view
    except ImportError:
        return sa
    return resolved_view(sa)

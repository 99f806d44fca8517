"""``JetSpecAlgo``: what JETSPEC answers to SGLang's algorithm predicates (sglang 0.5.17).

Every ``is_*`` identity check stays False (no builtin branch is borrowed); the
capabilities are answered truthfully. The three methods 0.5.17's scheduler calls
unconditionally but ``CustomSpecAlgo`` lacks are filled in here.
"""

from __future__ import annotations

import torch
from sglang.srt.speculative.spec_registry import CustomSpecAlgo

ALGORITHM_NAME = "JETSPEC"


class JetSpecAlgo(CustomSpecAlgo):
    """JETSPEC: one draft pass per step, a best-first tree, EAGLE-style tree verify."""

    def supports_target_verify_for_draft(self) -> bool:
        # The draft block [bonus, MASK x D] runs on the draft runner in TARGET_VERIFY
        # mode (fixed width, CUDA-graph capturable), as DFLASH does.
        return True

    def supports_grammar_overlap(self) -> bool:
        # run_eagle_verify advances the grammar through the scheduler's barrier.
        return True

    def has_draft_kv(self) -> bool:
        return True

    def need_topk(self) -> bool:
        # Nothing EAGLE-shaped (topk_p / topk_index) is relayed between steps.
        return False

    def carries_draft_hidden_states(self) -> bool:
        return False

    def create_future_map(
        self,
        device: torch.device,
        req_to_token_pool,
        needs_cpu_seq_lens: bool = True,
        needs_confidence_relay: bool = False,
    ):
        from sglang.srt.managers.overlap_utils import FutureMap

        return FutureMap(device, self, req_to_token_pool, needs_cpu_seq_lens, needs_confidence_relay)

    def get_num_tokens_per_req_for_target_verify(self, num_draft_tokens: int, is_draft_worker: bool) -> int:
        """Tokens per request in a TARGET_VERIFY forward: the tree for the target, the block for the draft."""
        if not is_draft_worker:
            return num_draft_tokens
        from sglang.srt.runtime_context import get_spec

        return get_spec().speculative_num_steps + 1

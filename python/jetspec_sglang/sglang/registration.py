"""Register JETSPEC with SGLang 0.5.17: the algorithm, its validator and its hooks.

Runs in every SGLang process through ``load_plugins()``; registering twice is a no-op.
The draft head loads as SGLang's own ``DFlashDraftModel`` (its config says so and
carries ``is_causal``/``layer_types``), so no model class is registered.
"""

from __future__ import annotations

from typing import Any

from .hooks import register_hooks
from .settings import validate_server_args
from .spec_algo import ALGORITHM_NAME, JetSpecAlgo


def _worker_factory(server_args: Any) -> type:
    from .worker import JetSpecWorker

    return JetSpecWorker


def register_with_sglang() -> None:
    """Register ``JETSPEC`` (idempotent)."""
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from sglang.srt.speculative.spec_registry import get_spec

    if get_spec(ALGORITHM_NAME) is not None:
        return
    SpeculativeAlgorithm.register(
        ALGORITHM_NAME,
        supports_overlap=True,  # JETSPEC_OVERLAP=0 turns it off (settings.validate_server_args)
        validate_server_args=validate_server_args,
        spec_class=JetSpecAlgo,
    )(_worker_factory)
    register_hooks()

"""SGLang plugin entry point (group ``sglang.srt.plugins``).

SGLang's ``load_plugins()`` calls ``register`` in every process it starts. The
SGLang-specific code is imported here, lazily, so installing this package
without sglang (CPU work, training, CI) costs nothing.
"""

from __future__ import annotations


def register() -> None:
    """Register the JETSPEC algorithm, its draft model and its hooks with SGLang (idempotent)."""
    from .sglang.registration import register_with_sglang

    register_with_sglang()

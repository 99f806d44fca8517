"""Run a test module's Triton cases in Triton's interpreter, for machines without CUDA.

Triton reads TRITON_INTERPRET when it is first imported, and other test modules import it early
(transformers -> torch._dynamo -> triton), hence a fresh process.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def interpreted(module: str, function: str) -> dict:
    """``module.function()`` (JSON-serialisable) computed in a fresh process under ``TRITON_INTERPRET=1``."""
    code = f"import json, {module} as t; print(json.dumps(t.{function}()))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=600, check=False)  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"the interpreted run failed:\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def compiled_or_interpreted(module: str, function: str) -> dict:
    """``module.function()``: in this process where CUDA is available (the compiled kernels), else ``interpreted``."""
    if torch.cuda.is_available():
        return getattr(importlib.import_module(module), function)()
    return interpreted(module, function)

"""Load SGLang 0.5.17's dependency-free modules (spec registry, hook registry) on a CPU machine.

The full ``import sglang`` needs SGLang's GPU stack. Its algorithm registry and
hook registry import only torch and the standard library, so tests load them
straight from the unpacked wheel behind empty parent packages. CI unpacks the
wheel (``.ci/run``); ``JETSPEC_SGLANG_SRC`` names the folder holding ``sglang/``.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

PARENTS = ("sglang", "sglang.srt", "sglang.srt.speculative", "sglang.srt.plugins")


def sglang_source() -> Optional[Path]:
    path = Path(os.environ.get("JETSPEC_SGLANG_SRC", Path(__file__).resolve().parents[1] / ".ci-cache" / "sglang-src"))
    return path if (path / "sglang" / "srt" / "speculative" / "spec_registry.py").exists() else None


@contextmanager
def light_sglang(src: Path) -> Iterator[types.SimpleNamespace]:
    """Import the light modules under stub parents; restore ``sys.modules`` afterwards."""
    saved = {k: v for k, v in sys.modules.items() if k == "sglang" or k.startswith(("sglang.", "jetspec_sglang.sglang"))}
    for name in list(saved):
        del sys.modules[name]
    try:
        for name in PARENTS:
            module = types.ModuleType(name)
            module.__path__ = [str(src.joinpath(*name.split(".")))]
            sys.modules[name] = module
        yield types.SimpleNamespace(
            spec_info=importlib.import_module("sglang.srt.speculative.spec_info"),
            spec_registry=importlib.import_module("sglang.srt.speculative.spec_registry"),
            hook_registry=importlib.import_module("sglang.srt.plugins.hook_registry"),
        )
    finally:
        for name in [k for k in sys.modules if k == "sglang" or k.startswith(("sglang.", "jetspec_sglang.sglang"))]:
            del sys.modules[name]
        sys.modules.update(saved)

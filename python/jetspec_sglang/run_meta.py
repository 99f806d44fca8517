"""What every committed benchmark result records about its run: date, GPU, commit, versions, command,
and how fast the host runs Python (``host_python_ms``).

Small-model decoding at bs 1 is host-bound: plain SGLang's SmolLM2 step took 1.2 ms on one H200 lease
and 2.0 ms on another, which moves every speedup measured against it. ``host_python_ms`` lets results
from different machines be compared with that in view.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

_REPO = Path(__file__).resolve().parents[2]
STACK = ("sglang", "sglang-kernel", "flashinfer-python", "triton", "transformers")


def git_commit() -> str:
    """Short HEAD of this checkout, ``+dirty`` when tracked files differ from it ("unknown" outside git).

    ``JETSPEC_COMMIT`` overrides it: a copied working tree (a remote GPU machine) may carry a stale
    ``.git``, so the caller, who knows the commit it sent, names it.
    """
    if os.environ.get("JETSPEC_COMMIT"):
        return os.environ["JETSPEC_COMMIT"]

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=_REPO, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return head + ("+dirty" if head and git("status", "--porcelain", "--untracked-files=no") else "") or "unknown"


def package_versions(*names: str) -> dict[str, Optional[str]]:
    """Installed version of each distribution, None where it is not installed."""
    found: dict[str, Optional[str]] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def host_python_ms(repeats: int = 3) -> float:
    """Milliseconds of a fixed pure-Python workload on this host (best of ``repeats``): a host-speed yardstick."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i & 7
        best = min(best, time.perf_counter() - start)
    return round(1000 * best, 1)


def run_metadata(packages: tuple[str, ...] = STACK) -> dict[str, Any]:
    """Date (UTC), GPU, commit, torch/CUDA and ``packages`` versions, and this process's exact command line."""
    import torch

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)",
        "commit": git_commit(),
        "command": shlex.join(["python", *sys.argv]),
        "host_python_ms": host_python_ms(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        **package_versions(*packages),
    }

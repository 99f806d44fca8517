"""What every committed benchmark result records about its run: date, GPU, commit, versions, command."""

from __future__ import annotations

import argparse
import datetime
import subprocess
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]


def git_commit() -> str:
    """Short HEAD of this checkout, ``+dirty`` when the working tree differs from it ("unknown" outside git)."""

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=_REPO, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return head + ("+dirty" if head and git("status", "--porcelain", "--untracked-files=no") else "") or "unknown"


def run_metadata(script: str, args: argparse.Namespace) -> dict[str, Any]:
    """Date (UTC), GPU, commit, sglang/torch versions and the command line that reproduces ``args``."""
    import sglang
    import torch

    flags = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in vars(args).items() if v is not None)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0),
        "commit": git_commit(),
        "sglang": sglang.__version__,
        "torch": torch.__version__,
        "command": f"python {script} {flags}",
    }

"""Training checkpoints: the head in the published format plus optimizer, schedule and step.

Layout: ``<output_dir>/checkpoints/step-NNNNNNN/{head/, trainer_state.pt}``. A
checkpoint is written to a temporary folder and renamed, so a crash never
leaves a half-written one behind; only the newest ``keep`` are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..draft_head import DraftHead, load_head_state

STATE_NAME = "trainer_state.pt"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    head: DraftHead,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` (float32 head) and prune all but the newest ``keep`` (0 keeps all)."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    head.save_pretrained(tmp / "head", dtype=torch.float32)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **extra}
    torch.save(state, tmp / STATE_NAME)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / STATE_NAME).is_file())


def resolve_checkpoint(output_dir: str | Path, resume: str) -> Optional[Path]:
    """``"latest"``: the newest checkpoint under ``output_dir`` (None if there is none); else that path."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (no {STATE_NAME})")
    return path


def load_checkpoint(
    path: Path, head: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device
) -> dict[str, Any]:
    """Restore head weights, optimizer and schedule in place; returns the saved state (``step`` etc.)."""
    loaded = DraftHead.from_pretrained(path / "head", dtype=torch.float32)
    if loaded.config != head.config:
        raise ValueError(f"checkpoint {path} has head config {loaded.config}, the run builds {head.config}")
    load_head_state(head, loaded.state_dict())
    state = torch.load(path / STATE_NAME, map_location=device, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state

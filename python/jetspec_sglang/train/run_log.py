"""Training logs: CSV always, TensorBoard and a matplotlib plot when installed (rank 0 only).

``logs/train_log.csv`` has one row per logging interval, ``logs/tau_log.csv``
one row per tau evaluation. On resume, rows past the resumed step are dropped
so the files read as one run.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Optional


class RunLog:
    """Appends metric rows; a no-op when ``enabled`` is False (ranks other than 0)."""

    def __init__(self, directory: str | Path, *, enabled: bool, resume_step: int = 0) -> None:
        self.directory = Path(directory)
        self.enabled = enabled
        self._tb: Any = None
        if not enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in ("train_log.csv", "tau_log.csv"):
            _truncate_after(self.directory / name, resume_step)
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            self._tb = SummaryWriter(str(self.directory / "tensorboard"), purge_step=resume_step or None)
        except ImportError:
            self._tb = None

    def train(self, row: Mapping[str, float]) -> None:
        self._append("train_log.csv", row)

    def tau(self, step: int, tau: Mapping[str, float]) -> None:
        self._append("tau_log.csv", {"step": step, **{f"tau_{k}": v for k, v in tau.items()}})

    def _append(self, name: str, row: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        path = self.directory / name
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self._tb is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key != "step":
                    self._tb.add_scalar(f"{Path(name).stem}/{key}", float(value), step)

    def close(self) -> Optional[Path]:
        """Flush TensorBoard and draw ``training.png``; returns the plot path if matplotlib is installed."""
        if not self.enabled:
            return None
        if self._tb is not None:
            self._tb.close()
        return plot_run(self.directory)


def read_rows(path: str | Path) -> list[dict[str, float]]:
    """The rows of a log CSV as floats (empty if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0]) if rows else []
    if not rows:
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(r for r in rows if int(float(r["step"])) <= step)


def plot_run(directory: str | Path) -> Optional[Path]:
    """Loss and tau against step, from the CSVs in ``directory``; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    directory = Path(directory)
    train, tau = read_rows(directory / "train_log.csv"), read_rows(directory / "tau_log.csv")
    fig, (ax_loss, ax_tau) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="KL loss")
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", title="distillation loss")
    for key in sorted({k for r in tau for k in r if k.startswith("tau_")}):
        pts = [(r["step"], r[key]) for r in tau if key in r]
        ax_tau.plot(*zip(*pts), marker="o", label=key.removeprefix("tau_"))
    ax_tau.set(xlabel="step", ylabel="tokens per target forward", title="offline tau (held-out prompts)")
    for ax in (ax_loss, ax_tau):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    out = directory / "training.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

"""Training configuration: one frozen dataclass, read from JSON with CLI overrides.

A config file is a flat JSON object of ``TrainConfig`` fields (keys starting
with ``_`` are comments). Every field is also a ``jetspec train`` option,
``--field-name VALUE``, converted to the field's type: ``--gamma null``,
``--causal false`` and ``--eval-budgets 16,64`` all work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything ``jetspec train`` needs. See ``benchmark/recipes/*.json`` for worked examples.

    Paths: ``target`` (HF folder of the frozen target), ``data`` (``jetspec
    generate-data`` output), ``output_dir`` (final head, ``logs/``, ``checkpoints/``).
    Head shape (fresh heads, ``DraftHeadConfig.for_target``): ``num_hidden_layers``,
    ``num_taps``/``target_layer_ids``, ``block_size``, ``mask_token_id``, ``causal``,
    ``intermediate_size``; or ``init_head`` to continue from an existing head.
    Batches: ``batch_size`` sequences per rank per micro-step, ``grad_accum`` micro-steps
    per optimizer step, ``num_anchors`` blocks per sequence, ``max_seq_len`` tokens.
    Length: ``epochs`` over the data, or ``max_steps`` optimizer steps when set.
    """

    target: str = ""
    data: str = ""
    output_dir: str = ""
    # head
    num_hidden_layers: int = 4
    num_taps: Optional[int] = None
    target_layer_ids: Optional[tuple[int, ...]] = None
    block_size: int = 16
    mask_token_id: Optional[int] = None
    causal: bool = True
    intermediate_size: Optional[int] = None
    init_head: Optional[str] = None
    # data and anchors
    max_seq_len: int = 2048
    num_anchors: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int = 1
    max_steps: Optional[int] = None
    # loss
    kd_temperature: float = 1.0
    gamma: Optional[float] = None
    loss_chunk_anchors: Optional[int] = None
    # optimizer and schedule
    lr: float = 6e-4
    min_lr_ratio: float = 0.0
    warmup_ratio: float = 0.04
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    # device and precision (None = this rank's CUDA device if any, else CPU; bf16 autocast and a
    # bf16 target on CUDA, float32 on CPU)
    device: Optional[str] = None
    bf16: Optional[bool] = None
    # logging, evaluation, checkpoints (0 = only at the end)
    log_every: int = 10
    save_every: int = 0
    keep_checkpoints: int = 2
    eval_every: int = 0
    eval_prompts: int = 8
    eval_max_new_tokens: int = 128
    eval_budgets: tuple[int, ...] = (16, 64, 128)
    eval_topk: int = 8
    eval_chain: bool = True
    save_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        for name in ("target", "data", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required (set it in the config file or pass --{name.replace('_', '-')})")
        positive = ("num_hidden_layers", "block_size", "max_seq_len", "num_anchors", "batch_size", "grad_accum",
                    "epochs", "log_every", "eval_max_new_tokens", "eval_topk")
        bad = [f"{n}={getattr(self, n)}" for n in positive if getattr(self, n) < 1]
        bad += [f"{n}={getattr(self, n)}" for n in ("save_every", "eval_every", "eval_prompts", "keep_checkpoints",
                                                     "weight_decay", "grad_clip") if getattr(self, n) < 0]
        if self.max_steps is not None and self.max_steps < 1:
            bad.append(f"max_steps={self.max_steps}")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.min_lr_ratio <= 1 or not self.lr > 0:
            bad.append(f"lr={self.lr}, warmup_ratio={self.warmup_ratio}, min_lr_ratio={self.min_lr_ratio}")
        if self.device not in (None, "cuda", "cpu"):
            bad.append(f"device={self.device!r} (cuda or cpu; under torchrun each rank takes cuda:LOCAL_RANK)")
        if self.save_dtype not in ("bfloat16", "float16", "float32"):
            bad.append(f"save_dtype={self.save_dtype!r} (bfloat16, float16 or float32)")
        if bad:
            raise ValueError("invalid training config: " + ", ".join(bad))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a flat mapping; unknown keys raise, ``_``-prefixed keys are ignored."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in values if k not in names and not k.startswith("_"))
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(names)}")
        return cls(**{k: _coerce(str(names[k].type), v) for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _coerce(annotation: str, value: Any) -> Any:
    """Turn a JSON or command-line value into the field's type."""
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and "Optional" in annotation):
        return None
    if "tuple" in annotation:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        return tuple(int(v) for v in value)
    if "bool" in annotation:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"expected true or false, got {value!r}")
            return value.lower() in ("true", "1")
        return bool(value)
    if "int" in annotation:
        return int(value)
    if "float" in annotation:
        return float(value)
    return str(value)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` option per ``TrainConfig`` field (default: the config file's value)."""
    group = parser.add_argument_group("config overrides (each TrainConfig field)")
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None, metavar="VALUE",
                           help=f"default {json.dumps(default)}")


def load_config(path: Optional[str | Path], overrides: Mapping[str, Any]) -> TrainConfig:
    """The JSON file at ``path`` (if any) updated by the non-None ``overrides``."""
    values: dict[str, Any] = {}
    if path:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)

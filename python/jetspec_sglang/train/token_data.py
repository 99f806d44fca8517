"""The token-id training set on disk, and its batches.

A data directory holds ``manifest.json`` and parquet shards ``shard-NNNNN.parquet``
(written by ``jetspec generate-data``). One row is one target response:

=================  ==============  ===============================================
column             type            meaning
=================  ==============  ===============================================
``prompt_index``   int64           index of the prompt in the generation job list
``source``         string          where the prompt came from
``temperature``    float32         sampling temperature of the response (0 = greedy)
``prompt_ids``     list<int32>     chat-templated prompt
``response_ids``   list<int32>     the target's response, ending in eos if ``finished``
``loss_start``     int32           first trained position = ``len(prompt_ids)``
``finished``       bool            False if cut by ``max_new_tokens``
=================  ==============  ===============================================

The trainer concatenates prompt and response; the loss mask is
``position >= loss_start``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

FORMAT = "jetspec-tokens/1"
MANIFEST_NAME = "manifest.json"
SHARD_GLOB = "shard-*.parquet"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("prompt_index", pa.int64()),
            ("source", pa.string()),
            ("temperature", pa.float32()),
            ("prompt_ids", pa.list_(pa.int32())),
            ("response_ids", pa.list_(pa.int32())),
            ("loss_start", pa.int32()),
            ("finished", pa.bool_()),
        ]
    )


def write_shard(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write rows (dicts with the columns above, ``loss_start`` optional) atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list[Any]] = {name: [] for name in _schema().names}
    for row in rows:
        for name in columns:
            if name == "loss_start":
                columns[name].append(len(row["prompt_ids"]))
            else:
                columns[name].append(row[name])
    table = pa.table(columns, schema=_schema())
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point --data at a directory written by `jetspec generate-data`")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


@dataclass
class TokenDataset:
    """Every row of a data directory, in memory (int32 token ids).

    Attributes:
        sequences: per row, prompt then response ids, ``[L]`` int32.
        loss_start: ``[rows]`` int64 first trained position of each row.
        prompt_index: ``[rows]`` int64.
        manifest: the directory's manifest.
    """

    sequences: list[np.ndarray]
    loss_start: np.ndarray
    prompt_index: np.ndarray
    manifest: dict[str, Any]

    @classmethod
    def load(cls, directory: str | Path) -> "TokenDataset":
        import pyarrow.parquet as pq

        directory = Path(directory)
        manifest = read_manifest(directory)
        sequences: list[np.ndarray] = []
        starts: list[int] = []
        prompts: list[int] = []
        for shard in sorted(directory.glob(SHARD_GLOB)):
            table = pq.read_table(shard, columns=["prompt_index", "prompt_ids", "response_ids", "loss_start"])
            for p_idx, p_ids, r_ids, start in zip(*(table.column(c).to_pylist() for c in table.column_names)):
                sequences.append(np.asarray(p_ids + r_ids, dtype=np.int32))
                starts.append(start)
                prompts.append(p_idx)
        if not sequences:
            raise ValueError(f"{directory} has a manifest but no {SHARD_GLOB} rows")
        return cls(sequences, np.asarray(starts, dtype=np.int64), np.asarray(prompts, dtype=np.int64), manifest)

    def __len__(self) -> int:
        return len(self.sequences)

    def lengths(self, max_seq_len: int) -> np.ndarray:
        return np.minimum(np.asarray([len(s) for s in self.sequences]), max_seq_len)

    def prompt_ids(self, row: int) -> list[int]:
        return self.sequences[row][: self.loss_start[row]].tolist()

    def split(self, num_eval_prompts: int, max_seq_len: int, seed: int) -> tuple[np.ndarray, list[int]]:
        """Hold out whole prompts for the tau evaluation.

        Returns the training rows (every response of a held-out prompt removed,
        rows with no response token inside ``max_seq_len`` dropped) and one row
        per held-out prompt (its prompt ids are the evaluation prompt).
        """
        unique = np.unique(self.prompt_index)
        rng = np.random.default_rng(seed)
        held = set(rng.choice(unique, size=min(num_eval_prompts, max(len(unique) - 1, 0)), replace=False).tolist())
        trainable = self.loss_start < self.lengths(max_seq_len)
        is_held = np.isin(self.prompt_index, list(held))
        train_rows = np.flatnonzero(trainable & ~is_held)
        eval_rows: list[int] = []
        seen: set[int] = set()
        for row in np.flatnonzero(is_held).tolist():
            if self.prompt_index[row] not in seen:
                seen.add(int(self.prompt_index[row]))
                eval_rows.append(row)
        return train_rows, eval_rows


@dataclass(frozen=True, slots=True)
class Batch:
    """A right-padded batch.

    Attributes:
        input_ids: ``[bs, T]`` int64, padding 0.
        attention_mask: ``[bs, T]`` int64, 1 on real tokens.
        loss_mask: ``[bs, T]`` bool, True on response tokens.
    """

    input_ids: Tensor
    attention_mask: Tensor
    loss_mask: Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.input_ids, self.attention_mask, self.loss_mask)))

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(dataset: TokenDataset, rows: Sequence[int], max_seq_len: int) -> Batch:
    """Stack ``rows`` (each cut to ``max_seq_len``) into a right-padded ``Batch``."""
    seqs = [dataset.sequences[r][:max_seq_len] for r in rows]
    seq_len = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), seq_len, dtype=torch.int64)
    attn = torch.zeros(len(seqs), seq_len, dtype=torch.int64)
    loss = torch.zeros(len(seqs), seq_len, dtype=torch.bool)
    for i, (row, s) in enumerate(zip(rows, seqs)):
        ids[i, : len(s)] = torch.from_numpy(s.astype(np.int64))
        attn[i, : len(s)] = 1
        loss[i, int(dataset.loss_start[row]) : len(s)] = True
    return Batch(ids, attn, loss)


def epoch_batches(
    rows: np.ndarray,
    lengths: np.ndarray,
    batch_size: int,
    *,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int,
    group: int = 32,
) -> list[np.ndarray]:
    """This rank's batches for one epoch, DistributedSampler-style.

    Every rank computes the same global order (seeded by ``seed`` and ``epoch``),
    padded by wrapping to whole global batches of ``world_size * batch_size``,
    so all ranks get the same number of batches. Rows are grouped by length
    (within windows of ``group`` global batches) to cut padding; the global
    batches are then shuffled, and rank ``r`` takes slice ``r`` of each.

    Parameters:
        rows: ``[n]`` int64 dataset rows to use.
        lengths: ``[len(dataset)]`` token counts (after truncation).
    """
    if len(rows) == 0:
        raise ValueError("no training rows: every row was held out or has no response inside max_seq_len")
    rng = np.random.default_rng([seed, epoch])
    global_bs = world_size * batch_size
    order = rng.permutation(rows)
    pad = (-len(order)) % global_bs
    order = np.concatenate([order, np.resize(order, pad)]) if pad else order
    window = global_bs * group
    grouped = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        grouped.append(chunk[np.argsort(-lengths[chunk], kind="stable")])
    order = np.concatenate(grouped).reshape(-1, global_bs)
    order = order[rng.permutation(len(order))]
    return [g[rank * batch_size : (rank + 1) * batch_size] for g in order]

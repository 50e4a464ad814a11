"""From records to batches: validation split, the fit check, and a lazily-encoding Dataset.

Encoding (chat template, image loading, processor) happens per item, when the DataLoader asks;
nothing of it is kept in memory. Before training, one pass checks which pairs fit `max_length`
so the number of steps is known, every process sees the same pairs, and every pair left out is
reported (never silently lost): length drops apart from bad data (a damaged image, another
model's chat template), which on_invalid turns into an error or a skip.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from vlmdpo.types import Batch, Dropped, EncodedPair, PreferenceRecord, RowError

Encoder = Callable[[PreferenceRecord], EncodedPair]


@dataclass
class StepBatch:
    """A collated batch plus the dataset positions of its pairs (keys into the reference cache)."""

    batch: Batch
    indices: list[int]
    counted: bool = True  # False: run only to keep sharded processes in step (run.py:Batching.eval_batches)

    @property
    def num_tokens(self) -> int:
        return self.batch.num_tokens


def split_validation(records: list[PreferenceRecord], val_size: float, seed: int
                     ) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
    """Seeded random split: val_size < 1 is a fraction (at least one pair), >= 1 a count."""
    if not val_size:
        return records, []
    n = len(records)
    n_val = int(val_size) if val_size >= 1 else max(1, round(n * val_size))
    if n_val >= n:
        raise ValueError(f"val_size={val_size} would leave no training pairs out of {n}; "
                         "lower val_size or add data")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val_idx = set(order[:n_val])
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val


def fit_check(records: Sequence[PreferenceRecord], encode: Encoder, indices: Sequence[int], num_proc: int = 1
              ) -> tuple[list[int], list[Dropped], list[RowError]]:
    """Encode each record at `indices`: (kept positions, pairs that do not fit max_length, pairs
    with bad data). Which is which is a property of the EncodeError's kind (`encode.LENGTH_KINDS`).
    With `num_proc` > 1 (dataset_num_proc) the pairs are encoded in that many worker processes
    (`encode` and the records must pickle); the lists are the same, in the same order."""
    indices = list(indices)
    if num_proc > 1 and len(indices) > 1:
        return _fit_check_parallel(records, encode, indices, num_proc)
    from vlmdpo.encode import EncodeError, bad_row, dropped_pair, is_length_problem

    kept, dropped, bad = [], [], []
    for i in indices:
        rec = records[i]
        try:
            encode(rec)
        except EncodeError as e:
            if is_length_problem(e.kind):
                dropped.append(dropped_pair(rec, e))
            else:
                bad.append(bad_row(rec, e))
        else:
            kept.append(i)
    return kept, dropped, bad


def _fit_check_parallel(records: Sequence[PreferenceRecord], encode: Encoder, indices: list[int], num_proc: int
                        ) -> tuple[list[int], list[Dropped], list[RowError]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # several chunks per process even out slow (large-image) stretches; results are joined in order.
    # Forked on Linux, as torch's DataLoader workers are (they never touch CUDA, and a spawned process
    # spends seconds importing torch and transformers again); spawned elsewhere (macOS forks badly).
    size = -(-len(indices) // (num_proc * 4))
    chunks = [indices[i:i + size] for i in range(0, len(indices), size)]
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    kept, dropped, bad = [], [], []
    with ProcessPoolExecutor(min(num_proc, len(chunks)), mp_context=multiprocessing.get_context(method),
                             initializer=_one_thread) as pool:
        futures = [pool.submit(_fit_chunk, [records[i] for i in chunk], encode, chunk) for chunk in chunks]
        for future in futures:
            k, d, b = future.result()
            kept += k
            dropped += d
            bad += b
    return kept, dropped, bad


def _one_thread() -> None:
    torch.set_num_threads(1)  # num_proc processes, not num_proc x cores threads


def _fit_chunk(recs: list[PreferenceRecord], encode: Encoder, positions: list[int]
               ) -> tuple[list[int], list[Dropped], list[RowError]]:
    kept, dropped, bad = fit_check(recs, encode, range(len(recs)))
    return [positions[i] for i in kept], dropped, bad


def write_dropped(path: Path, dropped: Sequence[Dropped], split: str) -> None:
    if not dropped:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for d in dropped:
            f.write(json.dumps({"split": split, "id": d.id, "source": d.source, "kind": d.kind,
                                "message": d.message}) + "\n")


def write_rejected(path: Path, bad: Sequence[RowError]) -> None:
    """Append bad pairs to the rejected_rows file data loading started (same fields per line)."""
    if not bad:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for e in bad:
            f.write(json.dumps({"file": e.file, "row": e.row, "kind": e.kind, "field": e.field,
                                "message": e.message, "fix": e.fix, "stage": "encoding"}) + "\n")


def summarize_dropped(dropped: Sequence[Dropped], total: int, split: str, limit: int = 5) -> str:
    lines = [f"{split}: dropped {len(dropped)} of {total} pairs that do not fit (max_length / truncation):"]
    return "\n".join(lines + _first(dropped, limit))


def summarize_bad(bad: Sequence[RowError], total: int, split: str, limit: int = 5) -> str:
    lines = [f"{split}: skipped {len(bad)} of {total} pairs with bad data (on_invalid: skip):"]
    return "\n".join(lines + _first(bad, limit))


def _first(items: Sequence, limit: int) -> list[str]:
    lines = [f"  {d}" for d in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return lines


class EncodedPairs(torch.utils.data.Dataset):
    """records[keep[i]] encoded on access; items are (position, EncodedPair)."""

    def __init__(self, records: Sequence[PreferenceRecord], keep: Sequence[int], encode: Encoder):
        self.records = records
        self.keep = list(keep)
        self.encode = encode

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> tuple[int, EncodedPair]:
        return i, self.encode(self.records[self.keep[i]])


def make_collate(collate_fn: Callable[[list[EncodedPair]], Batch]) -> Callable:
    def _collate(items: list[tuple[int, EncodedPair]]) -> StepBatch:
        return StepBatch(collate_fn([p for _, p in items]), [i for i, _ in items])

    return _collate


def make_loader(dataset: EncodedPairs, batches: list[list[int]], collate: Callable, num_workers: int):
    # A dedicated generator keeps the DataLoader from drawing on the global torch RNG, which
    # would shift dropout masks between an uninterrupted run and a resumed one.
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                       num_workers=num_workers, generator=torch.Generator().manual_seed(0))


def to_device(step: StepBatch, device: torch.device) -> StepBatch:
    return replace(step, batch=step.batch.to(device))

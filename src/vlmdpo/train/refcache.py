"""Reference log-probs computed once and cached on disk (images included, unlike TRL).

The cache file name is a hash of everything the numbers depend on: the reference model's
identity, the chat template, the encoding settings and the content of every pair in order
(texts and image files or bytes). A rerun with the same inputs loads the file instead of
running the reference model; any change gives a new key and a fresh computation.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from vlmdpo.types import ImageRef, LogpPair, PreferenceRecord

CACHE_VERSION = 1
FIELDS = ("chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths",
          "chosen_shared_logps", "rejected_shared_logps")


def _image_fingerprint(ref: ImageRef) -> Any:
    if ref.path is not None:
        try:
            st = os.stat(ref.path)
            return [ref.path, st.st_size, st.st_mtime_ns]
        except OSError:
            return [ref.path]
    if ref.data is not None:
        return hashlib.sha256(ref.data).hexdigest()
    if ref.url is not None:
        return ref.url
    if ref.pil is not None:
        return hashlib.sha256(ref.pil.tobytes()).hexdigest() + str(ref.pil.size)
    return None


def record_fingerprint(rec: PreferenceRecord) -> str:
    body = {"id": rec.id, "prompt": rec.prompt, "chosen": rec.chosen, "rejected": rec.rejected,
            "images": [_image_fingerprint(r) for r in rec.images],
            "rejected_images": None if rec.rejected_images is None else [_image_fingerprint(r)
                                                                          for r in rec.rejected_images],
            "videos": [_image_fingerprint(r) for r in rec.videos]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def model_identity(name: str) -> Any:
    """What identifies the reference weights: the name, and for a local folder its files' sizes and times."""
    p = Path(name)
    if not p.is_dir():
        return name
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".gguf"))
    return [str(p.resolve())] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def cache_key(cfg, processor, records: Sequence[PreferenceRecord], keep: Sequence[int]) -> str:
    import transformers

    tok = getattr(processor, "tokenizer", processor)
    template = getattr(processor, "chat_template", None) or getattr(tok, "chat_template", None)
    h = hashlib.sha256()
    head = {"v": CACHE_VERSION, "model": model_identity(cfg.model_name_or_path), "dtype": cfg.dtype,
            "qlora": cfg.finetuning_type == "qlora", "attn": cfg.attn_implementation,
            "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
            "template": template, "vocab": len(tok) if hasattr(tok, "__len__") else None,
            "max_length": cfg.max_length, "truncation": cfg.truncation,
            "image_max_pixels": cfg.image_max_pixels, "image_min_pixels": cfg.image_min_pixels,
            "video": [cfg.video_fps, cfg.video_max_frames, cfg.video_max_pixels]}
    if cfg.max_prompt_length or cfg.max_completion_length:  # only when set: earlier caches keep their keys
        head["cut"] = [cfg.max_prompt_length, cfg.max_completion_length]
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for i in keep:
        h.update(record_fingerprint(records[i]).encode())
    return h.hexdigest()[:32]


class RefCache:
    """Reference LogpPair values for every kept pair, indexed by position in the dataset."""

    def __init__(self, values: dict[str, torch.Tensor]):
        self.values = values

    def __len__(self) -> int:
        return int(self.values["chosen_logps"].shape[0])

    def lookup(self, positions: Sequence[int], device: torch.device) -> LogpPair:
        idx = torch.as_tensor(list(positions), dtype=torch.long)
        got = {k: (v[idx].to(device) if v is not None else None) for k, v in self.values.items()}
        return LogpPair(**{k: got.get(k) for k in FIELDS})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(self.values, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "RefCache":
        return cls(torch.load(path, map_location="cpu", weights_only=True))


def compute_ref_cache(positions: Sequence[int], batches_of: Callable[[list[int]], Any],
                      ref_logps: Callable[[Any], LogpPair], n_total: int, accelerator) -> RefCache:
    """Run the reference over this process's share of `positions`, then gather everyone's share.

    `batches_of(shard)` yields device-ready StepBatches; `ref_logps(batch)` returns a LogpPair.
    """
    from accelerate.utils import gather_object

    mine: list[tuple[int, list[float | None]]] = []
    for step in batches_of(list(positions)):
        lp = ref_logps(step.batch)
        if not step.counted:
            continue
        cols = [getattr(lp, f) for f in FIELDS]
        for j, pos in enumerate(step.indices):
            mine.append((pos, [None if c is None else float(c[j]) for c in cols]))
    everyone = gather_object(mine) if accelerator.num_processes > 1 else mine
    out: dict[str, torch.Tensor | None] = {}
    for k, f in enumerate(FIELDS):
        if any(row[k] is None for _, row in everyone):
            out[f] = None
            continue
        t = torch.full((n_total,), float("nan"), dtype=torch.float32)
        for pos, row in everyone:
            t[pos] = row[k]
        out[f] = t
    missing = torch.isnan(out["chosen_logps"]).sum().item()
    if missing:
        raise RuntimeError(f"reference log-prob precompute covered {n_total - missing} of {n_total} pairs")
    return RefCache(out)


def default_cache_dir(output_dir: str, ref_cache_dir: str | None) -> Path:
    # A sibling of output_dir, so reruns into a new output folder next to it reuse the cache.
    return Path(ref_cache_dir) if ref_cache_dir else Path(output_dir).resolve().parent / ".vlmdpo_ref_cache"

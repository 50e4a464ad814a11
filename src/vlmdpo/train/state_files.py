"""What a checkpoint holds, written and read without pickle: tensors in safetensors, the rest in JSON.

Nothing here calls pickle or `torch.load`, so a checkpoint from someone else cannot run code when
it is loaded. Every reader names the damaged file and what to do about it.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vlmdpo import atomic
from vlmdpo.errors import FixableError

MODEL = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
SCHEDULER = "scheduler.json"
SCALER = "scaler.json"


class CheckpointError(FixableError):
    """A checkpoint file that is missing, damaged or does not fit this run."""


def rng_files(rank: int) -> tuple[str, str]:
    return f"rng_{rank}.safetensors", f"rng_{rank}.json"


def trainable_weights(model) -> dict[str, torch.Tensor]:
    """The trainable tensors by name; tied weights once (loading one restores both)."""
    out, seen = {}, set()
    for name, p in model.named_parameters():
        if p.requires_grad and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            out[name] = p.detach()
    return out


def nonfinite(weights: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, t in weights.items() if not bool(torch.isfinite(t).all())]


def _tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def _read(path: Path, parse: Callable[[bytes], Any], fix: str) -> Any:
    """Parse a checkpoint file, or one CheckpointError naming it and the fix."""
    try:
        data = path.read_bytes()
        if not data:
            raise ValueError("the file is empty")
        return parse(data)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing from the checkpoint", fix) from None
    except Exception as e:  # safetensors, JSON, and shape errors all mean the same thing to the user
        raise CheckpointError(f"{path}: damaged or unreadable ({type(e).__name__}: {str(e)[:120]})", fix) from None


def read_json(path: Path, fix: str) -> Any:
    return _read(path, lambda b: json.loads(b.decode("utf-8")), fix)


def save_model(folder: Path, model) -> None:
    atomic.write_bytes(folder / MODEL, _tensors_bytes(trainable_weights(model)))


def load_model(folder: Path, model, fix: str) -> None:
    weights = _read(folder / MODEL, st_load, fix)
    expected = trainable_weights(model)
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(dict(model.named_parameters())))
    wrong = [k for k in weights if k in expected and weights[k].shape != expected[k].shape]
    if missing or extra or wrong:
        what = "; ".join(f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                         for label, names in (("missing", missing), ("unexpected", extra), ("other shape", wrong))
                         if names)
        raise CheckpointError(f"{folder / MODEL}: its weights do not fit this model ({what})", fix)
    model.load_state_dict(weights, strict=False)


def save_optimizer(folder: Path, optimizer) -> None:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    atomic.write_bytes(folder / OPTIMIZER, _tensors_bytes(tensors))
    atomic.write_text(folder / OPTIMIZER_META, json.dumps({"param_groups": sd["param_groups"], "scalars": scalars}))


def load_optimizer(folder: Path, optimizer, fix: str) -> None:
    tensors = _read(folder / OPTIMIZER, st_load, fix)
    meta = read_json(folder / OPTIMIZER_META, fix)
    state: dict[int, dict[str, Any]] = {}
    try:
        for key, t in tensors.items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = t
        for pid, values in meta.get("scalars", {}).items():
            state.setdefault(int(pid), {}).update(values)
    except (AttributeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / OPTIMIZER_META}: not an optimizer state ({e})", fix) from None
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except Exception as e:  # a wrong shape of JSON or of tensors: the file does not belong here
        raise CheckpointError(f"{folder / OPTIMIZER_META}: does not fit this run's optimizer ({e})", fix) from None


def save_json(path: Path, value: Any) -> None:
    atomic.write_text(path, json.dumps(value))


def save_rng(folder: Path, rank: int) -> None:
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    np_state = np.random.get_state()
    py_state = random.getstate()
    st_name, json_name = rng_files(rank)
    atomic.write_bytes(folder / st_name, _tensors_bytes(tensors))
    atomic.write_text(folder / json_name, json.dumps({
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *[float(x) if isinstance(x, float) else int(x)
                                                         for x in np_state[2:]]]}))


def load_rng(folder: Path, rank: int, fix: str) -> None:
    st_name, json_name = rng_files(rank)
    tensors = _read(folder / st_name, st_load, fix)
    other = read_json(folder / json_name, fix)
    try:
        torch.set_rng_state(tensors["cpu"])
        cuda = [tensors[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in tensors))]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
        py = other["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        np_state = other["numpy"]
        np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    except Exception as e:  # wrong keys, types or sizes: not the RNG state this run saved
        raise CheckpointError(f"{folder / st_name} / {json_name}: not a random-number state ({e})", fix) from None

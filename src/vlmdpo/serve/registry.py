"""The served models: `--model DIR_OR_NAME` / `--model NAME=DIR`, loaded with the one loader
(`vlmdpo.inference.load_for_inference`). LoRA adapters over the same base share one copy of the base
weights: the first adapter loads the base, the others join it with peft's `load_adapter`, and the
base itself is served with the adapters disabled, so base and tuned side by side cost one base.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vlmdpo.errors import FixableError
from vlmdpo.serve.schema import ApiError


class ServeError(FixableError):
    """A server that cannot start as asked (a bad --model value, a missing package)."""


@dataclass
class Served:
    name: str  # what clients put in "model"
    engine: Any  # TransformersEngine or VllmEngine
    adapter: str | None  # peft adapter name inside the engine's model; None: the base
    source: str  # the folder or name it came from
    max_images: int


def parse_model_args(values: list[str]) -> list[tuple[str, str]]:
    """`NAME=DIR` or a bare `DIR_OR_NAME` (served under that string) -> [(name, source)]."""
    out: list[tuple[str, str]] = []
    for value in values:
        name, sep, source = value.partition("=")
        if not sep or not name or "/" in name and Path(value).exists():
            name, source = value, value
        if not source:
            raise ServeError(f"--model {value!r}: nothing after '='", "write --model NAME=DIR_OR_NAME")
        if name in (n for n, _ in out):
            raise ServeError(f"--model: the name {name!r} is given twice", "give each model its own NAME=")
        out.append((name, source))
    if not out:
        raise ServeError("no --model given", "pass --model DIR_OR_NAME (repeatable as --model NAME=DIR)")
    return out


def adapter_base(source: str) -> str | None:
    """The base an adapter folder records (as `load_for_inference` finds it), None for anything else."""
    from vlmdpo.inference import read_train_config

    path = Path(source).expanduser()
    config = path / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        recorded = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except json.JSONDecodeError:
        return None  # load_for_inference reports it with the fix
    return recorded or read_train_config(path).get("model_name_or_path")


def _same(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return a == b or (pa.exists() and pb.exists() and pa.resolve() == pb.resolve())


def max_images(im, limit: int) -> int:
    from vlmdpo.model.families import UnsupportedModelError, adapter_for

    if not im.is_vlm:
        return 0
    try:
        return limit if adapter_for(im.base_model).supports_multi_image else 1
    except UnsupportedModelError:
        return limit


def _join(engine: Any, source: str, adapter: str) -> bool:
    """Load one more adapter into the engine's PeftModel; False when peft cannot hold both (a module
    that one adapter trains in full and the other wraps with LoRA)."""
    model = engine.im.model
    try:
        model.load_adapter(str(Path(source).expanduser()), adapter_name=adapter)
    except (KeyError, ValueError, RuntimeError):
        if adapter in getattr(model, "peft_config", {}):
            model.delete_adapter(adapter)
        return False
    return True


def load_models(models: list[tuple[str, str]], make_engine: Callable[[Any], Any], *, loader: Callable[..., Any],
                image_limit: int = 8) -> dict[str, Served]:
    """Load every model once: adapters first (the first of a base loads it), then the plain models,
    which reuse an adapters' base when they name it (served with the adapters off)."""
    bases = {name: adapter_base(source) for name, source in models}
    groups: dict[str, Any] = {}  # base source -> engine
    served: dict[str, Served] = {}

    def find(source: str) -> str | None:
        return next((key for key in groups if _same(key, source)), None)

    for i, (name, source) in enumerate(models):
        base = bases[name]
        if base is None:
            continue
        key = find(base)
        engine = groups[key] if key is not None else None
        adapter = f"adapter{i}"
        if engine is not None and not _join(engine, source, adapter):
            engine = None  # its layout clashes with the adapters already there: it gets its own base
        if engine is None:
            engine, adapter = make_engine(loader(source)), "default"
            groups.setdefault(base, engine)
        served[name] = Served(name, engine, adapter, source, max_images(engine.im, image_limit))
    for name, source in models:
        if bases[name] is not None:
            continue
        key = find(source)
        engine = groups[key] if key is not None else make_engine(loader(source))
        groups.setdefault(source, engine)
        # a checkpoint folder is its run's policy (a PeftModel whose adapter is "default"); a base that
        # adapters joined is served with them off
        adapter = "default" if engine.im.kind == "checkpoint" else None
        served[name] = Served(name, engine, adapter, source, max_images(engine.im, image_limit))
    return {name: served[name] for name, _ in models}


def lookup(served: dict[str, Served], name: str) -> Served:
    if name not in served:
        raise ApiError(404, f"model: {name!r} is not served here; use one of: {', '.join(served)}",
                       param="model", code="model_not_found")
    return served[name]

"""`tiny:<family>` and `builtin:<name>`: models vlmdpo builds itself. Only this module reads the prefixes.

Both build in memory (tiny: random weights; builtin: from the package cache, built on first use),
so neither can be loaded quantized.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from vlmdpo.errors import ModelLoadError

TINY, BUILTIN = "tiny:", "builtin:"


def is_named(name: str) -> bool:
    return str(name).startswith((TINY, BUILTIN))


def is_builtin(name: str | None) -> bool:
    return bool(name) and str(name).startswith(BUILTIN)


def _tiny_family(name: str) -> str:
    from vlmdpo.model.tiny import FAMILIES

    family = name.removeprefix(TINY)
    if family not in FAMILIES:
        raise ModelLoadError(f"unknown tiny model {name!r}", f"use one of: tiny:{', tiny:'.join(FAMILIES)}")
    return family


def _builtin_name(name: str) -> str:
    from vlmdpo.model.builtin import BUILTIN_NAMES, BuiltinModelError

    short = name.removeprefix(BUILTIN)
    if not is_builtin(name) or short not in BUILTIN_NAMES:
        raise BuiltinModelError(f"unknown built-in model {name!r}",
                                f"use one of: builtin:{', builtin:'.join(BUILTIN_NAMES)}")
    return short


def build_named(name: str, *, dtype=None, attn_implementation: str | None = None) -> tuple[Any, Any]:
    """(model, processor) for a tiny / builtin name: float32 unless `dtype`; tiny models use eager
    attention unless told otherwise."""
    if name.startswith(TINY):
        from vlmdpo.model.tiny import build_tiny

        return build_tiny(_tiny_family(name), dtype=dtype, attn_implementation=attn_implementation or "eager")
    _builtin_name(name)
    from vlmdpo.model.builtin import build_nano_smolvlm

    return build_nano_smolvlm(dtype=dtype, attn_implementation=attn_implementation)


def ensure_builtin(name: str, *, progress: Callable[[str], None] | None = None) -> Path:
    """Build a builtin model into its cache ahead of use (the quickstart's "model build" step); its folder."""
    _builtin_name(name)
    from vlmdpo.model.builtin import ensure_nano_smolvlm

    return ensure_nano_smolvlm(progress=progress)


def family_of(name: str):
    """The family adapter of a model name or folder, read from its config alone (no weights loaded)."""
    from vlmdpo.model.families import adapter_for

    if name.startswith(TINY):
        return adapter_for(_tiny_family(name))
    if name.startswith(BUILTIN):
        _builtin_name(name)
        return adapter_for("idefics3")  # nano-smolvlm is the SmolVLM (Idefics3) architecture
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except Exception as e:  # noqa: BLE001 - not a folder / not on the hub / no network arrive as many types
        raise ModelLoadError(f"cannot read the config of model {name!r} ({str(e).splitlines()[0] if str(e) else e!r})",
                             "give a local model folder, a reachable hub id, tiny:<family> or builtin:nano-smolvlm") from None
    return adapter_for(config)


def video_refusal(name: str | None) -> tuple[str, str] | None:
    """(what, fix) when the model `name` cannot take video (None when it can, or when no model is named)."""
    if not name:
        return None
    family = family_of(name)
    if family.takes_video:
        return None
    return (f"{name} ({family.name}) does not take video",
            "use a Qwen2-VL/2.5-VL/3-VL model or drop the videos (on_invalid: skip skips such rows in training)")

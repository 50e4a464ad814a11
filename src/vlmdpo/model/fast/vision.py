"""Vision encoder once per pair, and once for policy and reference when it is frozen.

`encode_vision` runs the model's own `get_image_features` / `get_video_features` (vision tower
+ projector) and returns the `mm_encoder_outputs` mapping that transformers 5.23 forwards accept
instead of pixel values, so each family's own merging (Idefics3's inputs_merger, LLaVA-NeXT's
patch packing, Qwen3-VL's deepstack features) still runs unchanged.
"""
from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from vlmdpo.model.families import adapter_for
from vlmdpo.model.placement import to_model
from vlmdpo.types import SharedBatch

PIXEL_KEYS = ("pixel_values", "pixel_attention_mask", "pixel_values_videos")
# Inner-model attributes that hold the language model; everything else under the inner model
# (vision tower, projector, image_newline, ...) is the vision path.
_LANGUAGE_ATTRS = ("language_model", "text_model")


def unwrap(model: Any) -> Any:
    """The transformers model under DDP / PEFT wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(getattr(model, "module"), torch.nn.Module) and type(model).__name__ in (
            "DistributedDataParallel", "DataParallel", "DeepSpeedEngine"
        ):
            model = model.module
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        else:
            return model


def inner_model(model: Any) -> Any:
    base = unwrap(model)
    prefix = getattr(base, "base_model_prefix", "model")
    inner = getattr(base, prefix, None)
    return inner if isinstance(inner, torch.nn.Module) else base


def vision_parameters(model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    inner = inner_model(model)
    return [(n, p) for n, p in inner.named_parameters() if not n.startswith(tuple(a + "." for a in _LANGUAGE_ATTRS))
            and "embed_tokens" not in n]


def can_share_vision(model: Any) -> bool:
    """True when the vision path (tower + projector) is frozen and carries no adapters, so its
    output is the same for the policy and for the reference (frozen copy or adapters off).
    Assumes it has been frozen since the reference was taken (vlmdpo never unfreezes mid-run)."""
    inner = inner_model(model)
    if not callable(getattr(inner, "get_image_features", None)):
        return False
    if any(p.requires_grad for _, p in vision_parameters(model)):
        return False
    for name, mod in inner.named_modules():
        if name.split(".")[0] in _LANGUAGE_ATTRS:
            continue
        if hasattr(mod, "lora_A") or hasattr(mod, "base_layer") or hasattr(mod, "modules_to_save"):
            return False
    return True


def _has_adapters(module: torch.nn.Module) -> bool:
    return any(hasattr(m, "lora_A") or hasattr(m, "base_layer") or hasattr(m, "modules_to_save")
               for m in module.modules())


def frozen_tower(model: Any, family: Any = None) -> torch.nn.Module | None:
    """The vision tower module when it is frozen, adapter-free and separate from the projector
    (so its output can be replayed while a trainable projector still runs), else None.

    Qwen's patch merger (its projector) sits inside the tower module: there only the whole
    vision path can be shared (`can_share_vision`, needs freeze_projector: true).
    """
    base = unwrap(model)
    try:
        adapter = adapter_for(family if family is not None else base)
    except ValueError:
        return None
    if len(adapter.vision_tower) != 1:
        return None
    path = adapter.vision_tower[0]
    if any(p == path or p.startswith(path + ".") for p in adapter.projector):
        return None
    try:
        tower = base.get_submodule(path)
    except AttributeError:
        return None
    if any(p.requires_grad for p in tower.parameters()) or _has_adapters(tower):
        return None
    return tower


@contextmanager
def tower_replay(model: Any, batch: SharedBatch, family: Any = None) -> Iterator[None]:
    """Run the frozen vision tower at most once per batch across models.

    The first model to encode the batch's images keeps the tower's output on the batch; a later
    model (the policy after the reference, or the reverse) gets that output back instead of
    running its own identical tower, and its projector runs on it as usual.
    """
    tower = frozen_tower(model, family) if batch.vision else None
    if tower is None:
        yield
        return
    if batch.tower_cache is None:
        def keep(module, args, output):
            batch.tower_cache = output

        handle = tower.register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()
        return
    cached = batch.tower_cache
    saved = tower.__dict__.get("forward")
    tower.forward = lambda *args, **kwargs: cached
    try:
        yield
    finally:
        if saved is not None:
            tower.forward = saved
        else:
            del tower.forward


@contextmanager
def encode_in_forward(model: Any, encode: Callable[[], dict[str, Any] | None]) -> Iterator[None]:
    """Run `encode` at the start of the model's own call and hand what it returns (encoder outputs,
    or None to keep the pixel inputs) to the forward in place of the pixel inputs.

    Why inside the call: FSDP2 (`fully_shard`) keeps the root unit's parameters (patch embeddings,
    projector, ... everything not in a unit of its own) sharded until the root's pre-forward hook
    gathers them; the encoder run before the call would read shards. A pre-hook on the unwrapped
    model runs after that gather (a wrapper's call reaches it; FSDP's own hooks come first) and,
    being inside the call, puts the encoder in the graph whose gradients DDP / FSDP reduce.
    """
    def pre(module, args, kwargs):
        features = encode()
        if features is None:
            return None
        kept = {k: v for k, v in kwargs.items() if k not in PIXEL_KEYS}
        kept["mm_encoder_outputs"] = dict(features)  # a fresh dict: the forwards write into it
        return args, kept

    handle = unwrap(model).register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _call_features(fn: Any, values: dict[str, Any], first: str) -> Any:
    params = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in values.items() if k in params and k != first}
    return fn(values[first], return_dict=True, **kwargs)


def encode_vision(model: Any, vision: dict[str, Any], device: torch.device | None = None,
                  dtype: torch.dtype | None = None) -> dict[str, Any] | None:
    """{"image": ..., "video": ...} encoder outputs for `vision` inputs, or None without images."""
    inner = inner_model(model)
    if device is not None:
        vision = to_model(vision, device, dtype)
    out: dict[str, Any] = {}
    if vision.get("pixel_values") is not None:
        out["image"] = _call_features(inner.get_image_features, vision, "pixel_values")
    if vision.get("pixel_values_videos") is not None:  # Qwen-VL videos (tests/fast/test_video_equal_plain.py)
        out["video"] = _call_features(inner.get_video_features, vision, "pixel_values_videos")
    return out or None


def _twice(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.cat([x, x])
    if isinstance(x, tuple):
        return x + x
    if isinstance(x, list):
        return x + x
    raise TypeError(f"cannot repeat vision features of type {type(x).__name__}")


def repeat_features(features: dict[str, Any]) -> dict[str, Any]:
    """Features for a plain layout whose rows carry every pair's images twice (chosen rows,
    then rejected rows): the encoder runs once and its output is used twice."""
    out = {}
    for kind, value in features.items():
        v = copy.copy(value)
        v.pooler_output = _twice(value.pooler_output)
        deep = getattr(value, "deepstack_features", None)
        if deep is not None:
            v.deepstack_features = [_twice(layer) for layer in deep]
        out[kind] = v
    return out


def batch_vision_features(model: Any, batch: SharedBatch, device: torch.device | None = None,
                          dtype: torch.dtype | None = None) -> dict[str, Any] | None:
    """Encoder outputs for every image of `batch`, in input order, with the encoder run once per image."""
    if batch.vision_repeats and batch.vision_unique:
        feats = encode_vision(model, batch.vision_unique, device, dtype)
        return repeat_features(feats) if feats else None
    return encode_vision(model, batch.vision, device, dtype) if batch.vision else None


def forward_vision_kwargs(batch: SharedBatch, features: dict[str, Any] | None, device: torch.device,
                          dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Keyword arguments for the model forward: pixel inputs, or precomputed encoder outputs."""
    vision = to_model(batch.vision, device, dtype)
    if features is None:
        return vision
    kept = {k: v for k, v in vision.items() if k not in PIXEL_KEYS}
    # A fresh dict each call: the forwards store what they compute into the mapping they get.
    kept["mm_encoder_outputs"] = dict(features)
    return kept

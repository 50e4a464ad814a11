"""One small adapter per model family: every family quirk lives here and nowhere else.

An adapter knows which processor outputs are vision inputs and how to join them across the
rows or documents of a batch, which per-token type ids the model needs (Qwen's M-RoPE
`mm_token_type_ids`, Gemma 3's `token_type_ids`), what its forward does that a fast layout must
redo (mRoPE positions, Gemma 3's bidirectional image attention, logit soft-capping), and where
the vision tower, projector and language model sit (for freezing and LoRA targeting).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from vlmdpo.errors import FixableError

# How one vision key is stacked across rows:
#   "cat"  - concatenate along dim 0 (flat patch lists, per-image tensors, grid sizes)
#   "pad1" - pad dim 1 with zeros to the batch maximum, then concatenate (Idefics3 tiles per
#            sample, LLaVA-NeXT patches per image); the model drops all-zero padding entries.
Stacking = Literal["cat", "pad1"]


@dataclass(frozen=True)
class FamilyAdapter:
    name: str
    model_types: tuple[str, ...]
    is_vlm: bool
    vision_keys: dict[str, Stacking] = field(default_factory=dict)
    # per-token type ids the forward needs: key name and the value written at image / video tokens
    token_type_key: str | None = None
    video_type: int = 2
    # module paths from the top-level model (…ForConditionalGeneration / …ForCausalLM)
    vision_tower: tuple[str, ...] = ()
    projector: tuple[str, ...] = ()
    language_model: tuple[str, ...] = ()
    # "mrope": 3-D rotary positions computed by the model from image grids (matters for
    # packed / shared-prefix layouts; the plain layout lets the model derive them)
    rope: Literal["1d", "mrope"] = "1d"
    # the plain forward lets each image's tokens attend to each other both ways (Gemma 3 builds this
    # from token_type_ids); a fast layout's own attention mask must do the same
    bidirectional_images: bool = False
    # the forward soft-caps the logits by the config's final_logit_softcapping (text-only Gemma 2 / 3
    # heads); no supported VLM class does, Gemma3ForConditionalGeneration included, though its config
    # carries the value
    forward_softcaps: bool = False
    # pixel inputs are [samples, images per sample, ...] (Idefics3): a fast layout gathers every image
    # into one sample, zero-padded to the largest H and W (the model skips all-zero padding images)
    images_per_sample: bool = False
    supports_multi_image: bool = True
    # the processor takes `videos` (frames) and the model has a video path (pixel_values_videos)
    takes_video: bool = False
    # filled in by `adapter_for(model or config)`; an adapter looked up by name has none
    image_token: int | None = None
    video_token: int | None = None
    # tokens besides eos that end an assistant turn: generation stops at those the vocabulary has
    end_of_turn: tuple[str, ...] = ()
    # strings only this family's chat template writes: data text holding them is already templated.
    # Empty where a family's checkpoints use different templates (LLaVA-1.5, text-only models): the
    # known markers found in the model's own template string are then its own.
    template_markers: tuple[str, ...] = ()

    # ---------------------------------------------------------------- ids
    def image_token_id(self, config=None) -> int | None:
        if config is None:
            return self.image_token
        for attr in ("image_token_id", "image_token_index"):
            value = getattr(config, attr, None)
            if value is not None:
                return int(value)
        return None

    def video_token_id(self, config=None) -> int | None:
        if config is None:
            return self.video_token
        value = getattr(config, "video_token_id", None)
        return None if value is None else int(value)

    def bind(self, config) -> "FamilyAdapter":
        """This adapter with the model's image / video token ids filled in."""
        return replace(self, image_token=self.image_token_id(config), video_token=self.video_token_id(config))

    # ---------------------------------------------------------------- vision inputs
    def select_vision(self, processed) -> dict[str, Any]:
        """The vision tensors among a processor's outputs (text keys are rebuilt by collate)."""
        return {k: processed[k] for k in self.vision_keys if k in processed and processed[k] is not None}

    def stack_vision(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack per-row vision dicts (rows without images give {}) into one batch dict."""
        import torch

        out: dict[str, Any] = {}
        for key, how in self.vision_keys.items():
            tensors = [p[key] for p in parts if key in p]
            if not tensors:
                continue
            if how == "pad1":
                width = max(t.shape[1] for t in tensors)
                tensors = [_pad_dim1(t, width) for t in tensors]
            out[key] = torch.cat(tensors, dim=0)
        return out

    def join_vision(self, docs: list[dict[str, Any]]) -> dict[str, Any]:
        """Join per-document vision dicts in document order into one batch dict (the fast layouts,
        whose rows hold several documents): "cat" keys are concatenated; "pad1" keys are zero-padded
        on every dim but the first, then concatenated (LLaVA-NeXT patches per image), or gathered
        into one sample (`images_per_sample`)."""
        import torch

        out: dict[str, Any] = {}
        for key, how in self.vision_keys.items():
            tensors = [torch.as_tensor(d[key]) for d in docs if d.get(key) is not None]
            if not tensors:
                continue
            if how == "cat":
                out[key] = torch.cat(tensors)
            elif self.images_per_sample:
                out[key] = _cat_padded([t.reshape(-1, *t.shape[2:]) for t in tensors]).unsqueeze(0)
            else:
                out[key] = _cat_padded(tensors)
        return out

    def token_types(self, input_ids, config=None):
        """Per-token type ids (0 text, 1 image, 2 video) when the family's forward needs them;
        the same values the processor returns, derived from the ids so collate can rebuild them."""
        if self.token_type_key is None:
            return None
        image = self.image_token_id(config)
        if image is None:
            raise ValueError(f"the {self.name} adapter does not know the image token id: get it with "
                             "adapter_for(model) (or pass the model config)")
        types = (input_ids == image).long()
        video = self.video_token_id(config)
        if video is not None:
            types = types.masked_fill(input_ids == video, self.video_type)
        return types

    def logit_softcap(self, config) -> float | None:
        """The soft-cap the model's forward applies to its logits (tanh(x/c)*c), or None."""
        if not self.forward_softcaps:
            return None
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return getattr(text, "final_logit_softcapping", None) or getattr(config, "final_logit_softcapping", None)

    # ---------------------------------------------------------------- modules
    def parts(self) -> dict[str, tuple[str, ...]]:
        return {"vision_tower": self.vision_tower, "projector": self.projector, "language_model": self.language_model}


def _pad_dim1(t, width: int):
    import torch

    if t.shape[1] == width:
        return t
    pad = torch.zeros((t.shape[0], width - t.shape[1], *t.shape[2:]), dtype=t.dtype, device=t.device)
    return torch.cat([t, pad], dim=1)


def _cat_padded(tensors: list):
    """Concatenate along dim 0 after zero-padding every other dim, at its end, to the largest size."""
    import torch
    import torch.nn.functional as F

    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        pad = [n for have, want in zip(reversed(t.shape[1:]), reversed(shape)) for n in (0, want - have)]
        padded.append(F.pad(t, pad) if any(pad) else t)
    return torch.cat(padded)


# Chat-template turn markers (see FamilyAdapter.template_markers). A bare "<|im_start|>" is not one:
# SmolVLM's template writes it as its BOS.
_CHATML = ("<|im_start|>user", "<|im_start|>assistant", "<|im_start|>system", "<|im_end|>")
_SMOLVLM = ("<end_of_utterance>",)
_GEMMA = ("<start_of_turn>", "<end_of_turn>")
# templates no adapter owns (LLaVA / text-only checkpoints use them); their markers are recognised too
OTHER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Llama 3": ("<|start_header_id|>", "<|eot_id|>"), "Mistral / LLaVA-NeXT": ("[INST]", "[/INST]"),
}

_QWEN_VISION: dict[str, Stacking] = {"pixel_values": "cat", "image_grid_thw": "cat", "pixel_values_videos": "cat",
                                     "video_grid_thw": "cat", "second_per_grid_ts": "cat"}

# what Qwen2-VL, Qwen2.5-VL and Qwen3-VL share
_QWEN: dict[str, Any] = dict(
    is_vlm=True, vision_keys=_QWEN_VISION, token_type_key="mm_token_type_ids", rope="mrope", takes_video=True,
    vision_tower=("model.visual",), language_model=("model.language_model", "lm_head"), end_of_turn=("<|im_end|>",),
    template_markers=_CHATML,
)

ADAPTERS: dict[str, FamilyAdapter] = {
    a.name: a
    for a in (
        FamilyAdapter(
            name="idefics3", model_types=("idefics3", "smolvlm"), is_vlm=True,
            vision_keys={"pixel_values": "pad1", "pixel_attention_mask": "pad1"}, images_per_sample=True,
            vision_tower=("model.vision_model",), projector=("model.connector",),
            language_model=("model.text_model", "lm_head"), end_of_turn=("<end_of_utterance>", "<|im_end|>"),
            template_markers=_SMOLVLM,
        ),
        # the patch merger is Qwen's projector; it lives inside the vision module
        FamilyAdapter(name="qwen2_vl", model_types=("qwen2_vl",), projector=("model.visual.merger",), **_QWEN),
        FamilyAdapter(name="qwen2_5_vl", model_types=("qwen2_5_vl",), projector=("model.visual.merger",), **_QWEN),
        FamilyAdapter(name="qwen3_vl", model_types=("qwen3_vl", "qwen3_vl_moe"),
                      projector=("model.visual.merger", "model.visual.deepstack_merger_list"), **_QWEN),
        FamilyAdapter(
            name="llava", model_types=("llava",), is_vlm=True, vision_keys={"pixel_values": "cat"},
            vision_tower=("model.vision_tower",), projector=("model.multi_modal_projector",),
            language_model=("model.language_model", "lm_head"), end_of_turn=("<|im_end|>", "<|eot_id|>"),
        ),
        FamilyAdapter(
            name="llava_next", model_types=("llava_next",), is_vlm=True,
            vision_keys={"pixel_values": "pad1", "image_sizes": "cat"},
            vision_tower=("model.vision_tower",), projector=("model.multi_modal_projector", "model.image_newline"),
            language_model=("model.language_model", "lm_head"), end_of_turn=("<|im_end|>", "<|eot_id|>"),
        ),
        FamilyAdapter(
            name="gemma3", model_types=("gemma3",), is_vlm=True, vision_keys={"pixel_values": "cat"},
            # Gemma 3 lets image tokens attend to each other bidirectionally, marked by token_type_ids
            token_type_key="token_type_ids", bidirectional_images=True,
            vision_tower=("model.vision_tower",), projector=("model.multi_modal_projector",),
            language_model=("model.language_model", "lm_head"), end_of_turn=("<end_of_turn>",),
            template_markers=_GEMMA,
        ),
        FamilyAdapter(
            name="causal_lm", model_types=(), is_vlm=False, language_model=("model", "lm_head"),
            supports_multi_image=False, forward_softcaps=True,
            # any text-only model: the turn enders of the common chat formats
            end_of_turn=("<|im_end|>", "<end_of_utterance>", "<end_of_turn>", "<|eot_id|>"),
        ),
    )
}

FAMILY_NAMES = tuple(ADAPTERS)


class UnsupportedModelError(FixableError):
    pass


def adapter_for(model_or_config) -> FamilyAdapter:
    """The adapter for a family name, a model (PEFT-wrapped or not) or its config."""
    if isinstance(model_or_config, FamilyAdapter):
        return model_or_config
    if isinstance(model_or_config, str):
        if model_or_config in ADAPTERS:
            return ADAPTERS[model_or_config]
        raise UnsupportedModelError(
            f"unknown model family {model_or_config!r}; supported: {', '.join(FAMILY_NAMES)}"
        )
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter.bind(config)
    if getattr(config, "vision_config", None) is None:
        return ADAPTERS["causal_lm"]
    raise UnsupportedModelError(
        f"vision-language model type {model_type!r} is not supported yet; supported families: "
        f"{', '.join(FAMILY_NAMES)}. Open an issue with the model name, or train a text-only model."
    )


def template_markers() -> dict[str, str]:
    """Every recognised chat-template marker -> the template it belongs to (for error messages)."""
    owners: dict[str, str] = {}
    for adapter in ADAPTERS.values():
        for marker in adapter.template_markers:
            owners.setdefault(marker, "ChatML (Qwen)" if marker in _CHATML else adapter.name)
    for name, markers in OTHER_TEMPLATES.items():
        for marker in markers:
            owners.setdefault(marker, name)
    return owners

"""Tiny random-weight models, one per supported family, built offline for tests and demos.

Each uses the family's real model and processor classes (so every quirk of the family is
exercised), 2 decoder layers, hidden size 64, a 2-layer vision tower on 32-64 px images, and
a small byte-level tokenizer from `tiny_tokenizer`. A forward pass takes milliseconds on CPU.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from .tiny_tokenizer import build_tokenizer

FAMILIES = ("idefics3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "llava_next", "gemma3", "causal_lm")

# Shared decoder geometry: head_dim 16 -> 8 rotary pairs, split 2/3/3 for Qwen's M-RoPE.
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, rms_norm_eps=1e-6)
_MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
# Qwen image processors: one merged token per 28x28 (Qwen2/2.5) or 32x32 (Qwen3) pixels;
# bounds keep images at 4-16 tokens.
_QWEN_PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
_QWEN3_PIXELS = dict(min_pixels=32 * 32 * 4, max_pixels=32 * 32 * 16)


def _ids(tok, *names: str) -> list[int]:
    return [tok.convert_tokens_to_ids(n) for n in names]


def _llama_text(tok) -> dict[str, Any]:
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    return dict(model_type="llama", vocab_size=len(tok), bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                tie_word_embeddings=False, **_TEXT)


def _qwen_ids(tok) -> dict[str, int]:
    vs, ve, img, vid = _ids(tok, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    return dict(vision_start_token_id=vs, vision_end_token_id=ve, image_token_id=img, video_token_id=vid)


def _config(family: str, tok):
    import transformers as T

    if family == "idefics3":
        # 64 px tiles of 16 px patches, pixel shuffle 2 -> 4 <image> tokens per tile
        return T.Idefics3Config(
            text_config=_llama_text(tok), scale_factor=2, image_token_id=_ids(tok, "<image>")[0],
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=64, patch_size=16),
        )
    if family in ("qwen2_vl", "qwen2_5_vl"):
        text = dict(_TEXT, vocab_size=len(tok), rope_parameters=dict(_MROPE), max_window_layers=2,
                    bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        text.pop("head_dim")
        if family == "qwen2_vl":
            vision = dict(depth=2, embed_dim=32, num_heads=2, hidden_size=64, mlp_ratio=2, patch_size=14,
                          spatial_merge_size=2, temporal_patch_size=2)
            return T.Qwen2VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok))
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
        return T.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok))
    if family == "qwen3_vl":
        text = dict(_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                    rope_parameters=dict(_MROPE, mrope_interleaved=True))
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0])
        return T.Qwen3VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok))
    if family in ("llava", "llava_next"):
        # CLIP 32 px / 8 px patches -> 16 patch features (+CLS, dropped by the "default" strategy)
        vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)
        kwargs = dict(text_config=_llama_text(tok), vision_config=vision, image_token_index=_ids(tok, "<image>")[0],
                      vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=16)
        if family == "llava":
            return T.LlavaConfig(**kwargs)
        return T.LlavaNextConfig(image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]], **kwargs)
    if family == "gemma3":
        boi, eoi, img = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
        text = dict(_TEXT, model_type="gemma3_text", vocab_size=len(tok), sliding_window=64,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                    query_pre_attn_scalar=16, final_logit_softcapping=30.0)
        vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, image_size=32, patch_size=8)
        # 4x4 patches pooled to 2x2 -> 4 image tokens
        return T.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                              boi_token_index=boi, eoi_token_index=eoi, image_token_index=img)
    if family == "causal_lm":
        return T.LlamaConfig(**{k: v for k, v in _llama_text(tok).items() if k != "model_type"})
    raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")


def _processor(family: str, tok):
    import transformers as T

    if family == "causal_lm":
        return tok
    template = tok.chat_template
    if family == "idefics3":
        # a 64 px image is upscaled to 128 and split into 2x2 tiles of 64 plus one global tile
        ip = T.Idefics3ImageProcessor(do_image_splitting=True, size={"longest_edge": 128},
                                      max_image_size={"longest_edge": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return T.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=template)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        ip = T.Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, **_QWEN_PIXELS)
        vp = T.Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, **_QWEN_PIXELS)
        cls = T.Qwen2VLProcessor if family == "qwen2_vl" else T.Qwen2_5_VLProcessor
        return cls(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=template)
    if family == "qwen3_vl":
        ip = T.Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                     image_std=[0.5] * 3, **_QWEN3_PIXELS)
        vp = T.Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                     size={"shortest_edge": _QWEN3_PIXELS["min_pixels"],
                                           "longest_edge": _QWEN3_PIXELS["max_pixels"]})
        return T.Qwen3VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=template)
    if family == "llava":
        ip = T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        return T.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                                num_additional_image_tokens=1, chat_template=template)
    if family == "llava_next":
        ip = T.LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                       image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]])
        return T.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                                    vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                    chat_template=template)
    if family == "gemma3":
        ip = T.Gemma3ImageProcessor(size={"height": 32, "width": 32}, do_pan_and_scan=False)
        return T.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=4, chat_template=template)
    raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")


@lru_cache(maxsize=None)
def _cached_processor(family: str):
    return _processor(family, build_tokenizer(family))


def build_tiny_processor(family: str):
    """The family's processor (tokenizer for `causal_lm`): a private copy of a cached build
    (copying takes well under a millisecond; building takes tens), so callers may modify it."""
    import copy

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")
    return copy.deepcopy(_cached_processor(family))


def build_tiny_config(family: str):
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")
    proc = _cached_processor(family)
    return _config(family, getattr(proc, "tokenizer", proc))


def build_tiny(family: str, seed: int = 0, *, dtype=None, attn_implementation: str | None = "eager"):
    """(model, processor) for `family`: random weights drawn from `seed`, float32 unless `dtype`."""
    import torch
    import transformers as T

    processor = build_tiny_processor(family)
    config = build_tiny_config(family)
    cls = T.AutoModelForCausalLM if family == "causal_lm" else T.AutoModelForImageTextToText
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG stream untouched
        torch.manual_seed(seed)
        model = cls.from_config(config, dtype=dtype or torch.float32, attn_implementation=attn_implementation)
        _randomize_zero_matrices(model)
    model.config.name_or_path = f"tiny:{family}"
    model.eval()
    return model, processor


def _randomize_zero_matrices(model) -> None:
    """Some inits are zero by design (Gemma 3's mm_input_projection_weight), which would make
    image features all zero and hide vision bugs; real checkpoints have trained values there."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0.0, 0.02)


def tiny_image(seed: int = 0, size: tuple[int, int] = (64, 48)):
    """A seeded random RGB PIL image (width, height) of a size the tiny processors handle fast."""
    import numpy as np
    from PIL import Image

    w, h = size
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype("uint8"))


def tiny_video(path, *, frames: int = 4, size: tuple[int, int] = (64, 48), fps: int = 2, seed: int = 0):
    """Write a seeded random mp4 (MPEG-4 part 2, `frames` frames of `size` (width, height)) to
    `path` with PyAV, small enough for the tiny Qwen processors; returns the path."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def tiny_record(n_images: int = 1, *, seed: int = 0, system: str | None = None, question: str = "What is the cat doing?",
                chosen: str = "The cat is on the red mat.", rejected: str = "A dog.", history: bool = False,
                rec_id: str | None = None):
    """A normalized PreferenceRecord for tests and demos: `n_images` placeholders before the
    question, an optional system turn and an optional earlier user/assistant exchange."""
    from vlmdpo.types import ImageRef, PreferenceRecord

    def text(t: str) -> dict:
        return {"type": "text", "text": t}

    prompt = [{"role": "system", "content": [text(system)]}] if system else []
    if history:
        prompt += [{"role": "user", "content": [text("Hello there.")]},
                   {"role": "assistant", "content": [text("Hi! Show me a picture.")]}]
    prompt.append({"role": "user", "content": [{"type": "image"}] * n_images + [text(question)]})
    return PreferenceRecord(
        id=rec_id or f"tiny-{seed}", prompt=prompt,
        chosen=[{"role": "assistant", "content": [text(chosen)]}],
        rejected=[{"role": "assistant", "content": [text(rejected)]}],
        images=[ImageRef(pil=tiny_image(seed + k), origin=f"tiny-image-{seed + k}") for k in range(n_images)],
    )

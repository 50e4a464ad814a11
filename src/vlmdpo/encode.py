"""PreferenceRecord -> EncodedPair: the model's own chat template, its processor, truncation.

The prompt is rendered with the generation prompt; prompt+chosen and prompt+rejected are
rendered as finished conversations, and the completion is what follows the prompt. Images and
videos go through the processor once per pair, with the prompt text only (completions never hold
them), so their tokens are expanded exactly as the model expects. max_length and max_completion_length
shorten completions; max_prompt_length drops a prompt's oldest text tokens, never image tokens.
"""
from __future__ import annotations

import logging
from typing import Any, Literal

from vlmdpo.config.encoding import VIDEO_FPS, VIDEO_MAX_FRAMES, VIDEO_MAX_PIXELS
from vlmdpo.model.families import FamilyAdapter, adapter_for
from vlmdpo.truncation import cut_left, media_start
from vlmdpo.types import Dropped, EncodedPair, ImageRef, Message, PreferenceRecord, RowError

log = logging.getLogger(__name__)

Truncation = Literal["completions", "drop"]


# Kinds of EncodeError that mean "does not fit max_length": reported as drops under their own
# heading. Every other kind is bad data, which on_invalid decides (error, or skip and report).
# ("identical" comes from truncation: identical texts are refused when the data is read.)
LENGTH_KINDS = frozenset({"too_long", "prompt_too_long", "identical"})


def is_length_problem(kind: str) -> bool:
    return kind in LENGTH_KINDS


class EncodeError(ValueError):
    """A pair that cannot be trained on as given: what, which pair (and field), and how to fix it."""

    def __init__(self, kind: str, message: str, fix: str = "", *, record: PreferenceRecord | None = None,
                 field: str = ""):
        self.kind, self.message, self.fix, self.field = kind, message, fix, field
        self.record_id = record.id if record is not None else None
        self.where = str(record.source) if record is not None and record.source is not None else None
        head = f"{self.where} (id {self.record_id})" if self.where else f"pair {self.record_id!r}"
        text = f"{head}: {message}" if self.record_id is not None or self.where else message
        super().__init__(f"{text} -> {fix}" if fix else text)

    def __reduce__(self):  # survives DataLoader worker processes (keyword-only init)
        return _rebuild_error, (self.kind, self.message, self.fix, self.record_id, self.where, str(self), self.field)


def dropped_pair(record: PreferenceRecord, error: Exception) -> Dropped:
    """The report of a pair that `encode_pair` refused."""
    message = getattr(error, "message", None) or str(error)
    fix = getattr(error, "fix", "")
    return Dropped(record.id, str(record.source) if record.source is not None else "",
                   getattr(error, "kind", "encode"), f"{message} -> {fix}" if fix and fix not in message else message)


def bad_row(record: PreferenceRecord, error: EncodeError) -> RowError:
    """A refused pair as a data error at its file:row and field (the form data loading reports)."""
    src = record.source
    return RowError(error.kind, getattr(src, "file", None) or str(src or record.id), getattr(src, "row", 0) or 0,
                    error.field or "<pair>", error.message, error.fix)


def _rebuild_error(kind, message, fix, record_id, where, text, field=""):
    err = EncodeError.__new__(EncodeError)
    ValueError.__init__(err, text)
    err.kind, err.message, err.fix, err.record_id, err.where, err.field = kind, message, fix, record_id, where, field
    return err


def encode_pair(
    record: PreferenceRecord,
    processor: Any,
    family: FamilyAdapter | str,
    *,
    max_length: int | None,
    truncation: Truncation = "completions",
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    image_max_pixels: int | None = None,
    image_min_pixels: int | None = None,
    allow_remote_images: bool = False,
    video_fps: float = VIDEO_FPS,
    video_max_frames: int = VIDEO_MAX_FRAMES,
    video_max_pixels: int | None = VIDEO_MAX_PIXELS,
) -> EncodedPair:
    adapter = adapter_for(family)
    tokenizer = getattr(processor, "tokenizer", processor)
    _check_record(record, adapter)

    texts = _pretemplated(record, processor, adapter)
    if texts is None:  # plain text: the model's chat template is applied once
        prompt, chosen, rejected = (_for_template(m, adapter) for m in (record.prompt, record.chosen, record.rejected))
        texts = _render(processor, prompt, chosen, rejected, record)
    prompt_text, chosen_text, rejected_text = texts
    prompt_text, chosen_ids, rejected_ids = _split(tokenizer, prompt_text, chosen_text, rejected_text)
    if not chosen_ids or not rejected_ids:
        raise EncodeError("empty_completion", "the chat template left no completion tokens for chosen or rejected",
                          "check that fields 'chosen' and 'rejected' hold assistant text", record=record)
    chosen_ids = _with_end_of_turn(chosen_ids, tokenizer)
    rejected_ids = _with_end_of_turn(rejected_ids, tokenizer)

    load = dict(max_pixels=image_max_pixels, min_pixels=image_min_pixels, allow_remote=allow_remote_images)
    videos = _load_videos(record, (video_fps, video_max_frames, video_max_pixels))
    prompt_ids, vision = _encode_prompt(processor, tokenizer, adapter, prompt_text, record.images, record, load,
                                        videos=videos)
    rejected_prompt_ids = rejected_vision = None
    if record.rejected_images:  # image-contrast pair: the rejected row sees other images
        rejected_prompt_ids, rejected_vision = _encode_prompt(
            processor, tokenizer, adapter, prompt_text, record.rejected_images, record, load, field="rejected_images",
            videos=videos)
    pair = EncodedPair(id=record.id, prompt_ids=prompt_ids, chosen_ids=chosen_ids, rejected_ids=rejected_ids,
                       vision=vision, rejected_prompt_ids=rejected_prompt_ids, rejected_vision=rejected_vision)
    if max_prompt_length is not None:
        _cut_prompts(pair, _tok(tokenizer, prompt_text), max_prompt_length, tokenizer, adapter, record)
    if max_completion_length is not None:  # cut like truncation: completions (the end-of-turn token counts)
        cut = (pair.chosen_ids[:max_completion_length], pair.rejected_ids[:max_completion_length])
        pair.truncated |= cut != (pair.chosen_ids, pair.rejected_ids)
        pair.chosen_ids, pair.rejected_ids = cut
    return _truncate(pair, max_length, truncation, record)


# ------------------------------------------------------------------------------ checks
def _image_parts(messages: list[Message], kind: str = "image") -> int:
    return sum(1 for m in messages for part in _parts(m) if part.get("type") == kind)


def _parts(message: Message) -> list[dict]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content or [])


def _check_record(record: PreferenceRecord, adapter: FamilyAdapter) -> None:
    n_parts = _image_parts(record.prompt)
    _check_videos(record, adapter)
    if n_parts != len(record.images):
        raise EncodeError("image_count", f"the prompt has {n_parts} image placeholder(s) but {len(record.images)} "
                          "image(s) are given", "make the number of <image> placeholders match the images list",
                          record=record)
    if record.rejected_images is not None and len(record.rejected_images) != n_parts:
        raise EncodeError("image_count", f"rejected_images has {len(record.rejected_images)} image(s) but the prompt "
                          f"has {n_parts} placeholder(s)", "give one rejected image per placeholder", record=record)
    if _image_parts(record.chosen) or _image_parts(record.rejected):
        raise EncodeError("image_in_answer", "an image placeholder appears in chosen/rejected",
                          "images belong in the prompt (user turns) only", record=record)
    if n_parts and not adapter.is_vlm:
        raise EncodeError("images_on_text_model", f"this pair has {n_parts} image(s) but the model is text-only",
                          "use a vision-language model, or drop image pairs (on_invalid: skip)", record=record)
    if n_parts > 1 and not adapter.supports_multi_image:
        raise EncodeError("multi_image", f"{adapter.name} models take one image per prompt, this pair has {n_parts}",
                          "keep one image per pair for this model", record=record)
    if not record.chosen or not record.rejected:
        raise EncodeError("empty_completion", "chosen or rejected has no assistant message",
                          "give both a chosen and a rejected answer", record=record)


def _check_videos(record: PreferenceRecord, adapter: FamilyAdapter) -> None:
    n_videos = _image_parts(record.prompt, "video")
    if not record.videos and not n_videos:
        return
    if not adapter.takes_video:
        raise EncodeError("video", f"field 'videos': this pair has {max(n_videos, len(record.videos))} "
                          f"video(s) but {adapter.name} models do not take video",
                          "use a Qwen2-VL/2.5-VL/3-VL model or drop the videos (on_invalid: skip skips such rows)",
                          record=record, field="videos")
    if n_videos != len(record.videos):
        raise EncodeError("video_count", f"field 'videos': the prompt has {n_videos} video placeholder(s) but "
                          f"{len(record.videos)} video(s) are given",
                          "put exactly one <video> placeholder per video, in order", record=record,
                          field="videos")
    if _image_parts(record.chosen, "video") or _image_parts(record.rejected, "video"):
        raise EncodeError("image_in_answer", "a video placeholder appears in chosen/rejected",
                          "videos belong in the prompt (user turns) only", record=record)


def _for_template(messages: list[Message], adapter: FamilyAdapter) -> list[Message]:
    """Text-only chat templates expect string content; VLM templates expect a list of parts."""
    if adapter.is_vlm:
        return [{"role": m["role"], "content": _parts(m)} for m in messages]
    # Parts were split only around placeholders, so joining them restores the original text.
    return [{"role": m["role"], "content": "".join(p.get("text") or "" for p in _parts(m))} for m in messages]


# ------------------------------------------------------------------------------ template
def _pretemplated(record: PreferenceRecord, processor, adapter: FamilyAdapter) -> tuple[str, str, str] | None:
    """Texts to use as is when the record is already in the model's own chat template (as TRL
    does); None for plain text. Another family's template markers are an error at the row."""
    from vlmdpo import templated

    found = templated.field_markers(record)
    if not found:
        return None
    owner = _templater(processor, record)
    template = owner.chat_template if isinstance(owner.chat_template, str) else repr(owner.chat_template)
    bos = getattr(getattr(processor, "tokenizer", processor), "bos_token", None)
    facts = templated.template_facts(_renderer(owner, record), adapter, template, bos)
    wrong = templated.foreign(found, facts)
    if wrong is not None:
        name, marker, other = wrong
        raise EncodeError("template_mismatch", f"field '{name}' is already written in the {other} chat template "
                          f"({marker!r}), but this {adapter.name} model uses another template",
                          f"give '{name}' as plain text (no chat-template markers) so the model's own template is "
                          "applied, or write it in this model's template", record=record, field=name)
    log.debug("%s: text already in the model's chat template; used as is", record.id)
    prompt, chosen, rejected = templated.as_is(record, facts)
    return prompt, prompt + chosen, prompt + rejected


def _templater(processor, record):
    """The object that holds the chat template: the processor, or its tokenizer."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if getattr(processor, "chat_template", None) is None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise EncodeError("no_chat_template", "the model has no chat template to render conversations with",
                              "use a chat / instruct checkpoint, or set processor.chat_template", record=record)
        return tokenizer  # some VLM repos keep the template on the tokenizer only
    return processor


def _render(processor, prompt, chosen, rejected, record) -> tuple[str, str, str]:
    render = _renderer(_templater(processor, record), record)
    last = prompt[-1]["role"] if prompt else "user"
    gen = dict(add_generation_prompt=True) if last != "assistant" else dict(continue_final_message=True)
    return render(prompt, **gen), render(prompt + chosen), render(prompt + rejected)


def _renderer(processor, record):
    def render(messages, **kw) -> str:
        try:
            out = processor.apply_chat_template(messages, tokenize=False, **kw)
        except Exception as e:  # jinja raise_exception() in templates: roles, system turns, ...
            raise EncodeError("chat_template", f"the model's chat template rejected this conversation: {e}",
                              "check roles (alternating user/assistant, system first) for this model",
                              record=record) from None
        return out if isinstance(out, str) else out[0]

    return render


def _tok(tokenizer, text: str) -> list[int]:
    # The template already wrote every special token (BOS included) into the text.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _split(tokenizer, prompt_text: str, chosen_text: str, rejected_text: str) -> tuple[str, list[int], list[int]]:
    """(prompt text, chosen completion ids, rejected completion ids)."""
    p, c, r = _tok(tokenizer, prompt_text), _tok(tokenizer, chosen_text), _tok(tokenizer, rejected_text)
    if c[: len(p)] == p and r[: len(p)] == p:
        # the usual case: the prompt is a token prefix of both full conversations
        return prompt_text, c[len(p):], r[len(p):]
    if chosen_text.startswith(prompt_text) and rejected_text.startswith(prompt_text):
        # BPE merged tokens across the prompt/answer boundary: keep the prompt tokens the model
        # sees at inference and tokenize each answer on its own.
        return (prompt_text, _tok(tokenizer, chosen_text[len(prompt_text):]),
                _tok(tokenizer, rejected_text[len(prompt_text):]))
    # The template renders the generation prompt differently from a finished turn (e.g. it
    # inserts thinking tags only in one of them). Like TRL, the prompt becomes the longest common
    # text prefix; each answer is tokenized on its own.
    common = _common_prefix(_common_prefix(prompt_text, chosen_text), rejected_text)
    log.warning("chat template renders the prompt differently with add_generation_prompt; training on the "
                "common prefix %r as the prompt end", prompt_text[max(0, len(common) - 20):len(common)])
    return common, _tok(tokenizer, chosen_text[len(common):]), _tok(tokenizer, rejected_text[len(common):])


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return ids


def _with_end_of_turn(ids: list[int], tokenizer) -> list[int]:
    """Append EOS when the template closes the assistant turn with no special token (LLaVA-1.5
    renders "ASSISTANT: answer "): otherwise the model is never taught to stop."""
    eos = tokenizer.eos_token_id
    if not ids or eos is None:
        return ids
    k = len(ids)
    while k > 0 and tokenizer.decode(ids[k - 1 : k]).strip() == "":
        k -= 1
    if k > 0 and ids[k - 1] in _special_ids(tokenizer):
        return ids
    return ids + [eos]


# ------------------------------------------------------------------------------ prompt + images
def _load(ref: ImageRef, load: dict, record, field: str):
    from vlmdpo.data.images import load_image

    try:
        return load_image(ref, **load)
    except Exception as e:  # ImageLoadError names the file; anything else PIL raises is wrapped, never raw
        message = str(e) if isinstance(e, ValueError) else f"image {ref.describe()} cannot be decoded ({e!r})"
        # missing, unreadable or truncated (the default header check at load time passes truncated files)
        raise EncodeError("image", message, f"fix or remove the image in field '{field}'", record=record,
                          field=field) from None


def _load_videos(record: PreferenceRecord, limits: tuple) -> list:
    if not record.videos:
        return []
    from vlmdpo.data.videos import VideoLimits, load_video

    try:
        return [load_video(ref, VideoLimits(*limits)) for ref in record.videos]
    except ValueError as e:  # VideoLoadError
        raise EncodeError("video_file", f"field 'videos': {e}", "fix or replace the video file, or drop it from the row",
                          record=record, field="videos") from None


def _encode_prompt(processor, tokenizer, adapter, prompt_text, images, record, load, field="images", videos=()):
    if not images and not videos:
        return _tok(tokenizer, prompt_text), {}
    pil = [_load(ref, load, record, field) for ref in images]
    media: dict[str, Any] = {"images": [pil]} if pil else {}
    if videos:
        media.update(videos=[v.frames for v in videos], video_metadata=[v.metadata() for v in videos],
                     do_sample_frames=False)  # frames are already sampled (data/videos.py)
    try:
        out = processor(text=[prompt_text], **media, return_tensors="pt", add_special_tokens=False)
    except Exception as e:
        what = "images and videos" if pil and videos else ("videos" if videos else "images")
        where = field if pil else "videos"
        raise EncodeError("processor", f"the {adapter.name} processor failed on this pair's {what}: {e}",
                          f"check the {what} in field '{where}' (size, count)", record=record, field=where) from None
    return out["input_ids"][0].tolist(), adapter.select_vision(out)


# ------------------------------------------------------------------------------ truncation
def _cut_prompts(pair: EncodedPair, text_ids: list[int], limit: int, tokenizer, adapter, record) -> None:
    """max_prompt_length: the oldest text tokens go; a cut that would reach an image or video is a length drop."""
    media = {t for t in (adapter.image_token, adapter.video_token) if t is not None}
    for attr in ("prompt_ids", "rejected_prompt_ids"):
        ids = getattr(pair, attr)
        if ids is None or len(ids) <= limit:
            continue
        start = media_start(ids, text_ids, _special_ids(tokenizer), media)
        cut = cut_left(ids, limit, start)
        if cut is None:
            raise EncodeError("prompt_too_long", f"the prompt is {len(ids)} tokens, over max_prompt_length={limit}, "
                              f"and only its first {start} tokens are text before an image or video (image tokens "
                              "are never cut)", "raise max_prompt_length, lower image_max_pixels, or shorten the "
                              "text before the first image", record=record)
        setattr(pair, attr, cut)
        pair.truncated = True


def _truncate(pair: EncodedPair, max_length: int | None, truncation: Truncation, record) -> EncodedPair:
    if truncation not in ("completions", "drop"):
        raise ValueError(f"truncation must be 'completions' or 'drop', got {truncation!r}")
    p_len = len(pair.prompt_ids)
    r_len = len(pair.rejected_prompt_ids) if pair.rejected_prompt_ids is not None else p_len
    need = max(p_len + len(pair.chosen_ids), r_len + len(pair.rejected_ids))
    if max_length is None or need <= max_length:
        return _check_differs(pair, record, max_length)
    if truncation == "drop":
        raise EncodeError("too_long", f"prompt ({p_len} tokens incl. image tokens) + longest answer needs {need} "
                          f"tokens, over max_length={max_length}",
                          "raise max_length, lower image_max_pixels, or use truncation: completions", record=record)
    if max(p_len, r_len) >= max_length:
        raise EncodeError("prompt_too_long", f"the prompt alone is {max(p_len, r_len)} tokens (incl. image tokens), "
                          f"max_length={max_length} leaves no room for an answer",
                          "raise max_length or lower image_max_pixels", record=record)
    pair.chosen_ids = pair.chosen_ids[: max_length - p_len]
    pair.rejected_ids = pair.rejected_ids[: max_length - r_len]
    pair.truncated = True
    return _check_differs(pair, record, max_length)


def _check_differs(pair: EncodedPair, record, max_length) -> EncodedPair:
    same_prompt = pair.rejected_prompt_ids is None or pair.rejected_prompt_ids == pair.prompt_ids
    if same_prompt and pair.rejected_vision is None and pair.chosen_ids == pair.rejected_ids:
        why = " after truncation (max_length / max_prompt_length / max_completion_length)" if pair.truncated else ""
        raise EncodeError("identical" if pair.truncated else "identical_tokens",
                          f"chosen and rejected are the same tokens{why}: the pair carries no signal",
                          "raise max_length so the answers differ, or remove the pair", record=record,
                          field="rejected")
    return pair

"""`vlmdpo compare`: the base and the tuned model answer the same inputs, side by side.

Both generate with the same seed and settings. The tuned model's implicit DPO reward,
r(y) = beta * (log p_tuned(y|x) - log p_base(y|x)), scores both answers (and the dataset's chosen /
rejected when present), so the page shows which answer the tuned model's reward prefers. The base
model is the reference, so its own implicit reward is 0 for every answer; its preference between
chosen and rejected is read from its log-probs instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from vlmdpo.inference import GenerationSettings, InferenceModel, generate, load_for_inference, user_message
from vlmdpo.losses import DEFAULT_BETA
from vlmdpo.types import PreferenceRecord


@dataclass
class CompareRow:
    id: str
    prompt: list[dict]
    images: list[Any]  # PIL images as the models saw them
    base_answer: str
    tuned_answer: str
    chosen: str | None = None
    rejected: str | None = None
    # per candidate ("base_answer", "tuned_answer", "chosen", "rejected"): summed log-probs per model
    base_logps: dict[str, float] = field(default_factory=dict)
    tuned_logps: dict[str, float] = field(default_factory=dict)
    note: str = ""  # why a score is missing

    def reward(self, key: str, beta: float) -> float | None:
        if key not in self.base_logps or key not in self.tuned_logps:
            return None
        return beta * (self.tuned_logps[key] - self.base_logps[key])

    def reward_prefers(self, a: str, b: str, beta: float) -> str | None:
        ra, rb = self.reward(a, beta), self.reward(b, beta)
        if ra is None or rb is None:
            return None
        return "tie" if ra == rb else (a if ra > rb else b)

    def base_prefers_chosen(self) -> bool | None:
        if "chosen" not in self.base_logps or "rejected" not in self.base_logps:
            return None
        return self.base_logps["chosen"] > self.base_logps["rejected"]


@dataclass
class CompareResult:
    rows: list[CompareRow]
    beta: float
    base_name: str
    tuned_name: str
    settings: GenerationSettings
    html_path: Path | None = None
    data_summary: str = ""

    def reward_accuracy(self) -> float | None:
        """Fraction of dataset pairs where the tuned model's implicit reward prefers chosen."""
        votes = [r.reward_prefers("chosen", "rejected", self.beta) for r in self.rows]
        votes = [v for v in votes if v is not None]
        return sum(v == "chosen" for v in votes) / len(votes) if votes else None


def prompt_text(messages: list[dict]) -> str:
    """The prompt as a person reads it: turns on lines, images as [image]."""
    lines = []
    for m in messages:
        parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        text = "".join(p.get("text") or "" if p.get("type") == "text" else f"[{p.get('type')}]" for p in parts)
        lines.append(f"{m['role']}: {text}")
    return "\n".join(lines)


def message_text(messages: list[dict]) -> str:
    return "\n".join(prompt_text([m]).split(": ", 1)[1] for m in messages)


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def _pairs_of_distinct(texts: list[str]) -> list[tuple[str, str]]:
    """encode_pair scores two *different* completions at a time: pair up the distinct texts (a lone
    text is paired with a placeholder whose score is thrown away)."""
    distinct = list(dict.fromkeys(texts))
    if len(distinct) == 1:
        distinct.append(distinct[0] + " ." if distinct[0] else ".")
    if len(distinct) % 2:
        distinct.append(distinct[0])  # any other distinct text works; its score is computed twice
    return list(zip(distinct[::2], distinct[1::2]))


def completion_logps(tuned: InferenceModel, base: InferenceModel, record: PreferenceRecord,
                     candidates: dict[str, str], *, max_length: int) -> tuple[dict[str, float], dict[str, float], str]:
    """Summed completion log-probs of each candidate answer under the tuned and the base model.

    Scored through the training path (encode_pair, collate, batch_logps) with the tuned model's
    processor, so the numbers are the ones DPO optimised.
    """
    import torch

    from vlmdpo.batching.plain import collate
    from vlmdpo.encode import EncodeError, encode_pair
    from vlmdpo.model.families import adapter_for
    from vlmdpo.model.logps import batch_logps

    family = adapter_for(tuned.base_model)
    tok = tuned.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    encoded, texts, notes = [], [], []
    for text_a, text_b in _pairs_of_distinct(list(candidates.values())):
        rec = PreferenceRecord(id=record.id, prompt=record.prompt, chosen=_assistant(text_a),
                               rejected=_assistant(text_b), images=record.images, videos=record.videos)
        try:
            encoded.append(encode_pair(rec, tuned.processor, family, max_length=max_length, truncation="drop",
                                       **_video_settings(tuned)))
        except EncodeError as exc:
            notes.append(f"not scored: {exc}")
            continue
        texts.append((text_a, text_b))
    scores: dict[str, tuple[float, float]] = {}  # text -> (tuned, base)
    if encoded:
        batch = collate(encoded, pad_token_id=pad, family=family)
        with torch.no_grad():
            lp_t, lp_b = (batch_logps(m.model, batch) for m in (tuned, base))
        for i, (text_a, text_b) in enumerate(texts):
            scores[text_a] = (float(lp_t.chosen_logps[i]), float(lp_b.chosen_logps[i]))
            scores[text_b] = (float(lp_t.rejected_logps[i]), float(lp_b.rejected_logps[i]))
    tuned_lp = {k: scores[t][0] for k, t in candidates.items() if t in scores}
    base_lp = {k: scores[t][1] for k, t in candidates.items() if t in scores}
    return tuned_lp, base_lp, "; ".join(notes)


def _load_image_for(ref, im: InferenceModel):
    from vlmdpo.data.images import load_image

    return load_image(ref, max_pixels=im.train_config.get("image_max_pixels"),
                      min_pixels=im.train_config.get("image_min_pixels"))


def _video_settings(im: InferenceModel) -> dict[str, Any]:
    """The tuned run's video_* keys, as encode_pair takes them (absent keys keep its defaults)."""
    keys = ("video_fps", "video_max_frames", "video_max_pixels")
    return {k: im.train_config[k] for k in keys if k in im.train_config}


def _load_videos_for(record: PreferenceRecord, im: InferenceModel) -> list[Any]:
    if not record.videos:
        return []
    from vlmdpo.data.videos import VideoLimits, load_video
    from vlmdpo.inference.generate import takes_video

    where = f"{record.source}: " if record.source is not None else ""
    if not takes_video(im.model):
        raise ValueError(f"{where}field 'videos': {im.name} cannot take video; use a Qwen2-VL/2.5-VL/3-VL model "
                         "or drop the videos")
    limits = VideoLimits(**{k[len("video_"):]: v for k, v in _video_settings(im).items()})
    return [load_video(ref, limits) for ref in record.videos]


def compare_record(base: InferenceModel, tuned: InferenceModel, record: PreferenceRecord, settings: GenerationSettings,
                   *, max_length: int) -> CompareRow:
    images = [_load_image_for(ref, tuned) for ref in record.images]
    videos = _load_videos_for(record, tuned)
    base_answer = generate(base, record.prompt, images, settings, videos=videos)
    tuned_answer = generate(tuned, record.prompt, images, settings, videos=videos)
    chosen = message_text(record.chosen) if record.chosen else None
    rejected = message_text(record.rejected) if record.rejected else None
    row = CompareRow(record.id, record.prompt, images, base_answer, tuned_answer, chosen, rejected)
    # the images are already decoded: score with them as PIL refs so both models see identical pixels
    from vlmdpo.types import ImageRef

    scored = PreferenceRecord(id=record.id, prompt=record.prompt, chosen=record.chosen, rejected=record.rejected,
                              images=[ImageRef(pil=img, origin=ref.describe()) for img, ref in zip(images, record.images)],
                              videos=record.videos)
    candidates = {"base_answer": base_answer, "tuned_answer": tuned_answer}
    if chosen is not None and rejected is not None and record.rejected_images is None:
        candidates.update(chosen=chosen, rejected=rejected)
    row.tuned_logps, row.base_logps, row.note = completion_logps(tuned, base, scored, candidates, max_length=max_length)
    if record.rejected_images is not None:
        row.note = "; ".join(filter(None, [row.note, "image-contrast pair: chosen/rejected not scored"]))
    return row


def _records_from_inputs(data: str | None, image: list[str], prompt: str | None, *, limit: int, allow_remote: bool,
                         fmt: str, image_root: str | None, video: list[str] = ()) -> tuple[list[PreferenceRecord], str]:
    if data is not None:
        from vlmdpo.data.load import iter_preferences
        from vlmdpo.types import RowError

        # stream: only the first `limit` usable rows are needed, however large the dataset
        stream = iter_preferences(data, format=fmt, image_root=image_root, allow_remote_images=allow_remote,
                                  on_invalid="skip")
        records, errors = [], []
        for item in stream:
            (errors if isinstance(item, RowError) else records).append(item)
            if len(records) >= limit:
                break
        summary = f"read {stream.n_read} rows, using {len(records)}, skipped {len(errors)}"
        if errors:
            shown = "\n".join(f"  {e}" for e in errors[:5])
            more = f"\n  ... and {len(errors) - 5} more" if len(errors) > 5 else ""
            summary += f"; skipped rows:\n{shown}{more}"
        return records, summary
    if prompt is None:
        raise ValueError("nothing to compare: pass --data FILE, or --prompt TEXT (with --image PATH for a picture)")
    from vlmdpo.chat import load_user_image
    from vlmdpo.types import ImageRef

    refs = [ImageRef(pil=load_user_image(v, allow_remote=allow_remote), origin=v) for v in image]
    videos = [_video_ref(v) for v in video]
    rec = PreferenceRecord(id="prompt", prompt=[user_message(prompt, len(refs), len(videos))], chosen=[], rejected=[],
                           images=refs, videos=videos)
    return [rec], ""


def _video_ref(value: str):
    """A --video path, checked before the models load (a fake or missing file fails here)."""
    from vlmdpo.data.videos import check_video
    from vlmdpo.types import ImageRef

    ref = ImageRef(path=str(Path(value).expanduser().resolve()), origin=value)
    problem = check_video(ref)
    if problem:
        raise ValueError(f"--video {value!r}: {problem}")
    return ref


# ----------------------------------------------------------------------------- report


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _short(text: str | None, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def format_table(result: CompareResult) -> str:
    """A short fixed-width table: one line per input, rewards are the tuned model's implicit reward."""
    b = result.beta
    head = (f"{'id':<12} {'base answer':<24} {'tuned answer':<24} {'r(base)':>8} {'r(tuned)':>8} {'prefers':>8} "
            f"{'chosen>rej':>10}")
    lines = [head, "-" * len(head)]
    for r in result.rows:
        pref = r.reward_prefers("tuned_answer", "base_answer", b)
        pref = {"tuned_answer": "tuned", "base_answer": "base"}.get(pref, pref or "n/a")
        cr = r.reward_prefers("chosen", "rejected", b)
        lines.append(f"{_short(r.id, 12):<12} {_short(r.base_answer, 24):<24} {_short(r.tuned_answer, 24):<24} "
                     f"{_fmt(r.reward('base_answer', b)):>8} {_fmt(r.reward('tuned_answer', b)):>8} {pref:>8} "
                     f"{('yes' if cr == 'chosen' else 'no') if cr else '-':>10}")
    lines.append(f"r(x) = {b} * (log p_tuned(x's answer) - log p_base(x's answer)), the tuned model's implicit reward; "
                 "prefers: the answer it rates higher; chosen>rej: it rates the dataset's chosen above rejected")
    acc = result.reward_accuracy()
    if acc is not None:
        lines.append(f"tuned model's implicit reward prefers chosen on {acc:.0%} of pairs (beta={b})")
    return "\n".join(lines)


def _image_tag(img) -> str:
    import base64
    import io

    thumb = img.copy()
    thumb.thumbnail((320, 320))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="input image">'


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}
.row{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1em}.col{background:#f7f7f7;padding:.6em;border-radius:4px}
.win{outline:2px solid #2a7}.prompt{white-space:pre-wrap}.answer{white-space:pre-wrap}
.meta{color:#555;font-size:.9em}img{max-width:320px;margin-right:.5em;border:1px solid #ddd}"""


def render_html(result: CompareResult) -> str:
    from html import escape as e

    b = result.beta
    s = result.settings
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>vlmdpo compare</title><style>{_CSS}</style>"
             "</head><body>",
             f"<h1>{e(result.tuned_name)} vs {e(result.base_name)}</h1>",
             f"<p class='meta'>same inputs, seed {s.seed}, temperature {s.temperature}, top_p {s.top_p}, "
             f"max_new_tokens {s.max_new_tokens}. Reward r(y) = {b} &times; (log p_tuned(y) &minus; log p_base(y)): "
             "the tuned model's implicit DPO reward with the base as reference (the base's own reward is 0).</p>"]
    acc = result.reward_accuracy()
    if acc is not None:
        parts.append(f"<p><b>Implicit reward prefers the dataset's chosen answer on {acc:.0%} of pairs.</b></p>")
    if result.data_summary:
        parts.append(f"<p class='meta prompt'>{e(result.data_summary)}</p>")
    for r in result.rows:
        win = r.reward_prefers("tuned_answer", "base_answer", b)
        parts.append(f"<div class='row'><h3>{e(r.id)}</h3>")
        parts.append("".join(_image_tag(img) for img in r.images))
        parts.append(f"<p class='prompt'>{e(prompt_text(r.prompt))}</p><div class='cols'>")
        for key, title in (("base_answer", "base: " + result.base_name), ("tuned_answer", "tuned: " + result.tuned_name)):
            cls = "col win" if win == key else "col"
            answer = r.base_answer if key == "base_answer" else r.tuned_answer
            parts.append(f"<div class='{cls}'><b>{e(title)}</b><p class='answer'>{e(answer)}</p>"
                         f"<p class='meta'>reward {_fmt(r.reward(key, b))}"
                         f"{' &larr; preferred by the reward' if win == key else ''}</p></div>")
        parts.append("</div>")
        if r.chosen is not None or r.rejected is not None:
            pref = r.reward_prefers("chosen", "rejected", b)
            base_pref = r.base_prefers_chosen()
            parts.append("<div class='cols'>")
            for key, text in (("chosen", r.chosen), ("rejected", r.rejected)):
                parts.append(f"<div class='col{' win' if pref == key else ''}'><b>dataset {key}</b>"
                             f"<p class='answer'>{e(text or '')}</p><p class='meta'>reward {_fmt(r.reward(key, b))}</p></div>")
            parts.append("</div><p class='meta'>")
            if pref is not None:
                parts.append(f"tuned model's reward prefers <b>{e(pref)}</b>. ")
            if base_pref is not None:
                parts.append(f"base model's log-probs prefer <b>{'chosen' if base_pref else 'rejected'}</b>.")
            parts.append("</p>")
        if r.note:
            parts.append(f"<p class='meta'>{e(r.note)}</p>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(result: CompareResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- entry point


def run_compare(
    base: str | None,
    tuned: str,
    *,
    data: str | None = None,
    image: list[str] | tuple[str, ...] = (),
    video: list[str] | tuple[str, ...] = (),
    prompt: str | None = None,
    out: str | Path = "compare.html",
    limit: int = 8,
    settings: GenerationSettings | None = None,
    beta: float | None = None,
    allow_remote_images: bool = False,
    format: str = "auto",
    image_root: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    stdout: TextIO | None = None,
    model_loader: Callable[..., InferenceModel] = load_for_inference,
) -> CompareResult:
    """Generate from both models on the same inputs, score with the implicit reward, write HTML, print a table.

    `base` None: the tuned model's own base (an adapter's or checkpoint's, or its run config's model)."""
    import sys

    stdout = stdout if stdout is not None else sys.stdout
    settings = settings or GenerationSettings()
    records, summary = _records_from_inputs(data, list(image), prompt, limit=limit, allow_remote=allow_remote_images,
                                            fmt=format, image_root=image_root, video=list(video))
    if not records:
        raise ValueError(f"{data}: no usable rows to compare ({summary})")
    tuned_im = model_loader(tuned, dtype=dtype, device=device)
    base = base or tuned_im.base_name or tuned_im.train_config.get("model_name_or_path")
    if not base:
        raise ValueError(f"{tuned}: records no base model (no adapter base, no vlmdpo_config.yaml); pass --base")
    base_im = model_loader(base, dtype=dtype, device=device)
    if len(base_im.tokenizer) != len(tuned_im.tokenizer):
        raise ValueError(f"{base} and {tuned} have different vocabularies ({len(base_im.tokenizer)} vs "
                         f"{len(tuned_im.tokenizer)} tokens); compare a tuned model with its own base")
    beta = beta if beta is not None else float(tuned_im.train_config.get("beta") or DEFAULT_BETA)
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a positive number, got {beta}")
    max_length = int(tuned_im.train_config.get("max_length") or 2048)
    rows = [compare_record(base_im, tuned_im, rec, settings, max_length=max_length) for rec in records]
    result = CompareResult(rows, beta, base, tuned, settings, data_summary=summary)
    result.html_path = write_html(result, Path(out))
    if summary:
        stdout.write(summary + "\n")
    stdout.write(format_table(result) + "\n")
    stdout.write(f"wrote {result.html_path}\n")
    return result

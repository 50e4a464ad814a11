"""What a preference dataset looks like (`vlmdpo data stats`) and whether it is valid
(`vlmdpo data check`): pure summaries over records, plus the text reports the CLI prints.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from vlmdpo.types import Message, PreferenceRecord, RowError

_TOKENIZE_CHUNK = 512


# ------------------------------------------------------------------------------------------ stats
def text_of(messages: list[Message]) -> str:
    """The text a tokenizer sees, images left out; parts concatenated as chat templates do."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
            continue
        for p in content or []:
            if p.get("type", "text") == "text" and p.get("text"):
                out.append(p["text"])
    return "".join(out)


def summarize(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values),
            "mean": round(statistics.fmean(values), 3), "max": max(values)}


def collect_stats(records: Iterable[PreferenceRecord], *, tokenizer: Any = None,
                  allow_remote: bool = False) -> dict[str, Any]:
    """Counts, lengths, image sizes (from headers) and duplicates over `records`."""
    from vlmdpo.data.images import image_size

    n = 0
    images_per_row: Counter[int] = Counter()
    chars: dict[str, list[int]] = defaultdict(list)
    tokens: dict[str, list[int]] = defaultdict(list)
    pending: dict[str, list[str]] = defaultdict(list)
    widths: list[int] = []
    heights: list[int] = []
    unique_images: set[str] = set()
    unreadable = 0
    prompt_keys: Counter[str] = Counter()
    flags: Counter[str] = Counter()

    def flush() -> None:
        for side, texts in pending.items():
            if texts:
                enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
                tokens[side].extend(len(ids) for ids in enc)
        pending.clear()

    for record in records:
        n += 1
        images_per_row[len(record.images)] += 1
        flags["system_prompt"] += any(m.get("role") == "system" for m in record.prompt)
        flags["multi_turn"] += sum(m.get("role") == "user" for m in record.prompt) > 1
        flags["image_contrast"] += record.rejected_images is not None
        flags["videos"] += bool(record.videos)
        texts = {side: text_of(getattr(record, side)) for side in ("prompt", "chosen", "rejected")}
        for side, text in texts.items():
            chars[side].append(len(text))
            if tokenizer is not None:
                pending[side].append(text)
        if tokenizer is not None and len(pending["prompt"]) >= _TOKENIZE_CHUNK:
            flush()
        refs = [r.describe() for r in record.images]
        prompt_keys[hashlib.sha1(json.dumps([texts["prompt"], refs], ensure_ascii=False).encode()).hexdigest()] += 1
        for ref in record.images + (record.rejected_images or []):
            unique_images.add(ref.describe())
            size = image_size(ref, allow_remote=allow_remote)
            if size is None:
                unreadable += 1
            else:
                widths.append(size[0])
                heights.append(size[1])
    if tokenizer is not None:
        flush()

    ratios = [c / r for c, r in zip(chars["chosen"], chars["rejected"]) if r > 0]
    pairs = list(zip(chars["chosen"], chars["rejected"]))
    return {
        "rows": n,
        "images_per_row": {str(k): images_per_row[k] for k in sorted(images_per_row)},
        "unique_images": len(unique_images),
        "unreadable_images": unreadable,
        "image_width": summarize(widths),
        "image_height": summarize(heights),
        "image_pixels": summarize([w * h for w, h in zip(widths, heights)]),
        "chars": {side: summarize(chars[side]) for side in ("prompt", "chosen", "rejected")},
        "tokens": {side: summarize(tokens[side]) for side in ("prompt", "chosen", "rejected")} if tokenizer else None,
        "chosen_rejected_char_ratio": summarize([round(x, 4) for x in ratios]),
        "chosen_longer_fraction": round(sum(c > r for c, r in pairs) / len(pairs), 4) if pairs else None,
        "distinct_prompts": len(prompt_keys),
        "duplicate_prompts": sum(c - 1 for c in prompt_keys.values()),
        "rows_with_system_prompt": flags["system_prompt"],
        "multi_turn_rows": flags["multi_turn"],
        "image_contrast_rows": flags["image_contrast"],
        "rows_with_videos": flags["videos"],
    }


def load_tokenizer(name_or_path: str) -> Any:
    """A tokenizer for token counts: AutoTokenizer, or the tokenizer inside an AutoProcessor."""
    from transformers import AutoProcessor, AutoTokenizer

    errors = []
    for loader in (AutoTokenizer, AutoProcessor):
        try:
            obj = loader.from_pretrained(name_or_path)
        except Exception as e:  # transformers raises many types for "not here / not this kind"
            errors.append(f"{loader.__name__}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        tok = getattr(obj, "tokenizer", obj)
        if callable(tok):
            return tok
    raise ValueError(f"could not load a tokenizer from '{name_or_path}' ({'; '.join(errors)}); give a local model "
                     "folder that holds tokenizer files (the hub is only reachable when you are online)")


def data_stats(source: Any, *, model: str | None = None, progress: bool = False, **load_kwargs: Any) -> dict[str, Any]:
    """Stats over the valid rows of `source`, streamed (invalid rows are counted, not described)."""
    from vlmdpo.data.load import iter_preferences

    tokenizer = load_tokenizer(model) if model else None
    stream = iter_preferences(source, on_invalid="skip", **load_kwargs)
    records = (item for item in _with_progress(stream, "stats", progress) if isinstance(item, PreferenceRecord))
    stats = collect_stats(records, tokenizer=tokenizer, allow_remote=load_kwargs.get("allow_remote_images", False))
    stats.update({"read": stream.n_read, "skipped": stream.n_skipped, "formats": dict(stream.formats),
                  "tokenizer": model})
    return stats


def _with_progress(items: Iterable, desc: str, progress: bool) -> Iterable:
    if not progress:
        return items
    from tqdm import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal
    return tqdm(items, desc=desc, unit=" rows", disable=None, mininterval=0.5, leave=False)


def format_stats(stats: dict[str, Any]) -> str:
    def line(label: str, s: dict | None, unit: str = "") -> str:
        if not s:
            return f"  {label:<10} -"
        return f"  {label:<10} min {s['min']:g}  median {s['median']:g}  mean {s['mean']:g}  max {s['max']:g}{unit}"

    out = []
    for file, fmt in (stats.get("formats") or {}).items():
        out.append(f"{file}: format {fmt}")
    out.append(f"rows: {stats['rows']}" + (f" (read {stats['read']}, skipped {stats['skipped']} invalid: "
                                            "run `vlmdpo data check` for details)" if stats.get("skipped") else ""))
    hist = ", ".join(f"{k}: {v}" for k, v in stats["images_per_row"].items()) or "-"
    out.append(f"images per row: {hist}")
    out.append(f"unique images: {stats['unique_images']}"
               + (f" ({stats['unreadable_images']} unreadable)" if stats["unreadable_images"] else ""))
    out.append("image size (header, per occurrence):")
    out.append(line("width", stats["image_width"], " px"))
    out.append(line("height", stats["image_height"], " px"))
    out.append(line("pixels", stats["image_pixels"]))
    out.append("text length (characters):")
    for side, s in stats["chars"].items():
        out.append(line(side, s))
    if stats.get("tokens"):
        out.append(f"text length (tokens, {stats.get('tokenizer')}; image tokens not counted):")
        for side, s in stats["tokens"].items():
            out.append(line(side, s))
    ratio = stats["chosen_rejected_char_ratio"]
    if ratio:
        out.append(f"chosen/rejected length ratio: median {ratio['median']:g}, mean {ratio['mean']:g}; "
                   f"chosen longer in {100 * stats['chosen_longer_fraction']:.1f}% of rows")
    out.append(f"prompts: {stats['distinct_prompts']} distinct, {stats['duplicate_prompts']} duplicates")
    out.append(f"rows with a system prompt: {stats['rows_with_system_prompt']}; multi-turn: {stats['multi_turn_rows']}; "
               f"image-contrast: {stats['image_contrast_rows']}; with videos: {stats['rows_with_videos']}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ check
@dataclass
class CheckReport:
    formats: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    n_read: int = 0
    n_kept: int = 0
    n_skipped: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and self.n_skipped == 0


def check_data(source: Any, *, progress: bool = False, video_refusal: tuple[str, str] | None = None,
               **load_kwargs: Any) -> CheckReport:
    """Read every row of `source` (streamed, records are not kept) and collect every problem.

    `video_refusal` (the chosen model cannot take video: why, and what to do) makes every row with
    videos a problem at its row, as training on that model would."""
    from vlmdpo.data.load import iter_preferences

    stream = iter_preferences(source, on_invalid="skip", **load_kwargs)
    errors, refused = [], 0
    for item in _with_progress(stream, "check", progress):
        if isinstance(item, RowError):
            errors.append(item)
        elif video_refusal and item.videos and item.source is not None:
            errors.append(RowError("video", item.source.file, item.source.row, "videos", *video_refusal))
            refused += 1
    return CheckReport(formats=dict(stream.formats), notes=list(stream.notes), errors=errors,
                       n_read=stream.n_read, n_kept=stream.n_kept - refused, n_skipped=stream.n_skipped + refused)


def format_check(report: CheckReport, *, per_kind: int = 5) -> str:
    """Formats per file, then problems grouped by kind (count + first examples), then counts."""
    # notes say how each format was decided ("x.jsonl: format detected as swift (keys ...)")
    out = list(report.notes)
    noted = {n.split(": format", 1)[0] for n in report.notes}
    out += [f"{file}: format {fmt}" for file, fmt in report.formats.items() if file not in noted]
    groups: dict[str, list[RowError]] = defaultdict(list)
    for err in report.errors:
        groups[err.kind].append(err)
    if groups:
        rows = len({(e.file, e.row) for e in report.errors})
        out.append(f"{len(report.errors)} problem(s) in {rows} row(s):")
    for kind, errs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        out.append(f"  {kind}: {len(errs)}")
        shown = errs if per_kind <= 0 else errs[:per_kind]
        out.extend(f"    {e}" for e in shown)
        if len(errs) > len(shown):
            out.append(f"    ... and {len(errs) - len(shown)} more")
    out.append(f"read {report.n_read}, kept {report.n_kept}, skipped {report.n_skipped}")
    return "\n".join(out)

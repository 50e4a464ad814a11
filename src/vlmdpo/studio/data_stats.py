"""`vlmdpo data stats` for the Data page, plus the per-row values its histograms are drawn from.

The summary is `collect_stats` (the CLI's); while its records stream past, each row's lengths, image
count, image sizes and (with a model) image tokens are noted for the histograms.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from vlmdpo.types import PreferenceRecord

BINS = 20
IMAGE_TOKEN_ROWS = 500  # encoding every row for its image tokens is slow on big sets: the first rows tell enough


def histogram(values: list[float], bins: int = BINS) -> dict[str, list[float]]:
    """Equal-width bins: {"edges": bins + 1 edges, "counts": bins counts}; one bin when all values are equal."""
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    if lo == hi:
        return {"edges": [lo, hi], "counts": [len(values)]}
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}


def _image_counter(model: str) -> Callable[[PreferenceRecord], int | None]:
    """A function: record -> the image tokens its prompt holds once encoded for `model` (as training encodes it)."""
    from vlmdpo.encode import encode_pair
    from vlmdpo.inference.names import family_of

    adapter = family_of(model)
    processor = _processor(model)
    tokenizer = getattr(processor, "tokenizer", processor)
    token = getattr(processor, "image_token", None)
    token_id = tokenizer.convert_tokens_to_ids(token) if token else adapter.image_token_id()

    def count(record: PreferenceRecord) -> int | None:
        if token_id is None:
            return None
        try:
            pair = encode_pair(record, processor, adapter, max_length=None)
        except Exception:  # noqa: BLE001 - a row this model cannot encode is `data check`'s to report
            return None
        return sum(1 for t in pair.prompt_ids if t == token_id)

    return count


def _processor(model: str) -> Any:
    from vlmdpo.inference.names import TINY, ensure_builtin, is_builtin

    if model.startswith(TINY):
        from vlmdpo.model.tiny import build_tiny_processor

        return build_tiny_processor(model.removeprefix(TINY))
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(ensure_builtin(model)) if is_builtin(model) else model)


def data_page_stats(source: Any, *, model: str | None = None, **load_kwargs: Any) -> dict[str, Any]:
    """The CLI's stats (tokens by the model's tokenizer when given) and histograms of the per-row values."""
    from vlmdpo.data.images import image_size
    from vlmdpo.data.load import iter_preferences
    from vlmdpo.data.stats import collect_stats, text_of

    counter = _image_counter(model) if model else None
    tokenizer = None
    if model:
        proc = _processor(model)
        tokenizer = getattr(proc, "tokenizer", proc)
    per_row: dict[str, list[float]] = {k: [] for k in ("prompt chars", "chosen chars", "rejected chars",
                                                         "images per row", "image width", "image height",
                                                         "image tokens per row")}
    allow_remote = load_kwargs.get("allow_remote_images", False)

    def noted(items: Iterable) -> Iterator[PreferenceRecord]:
        for item in items:
            if not isinstance(item, PreferenceRecord):
                continue
            for side in ("prompt", "chosen", "rejected"):
                per_row[f"{side} chars"].append(len(text_of(getattr(item, side))))
            per_row["images per row"].append(len(item.images))
            for ref in item.images:
                size = image_size(ref, allow_remote=allow_remote)
                if size:
                    per_row["image width"].append(size[0])
                    per_row["image height"].append(size[1])
            if counter and len(per_row["image tokens per row"]) < IMAGE_TOKEN_ROWS:
                n = counter(item)
                if n is not None:
                    per_row["image tokens per row"].append(n)
            yield item

    stream = iter_preferences(source, on_invalid="skip", **load_kwargs)
    stats = collect_stats(noted(stream), tokenizer=tokenizer, allow_remote=allow_remote)
    stats.update({"read": stream.n_read, "skipped": stream.n_skipped, "formats": dict(stream.formats),
                  "tokenizer": model})
    stats["histograms"] = {k: histogram(v) for k, v in per_row.items() if v}
    return stats

"""`vlmdpo sample`: K answers per prompt, from a loaded model or an OpenAI-compatible endpoint, appended to a
resumable candidates file (one row per prompt; the format `vlmdpo judge` reads).

A local model samples `batch_size` prompts' K answers in one generate() call. The batches are fixed slices of
the whole prompt list, seeded by their first prompt's (seed, id), and a batch that a cut run half wrote is
sampled again whole, so a resumed run writes the same text an uninterrupted one would. An endpoint gets one
request per answer, seeded by (seed, prompt id) and the answer's index: its answers depend on their own prompt
alone (`per_prompt`), so a resumed run asks only for the prompts still missing.
"""
from __future__ import annotations

import base64
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vlmdpo.types import ImageRef, PreferenceRecord

# (candidate rows without "candidates", each row's images, each row's seed) -> K answers per row
Answerer = Callable[[list[dict[str, Any]], list[list[ImageRef]], list[int]], list[list[str]]]


@dataclass(frozen=True)
class SampleOptions:
    n: int = 4
    temperature: float = 0.9
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    batch_size: int = 8  # prompts per generate() call of a local model (an endpoint is asked per answer)

    def check(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("-n, --max-new-tokens and --batch-size must be at least 1; pass positive numbers")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("--temperature must be >= 0 and --top-p in (0, 1]; pass valid numbers")


def prompt_seed(seed: int, row_id: str) -> int:
    """A stable seed per prompt (crc32, not hash(): Python salts str hashes per process)."""
    return zlib.crc32(f"{seed}:{row_id}".encode()) & 0x7FFFFFFF


def image_value(ref: ImageRef) -> str:
    """What the candidates file holds for an image: an absolute path, a data URI, or the URL."""
    if ref.path is not None:
        return ref.path
    if ref.url is not None:
        return ref.url
    data = ref.data
    if data is None:  # a PIL image given through the Python API
        import io

        buf = io.BytesIO()
        ref.pil.save(buf, format="PNG")
        data = buf.getvalue()
    return data_uri(data)


def data_uri(data: bytes) -> str:
    mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png" if data[:4] == b"\x89PNG" else "image/webp" \
        if data[8:12] == b"WEBP" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def candidate_row(record: PreferenceRecord) -> dict[str, Any]:
    """The row's fields before sampling (chosen / rejected are not used)."""
    if record.videos:
        raise ValueError(f"{record.source}: field 'videos': sampling from video prompts is not supported; "
                         "drop the row's videos or the row")
    row: dict[str, Any] = {"id": record.id, "prompt": record.prompt,
                           "images": [image_value(ref) for ref in record.images], "candidates": []}
    if "truth" in record.meta:
        row["truth"] = record.meta["truth"]
    row["meta"] = record.meta
    row["source"] = str(record.source) if record.source else ""
    return row


def sample_file(data: Any, out: Path, answer: Answerer, options: SampleOptions, *, load_kwargs: dict | None = None,
                progress: bool = True) -> str:
    """Append one candidates row per prompt of `data` not already in `out`; returns the closing line."""
    from tqdm import tqdm

    from vlmdpo.data.load import load_preferences
    from vlmdpo.engine.jsonl import append_row, done_ids

    options.check()
    records = load_preferences(data, **(load_kwargs or {})).records
    seen: dict[str, Any] = {}
    for r in records:
        if r.id in seen:
            raise ValueError(f"{r.source}: field 'id': {r.id!r} is also the id of {seen[r.id]}; "
                             "sampling resumes by id, so give every row its own id")
        seen[r.id] = r.source
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_ids(out)
    n_done = sum(r.id in done for r in records)
    per_prompt = getattr(answer, "per_prompt", False)
    written = 0
    with open(out, "a", encoding="utf-8") as fh, \
            tqdm(total=len(records), initial=n_done, desc="sample", unit="prompt", file=sys.stderr,
                 disable=not progress) as bar:
        for start in range(0, len(records), options.batch_size):
            batch = records[start:start + options.batch_size]
            if per_prompt:
                batch = [r for r in batch if r.id not in done]
            if all(r.id in done for r in batch):
                continue
            rows = [candidate_row(r) for r in batch]
            answers = answer(rows, [list(r.images) for r in batch], [prompt_seed(options.seed, r.id) for r in batch])
            for record, row, texts in zip(batch, rows, answers):
                if record.id in done:  # written before the run was cut: sampled again only to keep the batch
                    continue
                row["candidates"] = texts
                append_row(fh, row)
                written += 1
                bar.update(1)
    return (f"sampled {written} prompt(s) x {options.n} answer(s) into {out}"
            + (f"; {n_done} already there (resumed)" if n_done else ""))


def model_answerer(im: Any, options: SampleOptions) -> Answerer:
    """K answers per prompt from a loaded InferenceModel: a batch's prompts with the same number of images go
    through one generate() call together (K rows each), seeded by the first of them."""
    from vlmdpo.data.images import load_image
    from vlmdpo.inference import GenerationSettings, generate_rows, prepare_batch

    def answer(rows: list[dict[str, Any]], images: list[list[ImageRef]], seeds: list[int]) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in rows]
        groups: dict[int, list[int]] = {}  # a processor cannot mix rows with and without images in one call
        for i, refs in enumerate(images):
            groups.setdefault(len(refs), []).append(i)
        for members in groups.values():
            conversations = []
            for i in members:
                pixels = [load_image(ref, allow_remote=True) for ref in images[i]]
                conversations += [(rows[i]["prompt"], pixels)] * options.n
            settings = GenerationSettings(max_new_tokens=options.max_new_tokens, temperature=options.temperature,
                                          top_p=options.top_p, seed=seeds[members[0]])
            ids = generate_rows(im, prepare_batch(im, conversations), settings)
            for j, i in enumerate(members):
                out[i] = [im.tokenizer.decode(t, skip_special_tokens=True).strip()
                          for t in ids[j * options.n:(j + 1) * options.n]]
        return out

    return answer


def endpoint_answerer(client: Any, options: SampleOptions) -> Answerer:
    """K answers per prompt from an OpenAI-compatible endpoint: one request per answer, seeded seed + k."""

    def answer(rows: list[dict[str, Any]], images: list[list[ImageRef]], seeds: list[int]) -> list[list[str]]:
        return [[client.complete(row["prompt"], row["images"], temperature=options.temperature, top_p=options.top_p,
                                 max_tokens=options.max_new_tokens, seed=seed + k) for k in range(options.n)]
                for row, seed in zip(rows, seeds)]

    answer.per_prompt = True  # type: ignore[attr-defined]  # read by sample_file: resume without asking twice
    return answer

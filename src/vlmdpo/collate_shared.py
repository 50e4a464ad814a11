"""Collation for the fast paths: shared-prefix rows, plain rows, and padding-free packing.

The plain collator (`vlmdpo.collate`) builds 2B rows [prompt+chosen], [prompt+rejected], each
carrying the image. Here every pair becomes one or two *documents*:

* a shared document ``[prompt; chosen; rejected]`` when chosen and rejected share the prompt
  (the usual case): the prompt and its image tokens go through the model once; the mask lets
  rejected tokens see the prompt but not chosen, and rejected positions restart at the
  prompt's end, so every token sees exactly what it would see in the plain layout;
* two documents ``[prompt; chosen]`` and ``[rejected_prompt; rejected]`` for image-contrast
  pairs (different images on the rejected side), or for every pair when ``shared_prefix`` is
  off (then rows are laid out as the plain path does: all chosen docs, then all rejected).

Documents are placed one pair per row (padded), or, with ``padding_free``, concatenated into as
few rows as the token budget allows. Images appear in the input exactly in document order, so
the vision inputs are concatenated in that order. Each token carries a document id, a branch
(0 prompt, 1 chosen, 2 rejected) and its logical position; the attention mask and position ids
are derived from these at forward time (`vlmdpo.model.fast`), where device and dtype are known.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from vlmdpo.types import EncodedPair

PROMPT, CHOSEN, REJECTED = 0, 1, 2


@dataclass(frozen=True)
class FastOptions:
    """The fast-path switches (config keys of the same names).

    Layout switches (`shared_prefix`, `padding_free`, `max_tokens_per_row`) act in
    `collate_shared`; the others in `vlmdpo.model.fast.fast_batch_logps`. The batch carries
    its options, so any code that computes log-probs of it does what it was collated for.
    """

    share_vision: bool = True  # encoder once per pair; reused by the reference when frozen
    shared_prefix: bool = True  # [prompt; chosen; rejected] in one row
    completion_only_logits: bool = True  # LM head on completion positions only, chunked
    padding_free: bool = False  # pack documents into rows (block-sparse with flex_attention)
    logits_chunk_size: int = 1024
    max_tokens_per_row: int | None = None  # padding-free row budget (None: one row)

    @classmethod
    def from_config(cls, cfg: Any) -> FastOptions:
        """From a TrainConfig (or anything with these attributes); missing ones keep defaults."""
        return cls(**{f: getattr(cfg, f) for f in cls.__dataclass_fields__ if getattr(cfg, f, None) is not None})


@dataclass
class DocSpan:
    """Where one document lies: row, first column, prompt length, and its completion parts."""

    row: int
    start: int
    prompt_len: int
    parts: list[tuple[int, int, int]]  # (branch, first column, length)
    pair: int

    @property
    def length(self) -> int:
        return self.prompt_len + sum(n for _, _, n in self.parts)


@dataclass
class CompletionIndex:
    """One entry per completion token: the row and column of the hidden state that predicts it.

    ``pred`` is not always ``column - 1``: the first rejected token of a shared document is
    predicted from the prompt's last token, which lies before the chosen tokens.
    """

    row: torch.Tensor  # [N] long
    pred: torch.Tensor  # [N] long, column of the predicting hidden state
    target: torch.Tensor  # [N] long, the token id
    pair: torch.Tensor  # [N] long
    side: torch.Tensor  # [N] long, 0 chosen, 1 rejected
    k: torch.Tensor  # [N] long, index of the token inside its completion

    def to(self, device) -> CompletionIndex:
        return CompletionIndex(*(getattr(self, f).to(device) for f in ("row", "pred", "target", "pair", "side", "k")))


@dataclass
class SharedBatch:
    """A batch in a fast layout. `layout` is "shared", "plain" or "packed" (padding-free)."""

    input_ids: torch.Tensor  # [R, T]
    doc: torch.Tensor  # [R, T] long, document id, -1 on padding
    branch: torch.Tensor  # [R, T] long, PROMPT / CHOSEN / REJECTED, 0 on padding
    positions: torch.Tensor  # [R, T] long, logical 1D positions (0 on padding)
    docs: list[DocSpan]
    completion: CompletionIndex
    chosen_lengths: torch.Tensor  # [B] long
    rejected_lengths: torch.Tensor  # [B] long
    vision: dict[str, Any]  # vision inputs of every document, in document order
    ids: list[str]
    num_pairs: int
    layout: str
    # True when each pair's images appear twice in the same order (plain layout, no
    # image-contrast pairs): image features can then be computed once and repeated.
    vision_repeats: bool = False
    vision_unique: dict[str, Any] | None = None  # with vision_repeats: the vision inputs of one copy
    ref_chosen_logps: Any = None
    ref_rejected_logps: Any = None
    stats: dict[str, int] = field(default_factory=dict)
    options: FastOptions = field(default_factory=FastOptions)
    # Frozen-encoder outputs computed by the first model that ran on this batch (reference or
    # policy); the other reuses them (see vlmdpo.model.fast.forward).
    vision_cache: dict[str, Any] | None = None
    tower_cache: Any = None  # a frozen vision tower's output, when only the tower is frozen

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens the model runs: the prompt once per shared document."""
        return int((self.doc >= 0).sum())

    def to(self, device) -> SharedBatch:
        def move(v: Any) -> Any:
            return v.to(device) if isinstance(v, torch.Tensor) else v

        return replace(
            self, input_ids=move(self.input_ids), doc=move(self.doc), branch=move(self.branch),
            positions=move(self.positions), completion=self.completion.to(device),
            chosen_lengths=move(self.chosen_lengths), rejected_lengths=move(self.rejected_lengths),
            vision={k: move(v) for k, v in self.vision.items()},
            vision_unique={k: move(v) for k, v in self.vision_unique.items()} if self.vision_unique else None,
            ref_chosen_logps=move(self.ref_chosen_logps), ref_rejected_logps=move(self.ref_rejected_logps),
        )


def _docs_of_pair(i: int, p: EncodedPair, shared_prefix: bool) -> list[tuple[list[int], dict, list[tuple[int, list[int]]]]]:
    """(prompt ids, vision inputs, [(branch, ids)]) for each document of pair `i`."""
    if not p.prompt_ids:
        raise ValueError(f"pair {p.id!r}: empty prompt_ids; encode_pair always renders a prompt, so this pair was built by hand wrongly")
    if not p.chosen_ids or not p.rejected_ids:
        raise ValueError(f"pair {p.id!r}: no chosen or rejected completion tokens; encode_pair should have dropped it")
    contrast = p.rejected_prompt_ids is not None
    if shared_prefix and not contrast:
        return [(p.prompt_ids, p.vision, [(CHOSEN, p.chosen_ids), (REJECTED, p.rejected_ids)])]
    r_prompt = p.rejected_prompt_ids if contrast else p.prompt_ids
    r_vision = p.rejected_vision if (contrast and p.rejected_vision is not None) else p.vision
    return [(p.prompt_ids, p.vision, [(CHOSEN, p.chosen_ids)]), (r_prompt, r_vision, [(REJECTED, p.rejected_ids)])]


def collate_shared(
    pairs: list[EncodedPair],
    *,
    pad_token_id: int,
    family: Any = None,
    options: FastOptions | None = None,
    pad_to_multiple_of: int | None = None,
) -> SharedBatch:
    """Lay `pairs` out for `vlmdpo.model.fast.fast_batch_logps`, as `options` say.

    With `options.padding_free`, documents are concatenated into rows of at most
    `options.max_tokens_per_row` tokens (one row if None); a longer document gets a row of its
    own. `family` is accepted for symmetry with `vlmdpo.collate.collate` (vision inputs are
    joined by their keys, see `concat_vision`).
    """
    if not pairs:
        raise ValueError("collate_shared needs at least one pair")
    options = options or FastOptions()
    shared_prefix, padding_free = options.shared_prefix, options.padding_free
    max_tokens_per_row = options.max_tokens_per_row
    per_pair = [_docs_of_pair(i, p, shared_prefix) for i, p in enumerate(pairs)]
    # Document order decides image order in the input; the plain layout puts every chosen
    # document first, then every rejected one, as the plain collator does.
    if shared_prefix:
        ordered = [(i, d) for i, docs in enumerate(per_pair) for d in docs]
    else:
        ordered = [(i, docs[0]) for i, docs in enumerate(per_pair)] + [(i, docs[1]) for i, docs in enumerate(per_pair)]

    def doc_len(d) -> int:
        return len(d[0]) + sum(len(ids) for _, ids in d[2])

    rows: list[list[tuple[int, Any]]] = []
    if padding_free:
        budget = max_tokens_per_row
        used = 0
        for item in ordered:
            n = doc_len(item[1])
            if not rows or (budget is not None and used + n > budget):
                rows.append([])
                used = 0
            rows[-1].append(item)
            used += n
        layout = "packed"
    elif shared_prefix:
        rows = [[] for _ in pairs]
        for i, d in ordered:
            rows[i].append((i, d))
        layout = "shared"
    else:
        rows = [[item] for item in ordered]
        layout = "plain"

    T = max(sum(doc_len(d) for _, d in row) for row in rows)
    if pad_to_multiple_of:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    R = len(rows)
    input_ids = torch.full((R, T), pad_token_id, dtype=torch.long)
    doc = torch.full((R, T), -1, dtype=torch.long)
    branch = torch.zeros((R, T), dtype=torch.long)
    positions = torch.zeros((R, T), dtype=torch.long)
    spans: list[DocSpan] = []
    visions: list[dict] = []
    c_row, c_pred, c_tgt, c_pair, c_side, c_k = [], [], [], [], [], []
    chosen_len = [0] * len(pairs)
    rejected_len = [0] * len(pairs)
    for r, row in enumerate(rows):
        col = 0
        for pair_i, (prompt, vision, parts) in row:
            d_id = len(spans)
            P = len(prompt)
            input_ids[r, col: col + P] = torch.tensor(prompt, dtype=torch.long)
            doc[r, col: col + P] = d_id
            positions[r, col: col + P] = torch.arange(P)
            span = DocSpan(row=r, start=col, prompt_len=P, parts=[], pair=pair_i)
            prompt_end = col + P - 1
            col += P
            for b, ids in parts:
                n = len(ids)
                input_ids[r, col: col + n] = torch.tensor(ids, dtype=torch.long)
                doc[r, col: col + n] = d_id
                branch[r, col: col + n] = b
                positions[r, col: col + n] = torch.arange(P, P + n)
                span.parts.append((b, col, n))
                cols = list(range(col, col + n))
                c_row += [r] * n
                c_pred += [prompt_end] + cols[:-1]
                c_tgt += list(ids)
                c_pair += [pair_i] * n
                c_side += [b - 1] * n
                c_k += list(range(n))
                if b == CHOSEN:
                    chosen_len[pair_i] = n
                else:
                    rejected_len[pair_i] = n
                col += n
            spans.append(span)
            visions.append(vision or {})
    lt = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    completion = CompletionIndex(lt(c_row), lt(c_pred), lt(c_tgt), lt(c_pair), lt(c_side), lt(c_k))
    contrast = any(p.rejected_prompt_ids is not None for p in pairs)
    real = int((doc >= 0).sum())
    return SharedBatch(
        input_ids=input_ids, doc=doc, branch=branch, positions=positions, docs=spans,
        completion=completion, chosen_lengths=lt(chosen_len), rejected_lengths=lt(rejected_len),
        vision=concat_vision(visions), ids=[p.id for p in pairs], num_pairs=len(pairs), layout=layout,
        vision_repeats=(layout == "plain" and not contrast),
        vision_unique=concat_vision(visions[: len(pairs)]) if (layout == "plain" and not contrast) else None,
        stats={"rows": R, "row_length": T, "tokens": real, "padding": R * T - real,
               "completion_tokens": int(completion.row.numel())},
        options=options,
    )


# ---- vision inputs -------------------------------------------------------------------------
# Keys whose tensors list one entry per image (or patch) along dim 0 and are simply joined.
_CAT_KEYS = ("image_grid_thw", "video_grid_thw", "image_sizes", "pixel_values_videos", "second_per_grid_ts")


def _as_tensor(v: Any) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(v)


def _pad_to(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad `t` at the end of every dim up to `shape` (the processors pad this way)."""
    pad: list[int] = []
    for have, want in zip(reversed(t.shape), reversed(shape)):
        pad += [0, want - have]
    return F.pad(t, pad) if any(pad) else t


def concat_vision(visions: list[dict[str, Any]]) -> dict[str, Any]:
    """Join per-document vision inputs, keeping image order.

    Idefics3-style 5D ``pixel_values`` [n_samples, n_images, C, H, W] (with
    ``pixel_attention_mask``) become one sample holding every image, zero-padded to the largest
    H and W: Idefics3 scatters real images in order and skips all-zero padding images, so how
    images are grouped into samples does not matter. LLaVA-NeXT's 5D [n_images, n_patches, C,
    H, W] is padded along patches. Everything else is concatenated along dim 0.
    """
    present = [v for v in visions if v]
    if not present:
        return {}
    keys = list(dict.fromkeys(k for v in present for k in v))
    out: dict[str, Any] = {}
    idefics_style = any("pixel_attention_mask" in v for v in present)
    for key in keys:
        vals = [_as_tensor(v[key]) for v in present if key in v and v[key] is not None]
        if not vals:
            continue
        if key in ("pixel_values", "pixel_attention_mask") and idefics_style:
            flat = [t.reshape(-1, *t.shape[2:]) for t in vals]  # [n_images, (C,) H, W]
            shape = tuple(max(t.shape[d] for t in flat) for d in range(1, flat[0].dim()))
            out[key] = torch.cat([_pad_to(t, (t.shape[0], *shape)) for t in flat]).unsqueeze(0)
        elif key == "pixel_values" and vals[0].dim() == 5:
            shape = tuple(max(t.shape[d] for t in vals) for d in range(1, 5))
            out[key] = torch.cat([_pad_to(t, (t.shape[0], *shape)) for t in vals])
        elif key in _CAT_KEYS or key == "pixel_values":
            out[key] = torch.cat(vals)
        else:
            # Unknown per-image key: joining along dim 0 is what every processor we know does.
            out[key] = torch.cat(vals) if vals[0].dim() > 0 else vals[0]
    return out

"""The fast layouts: shared-prefix rows, and padding-free packing, of the plain layout's documents.

Every pair becomes one or two *documents* (`vlmdpo.batching.plain.Doc`):

* a shared document ``[prompt; chosen; rejected]`` when chosen and rejected share the prompt
  (the usual case): the prompt and its image tokens go through the model once; the mask lets
  rejected tokens see the prompt but not chosen, and rejected positions restart at the
  prompt's end, so every token sees exactly what it would see in the plain layout;
* the plain layout's two documents ``[prompt; chosen]`` and ``[rejected_prompt; rejected]`` for
  image-contrast pairs, or for every pair when ``shared_prefix`` is off (then rows are exactly the
  plain layout's rows, in its order: `plain_docs`).

Documents are placed one pair per row (padded), or, with ``padding_free``, concatenated into as
few rows as the token budget allows. Images appear in the input exactly in document order, so
the vision inputs are joined in that order (`FamilyAdapter.join_vision`). Each token carries a
document id, a branch (0 prompt, 1 chosen, 2 rejected) and its logical position; the attention
mask and position ids are derived from these at forward time (`vlmdpo.model.fast`).
"""
from __future__ import annotations

import torch

from vlmdpo.batching.plain import Doc, chosen_doc, plain_docs, rejected_doc, row_width
from vlmdpo.model.families import FamilyAdapter, adapter_for
from vlmdpo.types import CHOSEN, REJECTED, CompletionIndex, DocSpan, EncodedPair, FastOptions, SharedBatch


def _check(p: EncodedPair) -> None:
    if not p.prompt_ids:
        raise ValueError(f"pair {p.id!r}: empty prompt_ids; encode_pair always renders a prompt, so this pair was built by hand wrongly")
    if not p.chosen_ids or not p.rejected_ids:
        raise ValueError(f"pair {p.id!r}: no chosen or rejected completion tokens; encode_pair should have dropped it")


def shared_docs(pairs: list[EncodedPair]) -> list[Doc]:
    """One shared document per pair, or the plain layout's two for an image-contrast pair, pair by pair."""
    out: list[Doc] = []
    for i, p in enumerate(pairs):
        if p.rejected_prompt_ids is None:
            out.append(Doc(i, p.prompt_ids, p.vision, ((CHOSEN, p.chosen_ids), (REJECTED, p.rejected_ids))))
        else:
            out += [chosen_doc(i, p), rejected_doc(i, p)]
    return out


def _arrange(docs: list[Doc], options: FastOptions) -> tuple[list[list[Doc]], str]:
    if options.padding_free:
        budget = options.max_tokens_per_row
        rows: list[list[Doc]] = []
        used = 0
        for d in docs:
            if not rows or (budget is not None and used + d.length > budget):
                rows.append([])
                used = 0
            rows[-1].append(d)
            used += d.length
        return rows, "packed"
    if options.shared_prefix:
        by_pair: dict[int, list[Doc]] = {}
        for d in docs:
            by_pair.setdefault(d.pair, []).append(d)
        return list(by_pair.values()), "shared"
    return [[d] for d in docs], "plain"


def collate_shared(
    pairs: list[EncodedPair],
    *,
    pad_token_id: int,
    family: FamilyAdapter | str,
    options: FastOptions | None = None,
    pad_to_multiple_of: int | None = None,
) -> SharedBatch:
    """Lay `pairs` out for `vlmdpo.model.fast.fast_batch_logps`, as `options` say.

    With `options.padding_free`, documents are concatenated into rows of at most
    `options.max_tokens_per_row` tokens (one row if None); a longer document gets a row of its
    own. `family` joins the vision inputs (`FamilyAdapter.join_vision`).
    """
    if not pairs:
        raise ValueError("collate_shared needs at least one pair")
    for p in pairs:
        _check(p)
    adapter = adapter_for(family)
    options = options or FastOptions()
    docs = shared_docs(pairs) if options.shared_prefix else plain_docs(pairs)
    rows, layout = _arrange(docs, options)

    T = row_width(max(sum(d.length for d in row) for row in rows), pad_to_multiple_of)
    R = len(rows)
    input_ids = torch.full((R, T), pad_token_id, dtype=torch.long)
    doc = torch.full((R, T), -1, dtype=torch.long)
    branch = torch.zeros((R, T), dtype=torch.long)
    positions = torch.zeros((R, T), dtype=torch.long)
    spans: list[DocSpan] = []
    c_row, c_pred, c_tgt, c_pair, c_side, c_k = [], [], [], [], [], []
    chosen_len = [0] * len(pairs)
    rejected_len = [0] * len(pairs)
    for r, row in enumerate(rows):
        col = 0
        for d in row:
            d_id = len(spans)
            P = len(d.prompt)
            input_ids[r, col: col + P] = torch.tensor(d.prompt, dtype=torch.long)
            doc[r, col: col + P] = d_id
            positions[r, col: col + P] = torch.arange(P)
            span = DocSpan(row=r, start=col, prompt_len=P, parts=[], pair=d.pair)
            prompt_end = col + P - 1
            col += P
            for b, ids in d.parts:
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
                c_pair += [d.pair] * n
                c_side += [b - 1] * n
                c_k += list(range(n))
                (chosen_len if b == CHOSEN else rejected_len)[d.pair] = n
                col += n
            spans.append(span)
    lt = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    completion = CompletionIndex(lt(c_row), lt(c_pred), lt(c_tgt), lt(c_pair), lt(c_side), lt(c_k))
    ordered = [d for row in rows for d in row]
    repeats = layout == "plain" and not any(p.rejected_prompt_ids is not None for p in pairs)
    real = int((doc >= 0).sum())
    return SharedBatch(
        input_ids=input_ids, doc=doc, branch=branch, positions=positions, docs=spans,
        completion=completion, chosen_lengths=lt(chosen_len), rejected_lengths=lt(rejected_len),
        vision=adapter.join_vision([d.vision or {} for d in ordered]), ids=[p.id for p in pairs],
        num_pairs=len(pairs), layout=layout, vision_repeats=repeats,
        vision_unique=adapter.join_vision([d.vision or {} for d in ordered[: len(pairs)]]) if repeats else None,
        stats={"rows": R, "row_length": T, "tokens": real, "padding": R * T - real,
               "completion_tokens": int(completion.row.numel())},
        options=options,
    )

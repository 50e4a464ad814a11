"""The typed values that flow through vlmdpo, one stage to the next.

records -> EncodedPair -> Batch (plain layout) or SharedBatch (fast layouts) -> LogpPair -> loss
-> metrics. Nothing downstream of `PreferenceRecord` knows which file format a pair came from.
Tensor fields hold torch tensors; torch itself is imported only where a value is moved.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

# A chat message, normalized: content is always a list of parts, each either
# {"type": "text", "text": str} or {"type": "image"} / {"type": "video"}; the n-th image part
# across the prompt refers to record.images[n].
Message = dict[str, Any]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ImageRef:
    """Where an image comes from; decoded lazily by `vlmdpo.data.images.load_image`.

    Exactly one of path / data / url / pil is set. `path` is already resolved (absolute);
    `data` holds encoded bytes (from a datasets Image dict or a base64 data URI).
    """

    path: str | None = None
    data: bytes | None = None
    url: str | None = None
    pil: Any = None  # a PIL.Image given through the Python API
    origin: str = ""  # what the row said (for error messages), e.g. "img/0.jpg"

    def describe(self) -> str:
        if self.path is not None:
            return self.path
        if self.url is not None:
            return self.url
        if self.data is not None:
            return self.origin or f"<{len(self.data)} bytes>"
        return self.origin or "<PIL image>"


@dataclass(frozen=True)
class RowSource:
    """Where a row was read from, for error messages: file and 1-based row number."""

    file: str
    row: int

    def __str__(self) -> str:
        return f"{self.file}:{self.row}"


@dataclass
class PreferenceRecord:
    id: str
    prompt: list[Message]  # system/user/assistant turns ending with a user turn
    chosen: list[Message]  # assistant message(s)
    rejected: list[Message]  # assistant message(s)
    images: list[ImageRef] = field(default_factory=list)
    rejected_images: list[ImageRef] | None = None  # image-contrast pairs
    videos: list[ImageRef] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    source: RowSource | None = None


@dataclass(frozen=True)
class RowError:
    """One problem with one row: what, where, and how to fix it."""

    kind: str  # short stable identifier, e.g. "placeholder_count"
    file: str
    row: int  # 1-based; 0 when the problem is with the file as a whole
    field: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.row}" if self.row else self.file
        text = f"{where}: field '{self.field}': {self.message}"
        return f"{text} -> {self.fix}" if self.fix else text


@dataclass
class EncodedPair:
    """One pair after the chat template and processor.

    prompt_ids include the model's expanded image tokens; chosen_ids / rejected_ids are the
    completion tokens only (end-of-turn token included). `vision` holds the processor's pixel
    inputs for the prompt's images (pixel_values, image_grid_thw, pixel_attention_mask,
    image_sizes, ... as the family needs), once per pair. `rejected_vision` and
    `rejected_prompt_ids` are set only for image-contrast pairs. `extra` holds per-token
    prompt tensors a family needs (e.g. mm_token_type_ids / token_type_ids as lists).
    """

    id: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    vision: dict[str, Any] = field(default_factory=dict)
    rejected_prompt_ids: list[int] | None = None
    rejected_vision: dict[str, Any] | None = None
    truncated: bool = False


@dataclass
class Batch:
    """A collated batch in the plain layout: rows [chosen_0..chosen_{B-1}, rejected_0..].

    `model_inputs` go straight to the model's forward; `completion_mask` marks the positions
    whose *next-token* log-prob counts (aligned with input_ids, 1 where input_ids[t] is a
    completion token). `ids` are the pair ids, in order.
    """

    model_inputs: dict[str, Any]
    completion_mask: Any  # torch.Tensor [2B, L]
    ids: list[str]
    num_pairs: int

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens the model runs."""
        mask = self.model_inputs.get("attention_mask")
        return int(mask.sum()) if mask is not None else 0

    def to(self, device) -> Batch:
        return replace(self, model_inputs={k: _move(v, device) for k, v in self.model_inputs.items()},
                       completion_mask=_move(self.completion_mask, device))


@dataclass
class LogpPair:
    """Sequence log-probs of the completions, per pair ([B] tensors)."""

    chosen_logps: Any
    rejected_logps: Any
    chosen_lengths: Any  # number of completion tokens
    rejected_lengths: Any
    # Summed log-probs of the first `min(len_c, len_r)` tokens of each completion; set only
    # when a loss needs it (ld_alpha, length-desensitized DPO).
    chosen_shared_logps: Any = None
    rejected_shared_logps: Any = None


# ---- fast layouts (vlmdpo.batching.shared -> vlmdpo.model.fast) ------------------------------
# Branch of each token in a fast-layout row.
PROMPT, CHOSEN, REJECTED = 0, 1, 2


@dataclass(frozen=True)
class FastOptions:
    """The fast-path switches, and their defaults (the config keys of the same names take them from here).

    Layout switches (`shared_prefix`, `padding_free`, `max_tokens_per_row`) act in
    `vlmdpo.batching.shared`; the others in `vlmdpo.model.fast.fast_batch_logps`. The batch
    carries its options, so any code that computes log-probs of it does what it was collated for.
    """

    share_vision: bool = True  # encoder once per pair; reused by the reference when frozen
    shared_prefix: bool = True  # [prompt; chosen; rejected] in one row
    completion_only_logits: bool = True  # LM head on completion positions only, chunked
    padding_free: bool = False  # pack documents into rows (block-sparse with flex_attention)
    logits_chunk_size: int = 1024
    max_tokens_per_row: int | None = None  # padding-free row budget (None: one row)


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


def _move(value: Any, device: Any) -> Any:
    import torch

    return value.to(device) if isinstance(value, torch.Tensor) else value


@dataclass
class CompletionIndex:
    """One entry per completion token: the row and column of the hidden state that predicts it.

    ``pred`` is not always ``column - 1``: the first rejected token of a shared document is
    predicted from the prompt's last token, which lies before the chosen tokens.
    """

    row: Any  # [N] long
    pred: Any  # [N] long, column of the predicting hidden state
    target: Any  # [N] long, the token id
    pair: Any  # [N] long
    side: Any  # [N] long, 0 chosen, 1 rejected
    k: Any  # [N] long, index of the token inside its completion

    def to(self, device) -> CompletionIndex:
        return CompletionIndex(*(_move(getattr(self, f), device) for f in ("row", "pred", "target", "pair", "side", "k")))


@dataclass
class SharedBatch:
    """A batch in a fast layout. `layout` is "shared", "plain" or "packed" (padding-free)."""

    input_ids: Any  # [R, T] long
    doc: Any  # [R, T] long, document id, -1 on padding
    branch: Any  # [R, T] long, PROMPT / CHOSEN / REJECTED, 0 on padding
    positions: Any  # [R, T] long, logical 1D positions (0 on padding)
    docs: list[DocSpan]
    completion: CompletionIndex
    chosen_lengths: Any  # [B] long
    rejected_lengths: Any  # [B] long
    vision: dict[str, Any]  # vision inputs of every document, in document order
    ids: list[str]
    num_pairs: int
    layout: str
    # True when each pair's images appear twice in the same order (plain layout, no
    # image-contrast pairs): image features can then be computed once and repeated.
    vision_repeats: bool = False
    vision_unique: dict[str, Any] | None = None  # with vision_repeats: the vision inputs of one copy
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
        return replace(
            self, input_ids=_move(self.input_ids, device), doc=_move(self.doc, device),
            branch=_move(self.branch, device), positions=_move(self.positions, device),
            completion=self.completion.to(device), chosen_lengths=_move(self.chosen_lengths, device),
            rejected_lengths=_move(self.rejected_lengths, device),
            vision={k: _move(v, device) for k, v in self.vision.items()},
            vision_unique={k: _move(v, device) for k, v in self.vision_unique.items()} if self.vision_unique else None,
        )


@dataclass(frozen=True)
class Dropped:
    """A pair left out of training or scoring, and why: reported, never silently lost."""

    id: str
    source: str  # "file:row" when known
    kind: str
    message: str  # what is wrong -> how to fix it

    def __str__(self) -> str:
        return f"{self.source or self.id}: {self.kind}: {self.message}"

"""The typed values that flow through vlmdpo, one stage to the next.

records -> EncodedPair -> Batch -> LogpPair -> loss -> metrics. Nothing downstream of
`PreferenceRecord` knows which file format a pair came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    ref_chosen_logps: Any = None  # precomputed reference log-probs, [B] or None
    ref_rejected_logps: Any = None


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

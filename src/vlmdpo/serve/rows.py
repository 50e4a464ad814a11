"""Per-row bookkeeping of one batched generate(): it is both the streamer (text of each row as it
grows) and the stopping criteria (a row ends on a stop string, its own max_tokens, or a client that left).

The text a row streams equals `vlmdpo chat`'s reply: decoded with special tokens skipped, leading and
trailing whitespace held back (chat strips them), cut before a stop string.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer


@dataclass
class Row:
    max_tokens: int
    stop_strings: tuple[str, ...]
    on_text: Callable[[str], None]
    cancelled: Callable[[], bool]
    ids: list[int] = field(default_factory=list)
    sent: str = ""  # text already streamed
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" once the row ended

    def visible(self, text: str) -> str:
        """What may be streamed so far: stripped, cut at a stop string, no partial stop string or
        half-decoded character at the end."""
        text = text.lstrip()
        for stop in self.stop_strings:
            at = text.find(stop)
            if at >= 0:
                text, self.finish_reason = text[:at], "stop"
        if self.finish_reason is None:
            text = text.rstrip("\ufffd")
            hold = max((k for s in self.stop_strings for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            text = text[: len(text) - hold]
        return text.rstrip()


class RowTracker(BaseStreamer, StoppingCriteria):
    def __init__(self, tokenizer, rows: list[Row], stops: list[int]):
        self.tokenizer, self.rows, self.stops = tokenizer, rows, set(stops)
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt
            self._prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(len(self.rows), -1)[:, -1].tolist()):
            if row.finish_reason is not None:
                continue
            if row.cancelled():
                row.finish_reason = "cancelled"
                continue
            if token in self.stops:
                row.finish_reason = "stop"
            else:
                row.ids.append(token)
                if len(row.ids) >= row.max_tokens:
                    row.finish_reason = "length"
            self._emit(row)  # a finished row releases what it held back (a partial character at the end)

    def _emit(self, row: Row) -> None:
        text = row.visible(self.tokenizer.decode(row.ids, skip_special_tokens=True))
        if len(text) > len(row.sent) and text.startswith(row.sent):
            row.on_text(text[len(row.sent):])
            row.sent = text

    def end(self) -> None:
        for row in self.rows:
            if row.finish_reason is None:
                row.finish_reason = "length" if len(row.ids) >= row.max_tokens else "stop"
                self._emit(row)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        for row in self.rows:
            if row.finish_reason is None and row.cancelled():
                row.finish_reason = "cancelled"
        done = [row.finish_reason is not None for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

"""The transformers engine: one worker thread per loaded base model, a bounded wait queue, and
batching of compatible requests into one generate() (left-padded; greedy requests on the same
adapter batch together, a sampled request runs alone so that its seed means the same as alone).

Events go back through each Job's `emit` (the server turns them into JSON or server-sent events):
("text", choice, delta), ("done", choice, finish_reason, completion_tokens), ("error", message), ("end",).
"""
from __future__ import annotations

import contextlib
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from vlmdpo.inference import GenerationSettings, InferenceModel, generate_rows, prepare_batch, stop_token_ids
from vlmdpo.serve.rows import Row, RowTracker
from vlmdpo.serve.schema import ApiError


class QueueFull(ApiError):
    def __init__(self, waiting: int, retry_after: int = 1):
        super().__init__(429, f"the server is busy ({waiting} requests already waiting); retry after "
                         f"{retry_after} s or raise --max-queue", code="rate_limit_exceeded", kind="rate_limit_error",
                         headers={"Retry-After": str(retry_after)})


@dataclass
class Job:
    adapter: str | None  # peft adapter name; None: the base model (adapters off)
    messages: list[dict]
    images: list[Any]
    settings: GenerationSettings
    stop: tuple[str, ...]
    n: int
    emit: Callable[[tuple], None]
    prompt_tokens: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)

    def batch_key(self) -> tuple:
        # sampling draws from one RNG for the whole batch; alone, a seed gives the same answer every time
        return (self.adapter,) if self.settings.temperature == 0 else (self.adapter, id(self))


class QueuedEngine:
    """A bounded wait queue and one worker thread that takes compatible jobs, up to `max_concurrency`
    rows, into each batch; subclasses generate a batch (`_generate`)."""

    def __init__(self, name: str, *, max_concurrency: int, max_queue: int):
        self.max_concurrency, self.max_queue = max_concurrency, max_queue
        self._waiting: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._running = 0  # jobs in the batch being generated
        self.stats = {"batches": 0, "rows": 0, "cancelled_rows": 0}  # for /health and tests
        self._worker = threading.Thread(target=self._run, name=f"vlmdpo-serve-{name}", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> None:
        with self._cv:
            # the batch being generated plus the waiting jobs: beyond max_concurrency + max_queue, refuse
            if self._running + len(self._waiting) >= self.max_concurrency + self.max_queue:
                raise QueueFull(len(self._waiting))
            self._waiting.append(job)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    # ------------------------------------------------------------------------------------ worker
    def _next_batch(self) -> list[Job] | None:
        with self._cv:
            self._running = 0  # the previous batch is done
            while not self._waiting and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            head = self._waiting.popleft()
            batch, rows = [head], head.n
            for job in list(self._waiting):
                if rows + job.n > self.max_concurrency:
                    break
                if job.batch_key() == head.batch_key():
                    self._waiting.remove(job)
                    batch.append(job)
                    rows += job.n
            self._running = len(batch)
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if not job.cancelled.is_set()]
            try:
                if live:
                    self._generate(live)
            except Exception as exc:  # noqa: BLE001 - one failed batch must not stop the server
                for job in live:
                    job.emit(("error", f"generation failed: {type(exc).__name__}: {exc}"))
            for job in batch:
                job.emit(("end",))

    def _generate(self, jobs: list[Job]) -> None:
        raise NotImplementedError


class TransformersEngine(QueuedEngine):
    """Generates with transformers for the models that share `im` (a base alone, or a PeftModel whose
    named adapters are switched per batch)."""

    def __init__(self, im: InferenceModel, *, max_concurrency: int = 8, max_queue: int = 64):
        self.im = im
        self.stops = stop_token_ids(im.model, im.tokenizer)
        self.processor_lock = threading.Lock()  # fast tokenizers refuse concurrent use ("Already borrowed")
        super().__init__(im.name, max_concurrency=max_concurrency, max_queue=max_queue)

    @property
    def context_length(self) -> int | None:
        config = self.im.base_model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return getattr(text, "max_position_embeddings", None)

    def count_prompt_tokens(self, messages: list[dict], images: list[Any]) -> int:
        """Tokens of the templated prompt (image tokens included); raises ValueError for input the
        processor refuses."""
        with self.processor_lock:
            return int(prepare_batch(self.im, [(messages, images)])["input_ids"].shape[1])

    def _adapter_context(self, adapter: str | None):
        from peft import PeftModel

        model = self.im.model
        if not isinstance(model, PeftModel):  # a plain or merged model: nothing to switch
            return contextlib.nullcontext()
        if adapter is None:
            return model.disable_adapter()
        model.set_adapter(adapter)
        return contextlib.nullcontext()

    def _generate(self, jobs: list[Job]) -> None:
        rows, owners = [], []
        for job in jobs:
            for choice in range(job.n):
                def on_text(text: str, job=job, choice=choice) -> None:
                    job.emit(("text", choice, text))

                rows.append(Row(job.settings.max_new_tokens, job.stop, on_text, job.cancelled.is_set))
                owners.append((job, choice))
        with self.processor_lock:
            inputs = prepare_batch(self.im, [(job.messages, job.images) for job in jobs for _ in range(job.n)])
        settings = jobs[0].settings
        longest = max(job.settings.max_new_tokens for job in jobs)
        settings = GenerationSettings(max_new_tokens=longest, temperature=settings.temperature,
                                      top_p=settings.top_p, seed=settings.seed)
        tracker = RowTracker(self.im.tokenizer, rows, self.stops)
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        with self._adapter_context(jobs[0].adapter):
            generate_rows(self.im, inputs, settings, streamer=tracker, stopping_criteria=tracker)
        self.stats["cancelled_rows"] += sum(row.finish_reason == "cancelled" for row in rows)
        for row, (job, choice) in zip(rows, owners):
            if row.finish_reason != "cancelled":
                job.emit(("done", choice, row.finish_reason, len(row.ids)))

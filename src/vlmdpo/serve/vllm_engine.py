"""--engine vllm: the same routes, queue and batching, with vLLM generating (GPU, `pip install vllm`).

vLLM loads model folders itself: a merged export (`vlmdpo export`) or a base folder / hub id, with
LoRA adapter folders over it served as vLLM LoRA requests. In-memory models (`tiny:`, `builtin:`)
and training checkpoints have no folder vLLM can read: export them first. A batch's text arrives
when vLLM finishes it (one "text" event per choice).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmdpo.serve.engine import Job, QueuedEngine
from vlmdpo.serve.registry import ServeError, Served, adapter_base

EXPORT_FIX = "export it first (vlmdpo export --model DIR -o OUT) and serve OUT, or use --engine transformers"


def require_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ServeError("--engine vllm needs the vllm package, which is not installed here",
                         "pip install vllm (Linux with an NVIDIA GPU), or use --engine transformers") from None
    import torch

    if not torch.cuda.is_available():
        raise ServeError("--engine vllm needs a CUDA GPU and none is visible", "run on a GPU machine, or use "
                         "--engine transformers (CPU or GPU)")
    return vllm


def _folder_for_vllm(source: str) -> str:
    from vlmdpo.inference.names import is_named

    if is_named(source):
        raise ServeError(f"--model {source}: built in memory, so vLLM cannot load it", EXPORT_FIX)
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise ServeError(f"--model {source}: not a model folder vLLM can load (no config.json)", EXPORT_FIX)
    return str(path) if path.exists() else source  # else a hub id


class VllmEngine(QueuedEngine):
    def __init__(self, vllm: Any, base: str, adapters: dict[str, str], *, max_concurrency: int, max_queue: int):
        from transformers import AutoConfig, AutoTokenizer

        self.vllm = vllm
        self.llm = vllm.LLM(model=base, enable_lora=bool(adapters), max_loras=max(1, len(adapters)),
                            max_num_seqs=max_concurrency, limit_mm_per_prompt={"image": 8})
        self.loras = {name: vllm.lora.request.LoRARequest(name, i + 1, path)
                      for i, (name, path) in enumerate(adapters.items())}
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        config = AutoConfig.from_pretrained(base)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.context_length = getattr(text, "max_position_embeddings", None)
        super().__init__(base, max_concurrency=max_concurrency, max_queue=max_queue)

    def count_prompt_tokens(self, messages: list[dict], images: list[Any]) -> int:
        """Text tokens only (vLLM expands the image tokens itself and refuses a prompt too long)."""
        from vlmdpo.inference.generate import as_text_messages

        text = self.tokenizer.apply_chat_template(as_text_messages(messages), add_generation_prompt=True,
                                                  tokenize=False)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def _openai_messages(job: Job) -> list[dict]:
        images = iter(job.images)
        out = []
        for m in job.messages:
            parts = [{"type": "image_pil", "image_pil": next(images)} if p["type"] == "image" else p
                     for p in m["content"]]
            out.append({"role": m["role"], "content": parts})
        return out

    def _generate(self, jobs: list[Job]) -> None:
        params = [self.vllm.SamplingParams(n=job.n, temperature=job.settings.temperature, top_p=job.settings.top_p,
                                           max_tokens=job.settings.max_new_tokens, seed=job.settings.seed,
                                           stop=list(job.stop) or None) for job in jobs]
        lora = self.loras.get(jobs[0].adapter) if jobs[0].adapter else None
        results = self.llm.chat([self._openai_messages(job) for job in jobs], sampling_params=params,
                                lora_request=lora, use_tqdm=False)
        for job, result in zip(jobs, results):
            for choice, out in enumerate(result.outputs):
                job.emit(("text", choice, out.text.strip()))
                job.emit(("done", choice, out.finish_reason or "stop", len(out.token_ids)))


def load_vllm_models(pairs: list[tuple[str, str]], options: Any) -> dict[str, Served]:
    """One vLLM engine per base; adapters over it become LoRA requests; plain entries serve the base."""
    bases = {name: adapter_base(source) for name, source in pairs}
    folders = {name: _folder_for_vllm(bases[name] or source) for name, source in pairs}
    vllm = require_vllm()
    groups: dict[str, dict[str, str]] = {}
    for name, source in pairs:
        adapters = groups.setdefault(folders[name], {})
        if bases[name] is not None:
            adapters[name] = str(Path(source).expanduser())
    engines = {base: VllmEngine(vllm, base, adapters, max_concurrency=options.max_concurrency,
                                max_queue=options.max_queue) for base, adapters in groups.items()}
    return {name: Served(name, engines[folders[name]], name if bases[name] is not None else None, source,
                         options.max_images) for name, source in pairs}

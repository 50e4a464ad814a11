"""What the Lab asks of its worker processes: both answers streamed from its `vlmdpo serve` worker, and
their implicit rewards from `vlmdpo judge --by implicit` (each in its own process, never the studio's)."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from vlmdpo.studio import processes
from vlmdpo.studio.home import StudioHome


@dataclass(frozen=True)
class LabRequest:
    base: str
    tuned: str
    images: list[Path]
    prompt: str
    settings: dict[str, Any]  # max_tokens, temperature, top_p, seed: the same for both sides

    @property
    def models(self) -> list[tuple[str, str]]:
        return [("base", self.base), ("tuned", self.tuned)]

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image"} for _ in self.images]
                 + [{"type": "text", "text": self.prompt}]}]


async def _stream_side(client: Any, url: str, payload: dict, side: str, queue: asyncio.Queue) -> None:
    import httpx

    try:
        async with client.stream("POST", url, json=payload) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode("utf-8", "replace")
                try:
                    text = json.loads(text)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    pass
                await queue.put({"side": side, "error": f"the {side} model refused: {text}"})
                return
            async for line in resp.aiter_lines():
                data = line.removeprefix("data: ")
                if not line.startswith("data: ") or data == "[DONE]":
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    await queue.put({"side": side, "error": chunk["error"].get("message", str(chunk["error"]))})
                    return
                for choice in chunk.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        await queue.put({"side": side, "text": choice["delta"]["content"]})
                    if choice.get("finish_reason"):
                        await queue.put({"side": side, "finish": choice["finish_reason"]})
    except httpx.HTTPError as exc:
        await queue.put({"side": side, "error": f"the lab worker stopped answering ({type(exc).__name__}); "
                         "generate again to restart it"})
    finally:
        await queue.put({"side": side, "end": True})


async def stream_pair(port: int, req: LabRequest) -> AsyncIterator[bytes]:
    """Both answers as one server-sent event stream: {"side", "text" | "finish" | "error" | "end"}, then done."""
    import httpx

    from vlmdpo.engine.endpoint import openai_messages

    messages = await asyncio.to_thread(openai_messages, req.messages(), [str(p) for p in req.images])
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    queue: asyncio.Queue = asyncio.Queue()
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0)) as client:
        tasks = [asyncio.create_task(_stream_side(client, url, {"model": name, "messages": messages, "stream": True,
                                                                **req.settings}, side, queue))
                 for side, name in (("left", "base"), ("right", "tuned"))]
        try:
            ended = 0
            while ended < len(tasks):
                event = await queue.get()
                ended += bool(event.get("end"))
                yield f"data: {json.dumps(event)}\n\n".encode()
            yield b'data: {"done": true}\n\n'
        finally:  # the page left: the worker's generations stop with their streams
            for task in tasks:
                task.cancel()


def implicit_rewards(home: StudioHome, req: LabRequest, answers: list[str], beta: float | None) -> dict:
    """beta * (log p_tuned - log p_base) per answer, by `vlmdpo judge --by implicit` in its own process."""
    if beta is None:  # the beta the tuned run trained with (its saved config), else DPO's usual 0.1
        from vlmdpo.inference.load import read_train_config

        beta = float(read_train_config(Path(req.tuned)).get("beta") or 0.1)
    with tempfile.TemporaryDirectory(dir=home.root / "logs", prefix="lab-reward-") as tmp:
        cands, scored, log = Path(tmp, "candidates.jsonl"), Path(tmp, "scored.jsonl"), Path(tmp, "judge.log")
        row = {"id": "lab", "prompt": req.messages(), "images": [str(p) for p in req.images], "candidates": answers}
        cands.write_text(json.dumps(row) + "\n", encoding="utf-8")
        with open(log, "wb") as fh:
            done = subprocess.run([sys.executable, "-m", "vlmdpo", "judge", str(cands), "--by", "implicit", "--tuned",
                                   req.tuned, "--base", req.base, "--beta", str(beta), "-o", str(scored)],
                                  stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=900)
        if done.returncode != 0:
            raise processes.failure("`vlmdpo judge --by implicit` failed", log, "check that the tuned model was "
                                  "trained from this base", field="tuned")
        result = json.loads(scored.read_text(encoding="utf-8").splitlines()[0])
    return {"scores": result["scores"], "beta": beta, "tuned_logps": result["judge"].get("tuned_logps"),
            "base_logps": result["judge"].get("base_logps"), "note": result["judge"].get("note")}

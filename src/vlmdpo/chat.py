"""`vlmdpo chat`: talk to a model (base, LoRA adapter or merged), streaming tokens as they come.

One-shot with --prompt (or a prompt piped on stdin); otherwise an interactive session that keeps
the conversation, with `/image PATH` to attach an image to the next message, `/reset` and `/quit`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from vlmdpo.errors import FixableError
from vlmdpo.inference import (GenerationSettings, InferenceModel, generate, load_for_inference, read_train_config,
                              user_message)

HELP = "commands: /image PATH (attach to your next message), /reset (forget the conversation), /quit"


class ChatError(FixableError):
    """Bad chat input (an image that cannot be used, a prompt missing); the message says how to fix it."""


def load_user_image(value: str, *, allow_remote: bool = False, max_pixels: int | None = None,
                    min_pixels: int | None = None, base_dir: Path | None = None):
    """Resolve, check and decode one --image / `/image` value, raising ChatError with a plain message."""
    from vlmdpo.data.images import ImageLoadError, ImageSpecError, check_image, load_image, resolve_image

    try:
        ref = resolve_image(value, base_dir=base_dir or Path.cwd(), image_root=None, allow_remote=allow_remote)
    except ImageSpecError as exc:
        raise ChatError(f"image {value!r}: {exc}") from None
    problem = check_image(ref, allow_remote=allow_remote)
    if problem:
        raise ChatError(f"image {value!r}: {problem}")
    try:
        return load_image(ref, max_pixels=max_pixels, min_pixels=min_pixels, allow_remote=allow_remote)
    except ImageLoadError as exc:
        raise ChatError(f"image {value!r}: {exc}") from None


@dataclass
class ChatSession:
    """The conversation so far; images are kept in placeholder order across turns."""

    model: InferenceModel
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    system: str | None = None
    messages: list[dict] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)
    pending: list[Any] = field(default_factory=list)  # attached, not yet sent

    def attach(self, image: Any) -> None:
        if not self.model.is_vlm:
            raise ChatError(f"{self.model.name} is a text-only model; it cannot take images")
        self.pending.append(image)

    def reset(self) -> None:
        self.messages.clear()
        self.images.clear()
        self.pending.clear()

    def ask(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        turn = user_message(text, len(self.pending))
        head = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] if self.system else []
        conversation = head + self.messages + [turn]
        images = self.images + self.pending
        reply = generate(self.model, conversation, images, self.settings, on_text)
        # only a completed turn enters the history, so a failed generation can be retried
        self.messages += [turn, {"role": "assistant", "content": [{"type": "text", "text": reply}]}]
        self.images, self.pending = images, []
        return reply


def _stream_to(out: TextIO) -> Callable[[str], None]:
    def write(text: str) -> None:
        out.write(text)
        out.flush()

    return write


def describe(im: InferenceModel) -> str:
    if im.kind == "adapter":
        return f"{im.name} (LoRA adapter on {im.base_name})"
    return im.name


def interactive(session: ChatSession, *, stdin: TextIO, stdout: TextIO, load_image: Callable[[str], Any]) -> None:
    stdout.write(f"vlmdpo chat with {describe(session.model)}\n{HELP}\n")
    while True:
        stdout.write("\nyou> ")
        stdout.flush()
        line = stdin.readline()
        if not line:  # EOF (Ctrl-D)
            stdout.write("\n")
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            session.reset()
            stdout.write("(conversation cleared)\n")
            continue
        if line == "/help":
            stdout.write(HELP + "\n")
            continue
        if line.startswith("/image"):
            value = line[len("/image"):].strip()
            if not value:
                stdout.write("usage: /image PATH\n")
                continue
            try:
                session.attach(load_image(value))
            except ChatError as exc:
                stdout.write(f"error: {exc}\n")
                continue
            stdout.write(f"(image attached to your next message: {value})\n")
            continue
        if line.startswith("/"):
            stdout.write(f"unknown command {line.split()[0]}; {HELP}\n")
            continue
        stdout.write("assistant> ")
        session.ask(line, _stream_to(stdout))
        stdout.write("\n")


def run_chat(
    model: str,
    *,
    images: list[str] | tuple[str, ...] = (),
    prompt: str | None = None,
    base: str | None = None,
    system: str | None = None,
    settings: GenerationSettings | None = None,
    allow_remote_images: bool = False,
    dtype: str = "auto",
    device: str | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    model_loader: Callable[..., InferenceModel] = load_for_inference,
) -> str | None:
    """One-shot when a prompt is given or stdin is not a terminal (returns the reply), else interactive."""
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    # images are resized as in training; they are checked before the (slow) model load
    train_config = read_train_config(Path(model)) if Path(model).is_dir() else {}
    pixels = {"max_pixels": train_config.get("image_max_pixels"), "min_pixels": train_config.get("image_min_pixels")}

    def load(value: str):
        return load_user_image(value, allow_remote=allow_remote_images, **pixels)

    first_images = [load(value) for value in images]
    im = model_loader(model, base=base, dtype=dtype, device=device)
    session = ChatSession(im, settings or GenerationSettings(), system)
    for image in first_images:
        session.attach(image)
    if prompt is None and not stdin.isatty():
        prompt = stdin.read().strip()
        if not prompt:
            raise ChatError("no prompt: stdin was empty; pass --prompt TEXT or pipe a question in")
    if prompt is not None:
        reply = session.ask(prompt, _stream_to(stdout))
        stdout.write("\n")
        return reply
    interactive(session, stdin=stdin, stdout=stdout, load_image=load)
    return None

"""`vlmdpo chat`: talk to a model (base, LoRA adapter or merged), streaming tokens as they come.

One-shot with --prompt (or a prompt piped on stdin); otherwise an interactive session that keeps
the conversation, with `/image PATH` / `/video PATH` to attach an image or a video to the next
message, `/reset` and `/quit`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from vlmdpo.errors import FixableError
from vlmdpo.inference import (GenerationSettings, InferenceModel, generate, load_for_inference, read_train_config,
                              user_message)
from vlmdpo.inference.generate import takes_video

HELP = ("commands: /image PATH, /video PATH (attach to your next message), /reset (forget the conversation), "
        "/quit")


class ChatError(FixableError):
    """Bad chat input (an image that cannot be used, a prompt missing); the message says how to fix it."""


def load_user_video(value: str, *, train_config: dict | None = None, base_dir: Path | None = None):
    """Check and decode one --video / `/video` path with the run's video limits, raising ChatError."""
    from vlmdpo.data.videos import VideoLimits, VideoLoadError, load_video
    from vlmdpo.types import ImageRef

    cfg = train_config or {}
    limits = VideoLimits(**{k: cfg[f"video_{k}"] for k in ("fps", "max_frames", "max_pixels") if f"video_{k}" in cfg})
    path = Path(value).expanduser()
    ref = ImageRef(path=str(path if path.is_absolute() else (base_dir or Path.cwd()) / path), origin=value)
    try:
        return load_video(ref, limits)
    except VideoLoadError as exc:
        raise ChatError(str(exc), "give an mp4 / webm / mkv video file") from None


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
    videos: list[Any] = field(default_factory=list)
    pending_videos: list[Any] = field(default_factory=list)

    def attach(self, image: Any) -> None:
        if not self.model.is_vlm:
            raise ChatError(f"{self.model.name} is a text-only model; it cannot take images")
        self.pending.append(image)

    def attach_video(self, video: Any) -> None:
        if not takes_video(self.model.model):
            raise ChatError(f"{self.model.name} cannot take video",
                            "use a Qwen2-VL/2.5-VL/3-VL model or drop the video")
        self.pending_videos.append(video)

    def reset(self) -> None:
        for kept in (self.messages, self.images, self.pending, self.videos, self.pending_videos):
            kept.clear()

    def ask(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        turn = user_message(text, len(self.pending), len(self.pending_videos))
        head = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] if self.system else []
        conversation = head + self.messages + [turn]
        images, videos = self.images + self.pending, self.videos + self.pending_videos
        reply = generate(self.model, conversation, images, self.settings, on_text, videos=videos)
        # only a completed turn enters the history, so a failed generation can be retried
        self.messages += [turn, {"role": "assistant", "content": [{"type": "text", "text": reply}]}]
        self.images, self.pending, self.videos, self.pending_videos = images, [], videos, []
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


def interactive(session: ChatSession, *, stdin: TextIO, stdout: TextIO, load_image: Callable[[str], Any],
                load_video: Callable[[str], Any] = load_user_video) -> None:
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
        if line.startswith(("/image", "/video")):
            kind, _, value = line[1:].partition(" ")
            value = value.strip()
            if not value or kind not in ("image", "video"):
                stdout.write(f"usage: /{kind} PATH\n")
                continue
            try:
                if kind == "image":
                    session.attach(load_image(value))
                else:
                    session.attach_video(load_video(value))
            except ChatError as exc:
                stdout.write(f"error: {exc}\n")
                continue
            stdout.write(f"({kind} attached to your next message: {value})\n")
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
    videos: list[str] | tuple[str, ...] = (),
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

    def load_video(value: str):
        return load_user_video(value, train_config=train_config)

    first_images = [load(value) for value in images]
    first_videos = [load_video(value) for value in videos]
    im = model_loader(model, base=base, dtype=dtype, device=device)
    session = ChatSession(im, settings or GenerationSettings(), system)
    for image in first_images:
        session.attach(image)
    for video in first_videos:
        session.attach_video(video)
    if prompt is None and not stdin.isatty():
        prompt = stdin.read().strip()
        if not prompt:
            raise ChatError("no prompt: stdin was empty; pass --prompt TEXT or pipe a question in")
    if prompt is not None:
        reply = session.ask(prompt, _stream_to(stdout))
        stdout.write("\n")
        return reply
    interactive(session, stdin=stdin, stdout=stdout, load_image=load, load_video=load_video)
    return None

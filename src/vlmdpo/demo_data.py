"""A seeded synthetic preference dataset for the offline quickstart.

Each image shows simple shapes on a 3x3 grid; each row asks one question about it (colour,
count, position or shape) with a correct chosen answer and a hallucinated rejected answer
that differs in exactly the asked attribute. Because every wrong value is drawn uniformly,
no text-only shortcut separates chosen from rejected: a model can only prefer the chosen
answer by looking at the image, which is what the quickstart sets out to show.

Rows are written in TRL conversational format (see FORMATS.md) with the ground truth in extra
columns (`question_kind`, `truth`, `wrong`, `scene`), which readers keep in `record.meta`.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw

DEMO_VERSION = 2

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Grid cell (col, row) for each position answer: the middle of an edge, so the answer is unambiguous.
POSITIONS: dict[str, tuple[int, int]] = {"left": (0, 1), "right": (2, 1), "top": (1, 0), "bottom": (1, 2)}
COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
KINDS: tuple[str, ...] = ("color", "count", "position", "shape")
BACKGROUND = (245, 245, 245)
GRID = 3
SPLITS: tuple[str, ...] = ("train", "val", "test")
CONTRASTS: tuple[str, ...] = ("answer", "image")
# The quickstart's share of image-contrast training pairs: half of them make the vision side learn
# from pairs only the image can decide; the other half name a wrong value, as the test pairs do.
QUICKSTART_IMAGE_CONTRAST = 0.5

_QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": ("What color is the {shape}?", "Which color does the {shape} have?"),
    "count": ("How many {shape}s are in the image?", "How many {shape}s can you see?"),
    "position": ("Where is the {shape} in the image?", "Where is the {shape} located?"),
    "shape": ("What shape is in the image?", "Which shape do you see?"),
}
_POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    cell: tuple[int, int]  # (col, row) on the grid
    center: tuple[int, int]  # pixel (x, y)
    radius: int  # half the side of the bounding box


@dataclass(frozen=True)
class DemoItem:
    kind: str
    question: str
    chosen: str
    rejected: str
    truth: str  # the correct value of the asked attribute ("red", "3", "left", "circle")
    wrong: str  # the value the rejected answer hallucinates (or the rejected image shows)
    scene: tuple[Shape, ...]
    # image-contrast pairs: the rejected side is the *same* answer on this scene, where it is wrong
    rejected_scene: tuple[Shape, ...] | None = None


# ------------------------------------------------------------------------------------------
# Answers: the phrasing is the one place that says what a value looks like in text, so the
# generator and the grounded-answer scorer cannot drift apart.
# ------------------------------------------------------------------------------------------
def answer_text(kind: str, value: str, shape: str) -> str:
    if kind == "color":
        return f"The {shape} is {value}."
    if kind == "count":
        n = int(value)
        return f"There is {COUNT_WORDS[n]} {shape}." if n == 1 else f"There are {COUNT_WORDS[n]} {shape}s."
    if kind == "position":
        return f"The {shape} is {_POSITION_PHRASES[value]}."
    if kind == "shape":
        return f"It is a {value}."
    raise ValueError(f"unknown question kind {kind!r}; choose from {', '.join(KINDS)}")


def values_for(kind: str) -> tuple[str, ...]:
    """All values an answer to this kind of question can name."""
    return {
        "color": tuple(COLORS),
        "count": tuple(str(n) for n in COUNT_WORDS),
        "position": tuple(POSITIONS),
        "shape": SHAPES,
    }[kind]


_COUNT_PATTERNS = {str(n): rf"\b({n}|{w})\b" for n, w in COUNT_WORDS.items()}
# Words that name a position; "upper"/"lower" count as top/bottom so a correct paraphrase scores.
_POSITION_PATTERNS = {
    "left": r"\bleft\b", "right": r"\bright\b", "top": r"\b(top|upper|above)\b", "bottom": r"\b(bottom|lower|below)\b",
}


def mentioned_values(kind: str, text: str) -> set[str]:
    """The values of `kind` that a free-form answer names (case-insensitive, whole words).

    "a circle" does not count as the number one: only digits and number words do.
    """
    low = text.lower()
    if kind == "count":
        return {v for v, pat in _COUNT_PATTERNS.items() if re.search(pat, low)}
    if kind == "position":
        return {v for v, pat in _POSITION_PATTERNS.items() if re.search(pat, low)}
    if kind == "shape":
        # plurals count too ("two circles" names circle)
        return {v for v in SHAPES if re.search(rf"\b{v}s?\b", low)}
    if kind == "color":
        return {v for v in COLORS if re.search(rf"\b{v}\b", low)}
    raise ValueError(f"unknown question kind {kind!r}; choose from {', '.join(KINDS)}")


def is_grounded(kind: str, truth: str, text: str) -> bool:
    """True when the answer names the true value and no other value of the same kind."""
    return mentioned_values(kind, text) == {truth}


# ------------------------------------------------------------------------------------------
# Scenes and drawing
# ------------------------------------------------------------------------------------------
# "canonical": each kind of scene has fixed places (colour and shape questions: the centre;
# counts: one pattern per number; positions: the middle of an edge) with a pixel or two of
# jitter. A vision tower that starts from scratch learns these from a few hundred preference
# pairs on a CPU; "random" scatters shapes over the grid with varied sizes, which needs far
# more data before it generalizes (measured: no held-out gain after ~500 pairs).
LAYOUTS: tuple[str, ...] = ("canonical", "random")
COUNT_PATTERNS: dict[int, tuple[tuple[int, int], ...]] = {
    1: ((1, 1),), 2: ((0, 1), (2, 1)), 3: ((0, 1), (1, 1), (2, 1)), 4: ((0, 0), (2, 0), (0, 2), (2, 2)),
}
CENTER = (1, 1)


def _place(rng: random.Random, cell: tuple[int, int], image_size: int, layout: str) -> tuple[tuple[int, int], int]:
    cell_px = image_size / GRID
    if layout == "canonical":
        radius = int(cell_px * 0.36)
        slack = max(1, int(cell_px * 0.04))
    else:
        radius = int(cell_px * rng.uniform(0.30, 0.40))
        slack = max(0, int(cell_px / 2 - radius - 1))
    cx = int(cell[0] * cell_px + cell_px / 2) + rng.randint(-slack, slack)
    cy = int(cell[1] * cell_px + cell_px / 2) + rng.randint(-slack, slack)
    return (cx, cy), radius


def _cells(rng: random.Random, kind: str, value: str, layout: str) -> list[tuple[int, int]]:
    """Where the shapes go for a scene whose asked attribute has `value`."""
    all_cells = [(c, r) for r in range(GRID) for c in range(GRID)]
    if kind == "count":
        n = int(value)
        return list(COUNT_PATTERNS[n]) if layout == "canonical" else rng.sample(all_cells, n)
    if kind == "position":
        return [POSITIONS[value]]
    return [CENTER] if layout == "canonical" else [rng.choice(all_cells)]


def _shapes(rng: random.Random, cells, shape: str, color: str, image_size: int, layout: str) -> tuple[Shape, ...]:
    out = []
    for cell in cells:
        center, radius = _place(rng, cell, image_size, layout)
        out.append(Shape(shape, color, tuple(cell), center, radius))
    return tuple(out)


def _scene(rng: random.Random, kind: str, image_size: int, layout: str) -> tuple[tuple[Shape, ...], str, str]:
    """Objects for one question; returns (scene, truth, shape the question is about)."""
    shape = rng.choice(SHAPES)
    color = rng.choice(tuple(COLORS))
    truth = {"color": color, "shape": shape}.get(kind) or rng.choice(values_for(kind))
    return _shapes(rng, _cells(rng, kind, truth, layout), shape, color, image_size, layout), truth, shape


def draw_scene(scene: Sequence[Shape], image_size: int) -> Image.Image:
    img = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for s in scene:
        x, y, r = s.center[0], s.center[1], s.radius
        fill = COLORS[s.color]
        if s.shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif s.shape == "square":
            draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
        elif s.shape == "triangle":  # apex up; its centroid-ish point (x, y) is inside
            draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
        else:
            raise ValueError(f"unknown shape {s.shape!r}")
    return img


def _counterfactual(rng: random.Random, kind: str, scene: tuple[Shape, ...], wrong: str,
                    image_size: int, layout: str) -> tuple[Shape, ...]:
    """The same scene changed in the asked attribute only, so that it shows `wrong`."""
    if kind == "color":
        return tuple(replace(s, color=wrong) for s in scene)
    if kind == "shape":
        return tuple(replace(s, shape=wrong) for s in scene)
    if kind == "count" and layout == "random":
        n = int(wrong)
        if n <= len(scene):  # fewer shapes: drop some, keep the rest where they were
            return tuple(scene[:n])
        taken = {s.cell for s in scene}
        free = [(c, r) for r in range(GRID) for c in range(GRID) if (c, r) not in taken]
        return tuple(scene) + _shapes(rng, rng.sample(free, n - len(scene)), scene[0].shape, scene[0].color,
                                      image_size, layout)
    return _shapes(rng, _cells(rng, kind, wrong, layout), scene[0].shape, scene[0].color, image_size, layout)


def make_item(rng: random.Random, kind: str, image_size: int = 96, contrast: str = "answer",
              layout: str = "canonical") -> DemoItem:
    """One question with its scene; pure given the RNG state.

    contrast="answer": the rejected answer names a wrong value (a hallucination).
    contrast="image": chosen and rejected say the same correct answer, but the rejected side
    shows a counterfactual image on which that answer is wrong; such a pair can only be won
    by looking at the image (conditional preference, as in mDPO).
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose from {', '.join(CONTRASTS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    scene, truth, shape = _scene(rng, kind, image_size, layout)
    wrong = rng.choice([v for v in values_for(kind) if v != truth])
    question = rng.choice(_QUESTIONS[kind]).format(shape=shape)
    chosen = answer_text(kind, truth, shape)
    if contrast == "image":
        return DemoItem(kind=kind, question=question, truth=truth, wrong=wrong, scene=scene, chosen=chosen,
                        rejected=chosen, rejected_scene=_counterfactual(rng, kind, scene, wrong, image_size, layout))
    return DemoItem(kind=kind, question=question, truth=truth, wrong=wrong, scene=scene, chosen=chosen,
                    rejected=answer_text(kind, wrong, shape))


def make_split(split: str, n: int, *, seed: int = 0, image_size: int = 96, kinds: Sequence[str] = KINDS,
               image_contrast: float = 0.0, layout: str = "canonical") -> list[DemoItem]:
    """`n` items; kinds rotate so every kind gets an equal share. Same arguments -> same items.

    `image_contrast` is the share of image-contrast pairs (the rest name a wrong value).
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown question kind {k!r}; choose from {', '.join(KINDS)}")
    if not 0.0 <= image_contrast <= 1.0:
        raise ValueError(f"image_contrast must be between 0 and 1, got {image_contrast}")
    rng = random.Random(f"vlmdpo-demo-v{DEMO_VERSION}-{seed}-{split}")  # str seeds are stable across runs
    items = []
    for i in range(n):
        # drawn only when asked for, so answer-only splits stay identical to earlier versions
        contrast = "image" if image_contrast and rng.random() < image_contrast else "answer"
        items.append(make_item(rng, kinds[i % len(kinds)], image_size, contrast, layout))
    return items


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
def item_row(item: DemoItem, row_id: str, image_rel: str, rejected_image_rel: str | None = None) -> dict[str, Any]:
    """The TRL-conversational row for one item, with the truth in extra columns."""
    row: dict[str, Any] = {
        "id": row_id,
        "images": [image_rel],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": item.question}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": item.chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": item.rejected}]}],
    }
    if item.rejected_scene is not None:
        if rejected_image_rel is None:
            raise ValueError(f"{row_id}: an image-contrast item needs the path of its rejected image")
        row["rejected_images"] = [rejected_image_rel]
    row.update({
        "question_kind": item.kind,
        "truth": item.truth,
        "wrong": item.wrong,
        "contrast": "image" if item.rejected_scene is not None else "answer",
        "scene": [asdict(s) for s in item.scene],
    })
    if item.rejected_scene is not None:
        row["rejected_scene"] = [asdict(s) for s in item.rejected_scene]
    return row


@dataclass(frozen=True)
class DemoDataset:
    root: Path
    files: dict[str, Path]  # split -> jsonl path
    counts: dict[str, int]
    reused: bool = False


def make_demo_data(out_dir: str | Path, *, n_train: int = 800, n_val: int = 64, n_test: int = 96, seed: int = 0,
                   image_size: int = 96, kinds: Sequence[str] = KINDS,
                   train_image_contrast: float = QUICKSTART_IMAGE_CONTRAST, layout: str = "canonical", overwrite: bool = False, progress: bool = True) -> DemoDataset:
    """Write train/val/test JSONL (TRL format) and PNG images under `out_dir`.

    `train_image_contrast` makes that share of the *training* pairs image-contrast pairs (same
    answer, counterfactual rejected image); val and test always name a wrong value, which is
    what the quickstart measures.

    Rerunning with the same arguments reuses what is there; different arguments over an
    existing dataset need `overwrite=True`, so a user's edits are never replaced silently.
    """
    root = Path(out_dir)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"demo data: {split} size must be >= 0, got {n}")
    if not 0.0 <= train_image_contrast <= 1.0:  # checked before anything is written
        raise ValueError(f"demo data: train_image_contrast (--train-image-contrast) must be between 0 and 1, "
                         f"got {train_image_contrast}")
    if image_size < 3 * GRID * 4:
        raise ValueError(f"demo data: image_size {image_size} is too small; use at least {3 * GRID * 4}")
    manifest = {"version": DEMO_VERSION, "seed": seed, "image_size": image_size, "counts": counts, "kinds": list(kinds),
                "train_image_contrast": train_image_contrast, "layout": layout}
    files = {s: root / f"{s}.jsonl" for s in SPLITS}
    manifest_path = root / "demo_data.json"
    if manifest_path.exists() and not overwrite:
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old == manifest and all(f.exists() for f in files.values()):
            return DemoDataset(root, files, counts, reused=True)
        raise FileExistsError(
            f"{root} already holds a demo dataset made with other settings ({manifest_path}); "
            f"pass --overwrite (overwrite=True) to replace it, or choose another folder"
        )
    (root / "images").mkdir(parents=True, exist_ok=True)
    total = sum(counts.values())
    bar = _progress(total, progress)
    for split in SPLITS:
        items = make_split(split, counts[split], seed=seed, image_size=image_size, kinds=kinds,
                           image_contrast=train_image_contrast if split == "train" else 0.0, layout=layout)
        tmp = files[split].with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for i, item in enumerate(items):
                row_id = f"{split}-{i:05d}"
                rel = f"images/{row_id}.png"
                draw_scene(item.scene, image_size).save(root / rel, optimize=False)
                rej = None
                if item.rejected_scene is not None:
                    rej = f"images/{row_id}-rejected.png"
                    draw_scene(item.rejected_scene, image_size).save(root / rej, optimize=False)
                fh.write(json.dumps(item_row(item, row_id, rel, rej)) + "\n")
                bar.update(1)
        tmp.replace(files[split])
    bar.close()
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return DemoDataset(root, files, counts)


class _NoBar:
    def update(self, n: int = 1) -> None:  # noqa: D401 - tqdm-compatible no-op
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="demo data", unit="img", leave=False)

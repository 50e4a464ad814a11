"""A seeded synthetic preference dataset for the offline quickstart.

Each image shows simple shapes on a 3x3 grid; each row asks one question about it (colour,
count, position or shape) with a correct chosen answer and a hallucinated rejected answer
that differs in exactly the asked attribute. Because every wrong value is drawn uniformly,
no text-only shortcut separates chosen from rejected: a model can only prefer the chosen
answer by looking at the image, which is what the quickstart sets out to show.

Train and val share one set of question phrasings and picture styles; the test split is held
out in both (demo/phrasing.HELD_OUT_QUESTIONS, demo/scenes.HELD_OUT), so its score is about
grounding, not templates.

Rows are written in TRL conversational format (see FORMATS.md) with the ground truth in extra
columns (`question_kind`, `truth`, `wrong`, `scene`, `style`), which readers keep in `record.meta`.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from vlmdpo.demo.phrasing import (COLORS, COUNT_WORDS, HELD_OUT_QUESTIONS, KINDS, POOL_QUESTIONS,  # noqa: F401
                                  POSITIONS, SHAPES, TRAIN_QUESTIONS, answer_text, is_grounded, mentioned_values,
                                  values_for)
from vlmdpo.demo.scenes import (BACKGROUNDS, CENTER, COUNT_PATTERNS, GRID, HELD_OUT, LAYOUTS, POOL, TRAIN,  # noqa: F401
                                Shape, Style, StylePool, cells_for, counterfactual, draw_scene, draw_style,
                                place_shapes)

# v3: more colours, styles and phrasings, and a held-out test split. v4: a wider prompt pool. Cached
# data of another version is not reused.
DEMO_VERSION = 4
# The random streams are v3's: v4 changed the pool only, so train/val/test are v3's rows exactly and the
# numbers measured on them still hold.
STREAM_VERSION = 3
# pool: prompts for on-policy sampling (`vlmdpo iterate`, recipes/iterate_demo.yaml) from a stream of
# their own, in the training phrasings and styles and more, so rounds never sample the test split's.
SPLITS: tuple[str, ...] = ("train", "val", "test", "pool")
Look = tuple[dict[str, tuple[str, ...]], StylePool]  # (phrasings per kind, picture styles)
# The test split's look is held out; a split not named here (val) looks like train.
LOOKS: dict[str, Look] = {
    "train": (TRAIN_QUESTIONS, TRAIN),
    "test": (HELD_OUT_QUESTIONS, HELD_OUT),
    "pool": ({k: TRAIN_QUESTIONS[k] + POOL_QUESTIONS[k] for k in KINDS}, POOL),
}
CONTRASTS: tuple[str, ...] = ("answer", "image")
# The quickstart's share of image-contrast training pairs: half of them make the vision side learn
# from pairs only the image can decide; the other half name a wrong value, as the test pairs do.
QUICKSTART_IMAGE_CONTRAST = 0.5


def split_look(split: str) -> Look:
    """What a split's questions and pictures may look like (LOOKS; val asks as train does)."""
    return LOOKS.get(split, LOOKS["train"])


@dataclass(frozen=True)
class DemoItem:
    kind: str
    question: str
    chosen: str
    rejected: str
    truth: str  # the correct value of the asked attribute ("red", "3", "left", "circle")
    wrong: str  # the value the rejected answer hallucinates (or the rejected image shows)
    scene: tuple[Shape, ...]
    style: Style
    # image-contrast pairs: the rejected side is the *same* answer on this scene, where it is wrong
    rejected_scene: tuple[Shape, ...] | None = None


def make_item(rng: random.Random, kind: str, image_size: int | None = None, contrast: str = "answer",
              layout: str = "canonical", look: Look = LOOKS["train"]) -> DemoItem:
    """One question with its scene; pure given the RNG state.

    contrast="answer": the rejected answer names a wrong value (a hallucination).
    contrast="image": chosen and rejected say the same correct answer, but the rejected side
    shows a counterfactual image on which that answer is wrong; such a pair can only be won
    by looking at the image (conditional preference, as in mDPO).
    look: the phrasings and picture styles to draw from (`split_look`: the test split's are held out).
    `image_size` fixes the picture's side; None draws it from the style pool.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose from {', '.join(CONTRASTS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    questions, styles = look
    style = draw_style(rng, styles, image_size)
    shape = rng.choice(SHAPES)
    color = rng.choice(tuple(COLORS))
    truth = {"color": color, "shape": shape}.get(kind) or rng.choice(values_for(kind))
    scene = place_shapes(rng, cells_for(rng, kind, truth, layout), shape, color, style, layout)
    wrong = rng.choice([v for v in values_for(kind) if v != truth])
    question = rng.choice(questions[kind]).format(shape=shape)
    chosen = answer_text(kind, truth, shape)
    common = dict(kind=kind, question=question, truth=truth, wrong=wrong, scene=scene, style=style, chosen=chosen)
    if contrast == "image":
        return DemoItem(**common, rejected=chosen,
                        rejected_scene=counterfactual(rng, kind, scene, wrong, style, layout))
    return DemoItem(**common, rejected=answer_text(kind, wrong, shape))


def make_split(split: str, n: int, *, seed: int = 0, image_size: int | None = None, kinds: Sequence[str] = KINDS,
               image_contrast: float = 0.0, layout: str = "canonical") -> list[DemoItem]:
    """`n` items; kinds rotate so every kind gets an equal share. Same arguments -> same items.

    `image_contrast` is the share of image-contrast pairs (the rest name a wrong value). The test
    split uses the held-out phrasings and styles, the pool a wider set than training's (`split_look`);
    each split comes from its own random stream.
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown question kind {k!r}; choose from {', '.join(KINDS)}")
    if not 0.0 <= image_contrast <= 1.0:
        raise ValueError(f"image_contrast must be between 0 and 1, got {image_contrast}")
    rng = random.Random(f"vlmdpo-demo-v{STREAM_VERSION}-{seed}-{split}")  # str seeds are stable across runs
    items = []
    for i in range(n):
        contrast = "image" if image_contrast and rng.random() < image_contrast else "answer"
        items.append(make_item(rng, kinds[i % len(kinds)], image_size, contrast, layout, split_look(split)))
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
        "style": asdict(item.style),
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


def make_demo_data(out_dir: str | Path, *, n_train: int = 800, n_val: int = 64, n_test: int = 96, n_pool: int = 256,
                   seed: int = 0, image_size: int | None = None, kinds: Sequence[str] = KINDS,
                   train_image_contrast: float = QUICKSTART_IMAGE_CONTRAST, layout: str = "canonical",
                   overwrite: bool = False, progress: bool = True) -> DemoDataset:
    """Write train/val/test JSONL (TRL format) and PNG images under `out_dir`.

    `train_image_contrast` makes that share of the *training* pairs image-contrast pairs (same
    answer, counterfactual rejected image); val and test always name a wrong value, which is
    what the quickstart measures. `image_size` None varies the side per picture (the test split's
    size is one training never shows); a number fixes it for every split.

    Rerunning with the same arguments reuses what is there; different arguments over an
    existing dataset need `overwrite=True`, so a user's edits are never replaced silently. Data
    from another DEMO_VERSION is regenerated (a new generator must not reuse the old pictures).
    """
    root = Path(out_dir)
    counts = {"train": n_train, "val": n_val, "test": n_test, "pool": n_pool}
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"demo data: {split} size must be >= 0, got {n}")
    if not 0.0 <= train_image_contrast <= 1.0:  # checked before anything is written
        raise ValueError(f"demo data: train_image_contrast (--train-image-contrast) must be between 0 and 1, "
                         f"got {train_image_contrast}")
    if image_size is not None and image_size < 3 * GRID * 4:
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
        # another generator version wrote it: stale output of this function, not a user's dataset
        stale = isinstance(old, dict) and isinstance(old.get("version"), int) and old["version"] != DEMO_VERSION
        if not stale:
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
                draw_scene(item.scene, item.style).save(root / rel, optimize=False)
                rej = None
                if item.rejected_scene is not None:
                    rej = f"images/{row_id}-rejected.png"
                    draw_scene(item.rejected_scene, item.style).save(root / rej, optimize=False)
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

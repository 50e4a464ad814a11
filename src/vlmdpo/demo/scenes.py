"""The demo's pictures: shapes on a 3x3 grid, in a style (background, image size, shape size, nudge).

Layouts:
- "canonical": each kind of scene has fixed cells (colour and shape questions: the centre; counts:
  one pattern per number; positions: the middle of an edge). A vision tower that starts from
  scratch learns these from a few hundred preference pairs on a CPU.
- "random": shapes anywhere on the grid with varied sizes, which needs far more data before it
  generalizes (measured with the v2 data: no held-out gain after ~500 pairs).

Styles vary the rest of the picture. The test split draws its styles from `HELD_OUT` (backgrounds,
an image size, a shape size and diagonal nudges that training never shows), so the held-out score
measures whether the model reads shapes, not the pictures it was trained on. The on-policy prompt
pool draws from `POOL`: the training styles and more (none of the held-out ones).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Sequence

from PIL import Image, ImageDraw

from vlmdpo.demo.phrasing import COLORS, POSITIONS

GRID = 3
LAYOUTS: tuple[str, ...] = ("canonical", "random")
COUNT_PATTERNS: dict[int, tuple[tuple[int, int], ...]] = {
    1: ((1, 1),), 2: ((0, 1), (2, 1)), 3: ((0, 1), (1, 1), (2, 1)), 4: ((0, 0), (2, 0), (0, 2), (2, 2)),
}
CENTER = (1, 1)
# Light backgrounds, all far from every shape colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245), "grey": (212, 212, 212), "cream": (250, 240, 210), "sky": (218, 232, 250),
    "mint": (222, 243, 226), "lilac": (236, 226, 248), "peach": (252, 228, 214), "sand": (236, 228, 200),
}


@dataclass(frozen=True)
class StylePool:
    """What a split's pictures may look like; a scene draws one value of each."""
    backgrounds: tuple[str, ...]
    image_sizes: tuple[int, ...]
    scales: tuple[float, ...]  # shape radius as a share of a grid cell
    nudges: tuple[tuple[float, float], ...]  # whole-scene shift (dx, dy) as a share of a grid cell


# Radius + nudge stays under half a cell, so a shape never leaves its cell.
TRAIN = StylePool(backgrounds=("white", "grey", "cream", "sky"), image_sizes=(80, 96, 128),
                  scales=(0.28, 0.32, 0.38),
                  nudges=((0.0, 0.0), (0.1, 0.0), (-0.1, 0.0), (0.0, 0.1), (0.0, -0.1)))
POOL = StylePool(backgrounds=TRAIN.backgrounds + ("peach", "sand"), image_sizes=(72, 80, 88, 96, 104, 120, 128, 136),
                 scales=(0.26, 0.28, 0.30, 0.32, 0.34, 0.38),
                 nudges=TRAIN.nudges + ((0.05, 0.0), (-0.05, 0.0), (0.0, 0.05), (0.0, -0.05)))
HELD_OUT = StylePool(backgrounds=("mint", "lilac"), image_sizes=(112,), scales=(0.35,),
                     nudges=((0.08, 0.08), (-0.08, 0.08), (0.08, -0.08), (-0.08, -0.08)))


@dataclass(frozen=True)
class Style:
    background: str
    image_size: int
    scale: float
    nudge: tuple[float, float]


def draw_style(rng: random.Random, pool: StylePool, image_size: int | None = None) -> Style:
    """One style from `pool`; `image_size` fixes the side instead of drawing it."""
    return Style(background=rng.choice(pool.backgrounds),
                 image_size=image_size if image_size is not None else rng.choice(pool.image_sizes),
                 scale=rng.choice(pool.scales), nudge=rng.choice(pool.nudges))


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    cell: tuple[int, int]  # (col, row) on the grid
    center: tuple[int, int]  # pixel (x, y)
    radius: int  # half the side of the bounding box


def _place(rng: random.Random, cell: tuple[int, int], style: Style, layout: str) -> tuple[tuple[int, int], int]:
    cell_px = style.image_size / GRID
    if layout == "canonical":
        radius = int(cell_px * style.scale)
        slack = max(1, int(cell_px * 0.03))
        nx, ny = style.nudge
    else:
        radius = int(cell_px * rng.uniform(0.30, 0.40))
        slack = max(0, int(cell_px / 2 - radius - 1))
        nx = ny = 0.0
    cx = int(cell_px * (cell[0] + 0.5 + nx)) + rng.randint(-slack, slack)
    cy = int(cell_px * (cell[1] + 0.5 + ny)) + rng.randint(-slack, slack)
    return (cx, cy), radius


def cells_for(rng: random.Random, kind: str, value: str, layout: str) -> list[tuple[int, int]]:
    """Where the shapes go for a scene whose asked attribute has `value`."""
    all_cells = [(c, r) for r in range(GRID) for c in range(GRID)]
    if kind == "count":
        n = int(value)
        return list(COUNT_PATTERNS[n]) if layout == "canonical" else rng.sample(all_cells, n)
    if kind == "position":
        return [POSITIONS[value]]
    return [CENTER] if layout == "canonical" else [rng.choice(all_cells)]


def place_shapes(rng: random.Random, cells, shape: str, color: str, style: Style, layout: str) -> tuple[Shape, ...]:
    out = []
    for cell in cells:
        center, radius = _place(rng, cell, style, layout)
        out.append(Shape(shape, color, tuple(cell), center, radius))
    return tuple(out)


def draw_scene(scene: Sequence[Shape], style: Style) -> Image.Image:
    img = Image.new("RGB", (style.image_size, style.image_size), BACKGROUNDS[style.background])
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


def counterfactual(rng: random.Random, kind: str, scene: tuple[Shape, ...], wrong: str, style: Style,
                   layout: str) -> tuple[Shape, ...]:
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
        return tuple(scene) + place_shapes(rng, rng.sample(free, n - len(scene)), scene[0].shape, scene[0].color,
                                           style, layout)
    return place_shapes(rng, cells_for(rng, kind, wrong, layout), scene[0].shape, scene[0].color, style, layout)


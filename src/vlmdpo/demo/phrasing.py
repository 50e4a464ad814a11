"""The demo's words: the values an answer can name, the questions, the one answer phrasing and its scorer.

Answers are phrased in one place (`answer_text`) and scored in one place (`is_grounded`), so the
generator and the grader cannot drift apart. Questions come in several phrasings per kind; the
held-out ones (`HELD_OUT_QUESTIONS`) are only ever asked in the test split, so a model that scores
there answers the picture, not a template it memorised. The prompt pool for on-policy sampling asks
the training phrasings and `POOL_QUESTIONS` besides: prompts cost nothing to write (the judge supplies
the preference), so the pool is wider than the fixed pairs, but it never asks a held-out phrasing.
"""
from __future__ import annotations

import re

# Far apart in hue (red / orange / yellow / green / blue / purple), so one flat patch tells them apart.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 135, 20),
    "yellow": (235, 205, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Grid cell (col, row) for each position answer: the middle of an edge, so the answer is unambiguous.
POSITIONS: dict[str, tuple[int, int]] = {"left": (0, 1), "right": (2, 1), "top": (1, 0), "bottom": (1, 2)}
COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
KINDS: tuple[str, ...] = ("color", "count", "position", "shape")

TRAIN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": ("What color is the {shape}?", "Which color does the {shape} have?", "What is the color of the {shape}?",
              "Tell me the color of the {shape}."),
    "count": ("How many {shape}s are in the image?", "How many {shape}s can you see?",
              "Count the {shape}s in the picture.", "What is the number of {shape}s shown?"),
    "position": ("Where is the {shape} in the image?", "Where is the {shape} located?",
                 "In which part of the picture is the {shape}?", "Where can you find the {shape}?"),
    "shape": ("What shape is in the image?", "Which shape do you see?", "What kind of shape is shown?",
              "Name the shape in the picture."),
}
# Phrasings only the pool asks (paraphrases written without the test's; a test checks none is held out).
POOL_QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": ("Can you tell me the {shape}'s color?", "The {shape} is which color?", "What is the {shape}'s colour?",
              "Which color has the {shape} got?"),
    "count": ("How many {shape}s do you count?", "What is the count of {shape}s?", "How many {shape}s are pictured?",
              "Give the number of {shape}s in the image."),
    "position": ("Where in the image is the {shape}?", "Where is the {shape} placed?",
                 "What part of the image is the {shape} in?", "Is the {shape} at the top, bottom, left or right?"),
    "shape": ("What shape do you see?", "What is the shape in this image?", "Which shape is in the picture?",
              "Identify the shape in the image."),
}
HELD_OUT_QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": ("What colour is the {shape} painted?", "Name the {shape}'s color."),
    "count": ("How many {shape}s does the image contain?", "Tell me how many {shape}s there are."),
    "position": ("Which side of the image is the {shape} on?", "Where does the {shape} appear?"),
    "shape": ("What shape is drawn here?", "Which shape does the image show?"),
}
_POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}


def _unknown_kind(kind: str) -> ValueError:
    return ValueError(f"unknown question kind {kind!r}; choose from {', '.join(KINDS)}")


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
    raise _unknown_kind(kind)


def values_for(kind: str) -> tuple[str, ...]:
    """All values an answer to this kind of question can name."""
    if kind not in KINDS:
        raise _unknown_kind(kind)
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
    raise _unknown_kind(kind)


def is_grounded(kind: str, truth: str, text: str) -> bool:
    """True when the answer names the true value and no other value of the same kind."""
    return mentioned_values(kind, text) == {truth}

from __future__ import annotations

import hashlib
import json
import random
import re

import pytest
from PIL import Image

from vlmdpo import demo_data as dd


def _digest(root, split):
    h = hashlib.sha256()
    h.update((root / f"{split}.jsonl").read_bytes())
    for line in (root / f"{split}.jsonl").read_text().splitlines():
        h.update(Image.open(root / json.loads(line)["images"][0]).tobytes())
    return h.hexdigest()


def test_same_seed_same_files_other_seed_differs(tmp_path):
    a = dd.make_demo_data(tmp_path / "a", n_train=12, n_val=4, n_test=4, n_pool=4, seed=3, progress=False)
    b = dd.make_demo_data(tmp_path / "b", n_train=12, n_val=4, n_test=4, n_pool=4, seed=3, progress=False)
    c = dd.make_demo_data(tmp_path / "c", n_train=12, n_val=4, n_test=4, n_pool=4, seed=4, progress=False)
    for split in dd.SPLITS:
        assert _digest(a.root, split) == _digest(b.root, split)
    assert _digest(a.root, "train") != _digest(c.root, "train")
    # splits are drawn from different streams, so test is not a copy of train's first rows
    assert _digest(a.root, "val") != _digest(a.root, "test")


def test_rows_are_trl_conversational_with_truth(tmp_path):
    ds = dd.make_demo_data(tmp_path, n_train=8, n_val=0, n_test=4, n_pool=4, train_image_contrast=0.0, progress=False)
    rows = [json.loads(x) for x in ds.files["train"].read_text().splitlines()]
    assert len(rows) == 8 and ds.files["val"].read_text() == ""
    kinds = [r["question_kind"] for r in rows]
    assert kinds == list(dd.KINDS) * 2  # balanced, rotating
    for r in rows:
        assert r["prompt"][0]["content"][0] == {"type": "image"}
        assert (tmp_path / r["images"][0]).is_file()
        chosen = r["chosen"][0]["content"][0]["text"]
        rejected = r["rejected"][0]["content"][0]["text"]
        assert chosen != rejected
        kind = r["question_kind"]
        # chosen names exactly the truth, rejected exactly the hallucinated value
        assert dd.mentioned_values(kind, chosen) == {r["truth"]}
        assert dd.mentioned_values(kind, rejected) == {r["wrong"]}
        assert r["wrong"] != r["truth"]


def _px(img, x, y):
    return img.getpixel((x, y))


def _check_pixels(img, scene, kind, expected, style):
    """Read the asked attribute back from the image itself, not from the generator's bookkeeping."""
    assert img.size == (style["image_size"], style["image_size"])
    background = dd.BACKGROUNDS[style["background"]]
    cell = style["image_size"] / dd.GRID
    occupied = {}
    for s in scene:
        x, y = s["center"]
        occupied[tuple(s["cell"])] = _px(img, x, y)
    for col in range(dd.GRID):
        for row in range(dd.GRID):
            if (col, row) not in occupied:  # empty cells are background at their centre
                assert _px(img, int((col + 0.5) * cell), int((row + 0.5) * cell)) == background
    colors = {v for v in occupied.values()}
    assert len(colors) == 1 and colors != {background}
    (rgb,) = colors
    if kind == "color":
        assert dd.COLORS[expected] == rgb
    elif kind == "count":
        assert len(occupied) == int(expected)
    elif kind == "position":
        assert list(occupied) == [dd.POSITIONS[expected]]
    elif kind == "shape":
        (s,) = scene
        x, y, rad = s["center"][0], s["center"][1], s["radius"]
        top_left = _px(img, x - rad + 1, y - rad + 1) == rgb
        bottom_left = _px(img, x - rad + 1, y + rad - 1) == rgb
        shape_from_pixels = {(True, True): "square", (False, True): "triangle", (False, False): "circle"}
        assert shape_from_pixels[(top_left, bottom_left)] == expected


@pytest.mark.parametrize("layout", dd.LAYOUTS)
@pytest.mark.parametrize("kind", dd.KINDS)
def test_answers_match_the_pixels(tmp_path, kind, layout):
    ds = dd.make_demo_data(tmp_path, n_train=40, n_val=0, n_test=12, n_pool=4, kinds=(kind,), layout=layout,
                           train_image_contrast=0.0, progress=False)
    for line in ds.files["train"].read_text().splitlines() + ds.files["test"].read_text().splitlines():
        r = json.loads(line)
        img = Image.open(tmp_path / r["images"][0]).convert("RGB")
        _check_pixels(img, r["scene"], kind, r["truth"], r["style"])
        assert "rejected_images" not in r and r["contrast"] == "answer"


@pytest.mark.parametrize("layout", dd.LAYOUTS)
@pytest.mark.parametrize("kind", dd.KINDS)
def test_image_contrast_pairs_show_the_wrong_value_on_the_rejected_image(tmp_path, kind, layout):
    ds = dd.make_demo_data(tmp_path, n_train=30, n_val=6, n_test=6, n_pool=4, kinds=(kind,), train_image_contrast=1.0,
                           layout=layout, progress=False)
    for line in ds.files["train"].read_text().splitlines():
        r = json.loads(line)
        assert r["contrast"] == "image"
        assert r["chosen"] == r["rejected"]  # same words; only the image differs
        _check_pixels(Image.open(tmp_path / r["images"][0]).convert("RGB"), r["scene"], kind, r["truth"],
                      r["style"])
        _check_pixels(Image.open(tmp_path / r["rejected_images"][0]).convert("RGB"), r["rejected_scene"], kind,
                      r["wrong"], r["style"])
        # nothing but the asked attribute changed
        before, after = r["scene"][0], r["rejected_scene"][0]
        keep = {"color": ("shape", "cell"), "shape": ("color", "cell"), "position": ("shape", "color"),
                "count": ("shape", "color")}[kind]
        assert all(before[k] == after[k] for k in keep)
    for split in ("val", "test"):  # what the quickstart measures stays answer-contrast
        assert all(json.loads(x)["contrast"] == "answer" for x in ds.files[split].read_text().splitlines())


def test_canonical_layout_places_by_kind():
    items = dd.make_split("train", 80, seed=2)
    for it in items:
        cells = [s.cell for s in it.scene]
        if it.kind in ("color", "shape"):
            assert cells == [dd.CENTER]
        elif it.kind == "count":
            assert tuple(cells) == dd.COUNT_PATTERNS[int(it.truth)]
        else:
            assert cells == [dd.POSITIONS[it.truth]]
    with pytest.raises(ValueError, match="unknown layout"):
        dd.make_split("train", 1, layout="spiral")


def test_image_contrast_share_is_respected():
    items = dd.make_split("train", 400, image_contrast=0.25)
    n = sum(it.rejected_scene is not None for it in items)
    assert 70 < n < 130
    with pytest.raises(ValueError, match="between 0 and 1"):
        dd.make_split("train", 2, image_contrast=1.5)


def test_rejected_values_are_uniform_enough():
    """No text-only shortcut: each value shows up as truth and as wrong at similar rates."""
    items = dd.make_split("train", 2000, seed=1, kinds=("color",))
    truths = {v: 0 for v in dd.COLORS}
    wrongs = {v: 0 for v in dd.COLORS}
    for it in items:
        truths[it.truth] += 1
        wrongs[it.wrong] += 1
    expected = len(items) / len(dd.COLORS)
    for v in dd.COLORS:
        assert 0.8 * expected < truths[v] < 1.2 * expected and 0.8 * expected < wrongs[v] < 1.2 * expected


def test_rerun_reuses_and_conflicting_rerun_refuses(tmp_path):
    first = dd.make_demo_data(tmp_path, n_train=4, n_val=0, n_test=0, n_pool=4, progress=False)
    assert not first.reused
    again = dd.make_demo_data(tmp_path, n_train=4, n_val=0, n_test=0, n_pool=4, progress=False)
    assert again.reused
    with pytest.raises(FileExistsError, match="overwrite"):
        dd.make_demo_data(tmp_path, n_train=5, n_val=0, n_test=0, n_pool=4, progress=False)
    redone = dd.make_demo_data(tmp_path, n_train=5, n_val=0, n_test=0, n_pool=4, overwrite=True, progress=False)
    assert len(redone.files["train"].read_text().splitlines()) == 5


@pytest.mark.parametrize(
    "kind,truth,text,expected",
    [
        ("color", "red", "The circle is red.", True),
        ("color", "red", "It is red or blue.", False),  # hedging over several values is not grounded
        ("color", "red", "The circle is reddish.", False),
        ("count", "3", "There are three squares.", True),
        ("count", "3", "I count 3.", True),
        ("count", "1", "There is a square.", False),  # "a" is not a count
        ("count", "2", "Two, or maybe four.", False),
        ("position", "top", "It is in the upper part.", True),
        ("position", "left", "The triangle is on the right.", False),
        ("shape", "circle", "I see two circles.", True),
        ("shape", "square", "It is a triangle.", False),
    ],
)
def test_grounded_scoring(kind, truth, text, expected):
    assert dd.is_grounded(kind, truth, text) is expected


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown question kind 'size'"):
        dd.make_split("train", 2, kinds=("size",))
    with pytest.raises(ValueError, match="image_size"):
        dd.make_demo_data(tmp_path, image_size=10, progress=False)


def test_make_item_is_pure_given_rng():
    a = dd.make_item(random.Random(5), "count")
    b = dd.make_item(random.Random(5), "count")
    assert a == b


def test_default_training_split_mixes_both_contrasts_and_held_out_splits_do_not(tmp_path):
    ds = dd.make_demo_data(tmp_path, n_train=40, n_val=8, n_test=8, n_pool=4, progress=False)
    contrast = {s: {json.loads(x)["contrast"] for x in ds.files[s].read_text().splitlines()} for s in dd.SPLITS}
    assert contrast == {"train": {"answer", "image"}, "val": {"answer"}, "test": {"answer"}, "pool": {"answer"}}


def test_bad_image_contrast_share_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"train_image_contrast \(--train-image-contrast\) must be between 0 and 1"):
        dd.make_demo_data(tmp_path / "d", train_image_contrast=1.5, progress=False)
    assert not (tmp_path / "d").exists()


def _template(row):
    """The question with its shape word put back as {shape}: the phrasing, whatever shape it asks about."""
    text = row["prompt"][0]["content"][1]["text"]
    return row["question_kind"], re.sub(rf"\b{row['scene'][0]['shape']}", "{shape}", text)


def _style_values(rows):
    return {key: {json.dumps(r["style"][key]) for r in rows} for key in ("background", "image_size", "scale", "nudge")}


@pytest.fixture(scope="module")
def full_size_rows(tmp_path_factory):
    ds = dd.make_demo_data(tmp_path_factory.mktemp("demo"), progress=False)  # the quickstart's sizes
    return {s: [json.loads(x) for x in ds.files[s].read_text().splitlines()] for s in dd.SPLITS}


def test_test_split_phrasings_and_styles_never_occur_in_train_val_or_pool(full_size_rows):
    seen = full_size_rows["train"] + full_size_rows["val"] + full_size_rows["pool"]  # the pool is sampled on-policy
    test = full_size_rows["test"]
    assert {_template(r) for r in test}.isdisjoint({_template(r) for r in seen})
    assert {r["prompt"][0]["content"][1]["text"] for r in test}.isdisjoint(
        {r["prompt"][0]["content"][1]["text"] for r in seen})
    seen_styles, test_styles = _style_values(seen), _style_values(test)
    for key in seen_styles:  # each part of the picture's look is one training never showed
        assert test_styles[key].isdisjoint(seen_styles[key]), key
    # and every held-out phrasing is asked, so the test measures them all
    assert {_template(r) for r in test} == {(k, q) for k, qs in dd.HELD_OUT_QUESTIONS.items() for q in qs}


def test_the_pool_asks_more_phrasings_and_styles_than_training_but_none_held_out(full_size_rows):
    pool, train = full_size_rows["pool"], full_size_rows["train"]
    pool_only = {(k, q) for k, qs in dd.POOL_QUESTIONS.items() for q in qs}
    assert pool_only.isdisjoint({(k, q) for k, qs in dd.HELD_OUT_QUESTIONS.items() for q in qs})
    assert pool_only.isdisjoint({(k, q) for k, qs in dd.TRAIN_QUESTIONS.items() for q in qs})
    asked = {_template(r) for r in pool}
    assert asked & pool_only and asked & {_template(r) for r in train}  # both kinds of phrasing are sampled
    wider = _style_values(pool)
    for key, values in _style_values(train).items():
        assert values < wider[key], key  # every part of the look is wider in the pool


def test_training_rows_vary_colour_background_size_shape_size_placement_and_phrasing(full_size_rows):
    train = full_size_rows["train"]
    assert {r["truth"] for r in train if r["question_kind"] == "color"} == set(dd.COLORS)
    assert len(dd.COLORS) >= 6
    styles = _style_values(train)
    assert len(styles["background"]) >= 4 and len(styles["image_size"]) >= 3
    assert len(styles["scale"]) >= 3 and len(styles["nudge"]) >= 5
    for kind in dd.KINDS:
        assert len({_template(r) for r in train if r["question_kind"] == kind}) >= 4, kind


def test_data_from_another_generator_version_is_regenerated_not_reused(tmp_path):
    dd.make_demo_data(tmp_path, n_train=4, n_val=0, n_test=0, n_pool=4, progress=False)
    manifest = tmp_path / "demo_data.json"
    old = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**old, "version": dd.DEMO_VERSION - 1}))
    again = dd.make_demo_data(tmp_path, n_train=4, n_val=0, n_test=0, n_pool=4, progress=False)
    assert not again.reused and json.loads(manifest.read_text())["version"] == dd.DEMO_VERSION


def test_a_fixed_image_size_applies_to_every_split(tmp_path):
    ds = dd.make_demo_data(tmp_path, n_train=6, n_val=2, n_test=4, n_pool=4, image_size=64, progress=False)
    for split in dd.SPLITS:
        for line in ds.files[split].read_text().splitlines():
            assert Image.open(tmp_path / json.loads(line)["images"][0]).size == (64, 64)

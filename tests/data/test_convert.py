from __future__ import annotations

import atexit
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vlmdpo.data.convert import ConvertError, canonical, convert
from vlmdpo.data.images import image_digest
from vlmdpo.types import ImageRef, PreferenceRecord, RowSource


def T(text):
    return {"type": "text", "text": text}


IMG = {"type": "image"}


def msg(role, *parts):
    return {"role": role, "content": list(parts)}


def png(path: Path, color) -> Path:
    Image.new("RGB", (3, 2), color).save(path)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def rich_record(tmp_path) -> PreferenceRecord:
    red = png(tmp_path / "red.png", (255, 0, 0))
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (0, 0, 255)).save(buf, "JPEG")
    return PreferenceRecord(
        id="r1",
        prompt=[msg("system", T("Be brief.")),
                msg("user", T("Look: "), IMG, T(" and "), T("this"), IMG),
                msg("assistant", T("Two shapes.")),
                msg("user", T("Which is red?"))],
        chosen=[msg("assistant", T("The first."))],
        rejected=[msg("assistant", T("The second."))],
        images=[ImageRef(path=str(red), origin="red.png"), ImageRef(data=buf.getvalue())],
        meta={"source": "unit", "n": 3},
        source=RowSource("in.jsonl", 7),
    )


# -------------------------------------------------------------------------------------- golden
def test_trl_output_golden(rich_record, tmp_path):
    out = convert([rich_record], tmp_path / "out" / "trl.jsonl", to="trl")
    [row] = read_jsonl(out)
    names = row.pop("images")
    assert row == {
        "id": "r1",
        "prompt": [{"role": "system", "content": [T("Be brief.")]},
                   {"role": "user", "content": [T("Look: "), IMG, T(" and this"), IMG]},
                   {"role": "assistant", "content": [T("Two shapes.")]},
                   {"role": "user", "content": [T("Which is red?")]}],
        "chosen": [{"role": "assistant", "content": [T("The first.")]}],
        "rejected": [{"role": "assistant", "content": [T("The second.")]}],
        "meta": {"source": "unit", "n": 3},
    }
    assert names[0].startswith("images/") and names[0].endswith(".png")
    assert names[1].startswith("images/") and names[1].endswith(".jpg")  # bytes: extension from the header
    # copies are byte-identical, named by content
    assert (out.parent / names[0]).read_bytes() == (tmp_path / "red.png").read_bytes()
    assert image_digest(ImageRef(path=str(out.parent / names[1]))) == image_digest(rich_record.images[1])


def test_swift_output_golden(rich_record, tmp_path):
    out = convert([rich_record], tmp_path / "swift.jsonl", to="swift")
    [row] = read_jsonl(out)
    assert row["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Look: <image> and this<image>"},
        {"role": "assistant", "content": "Two shapes."},
        {"role": "user", "content": "Which is red?"},
        {"role": "assistant", "content": "The first."},
    ]
    assert row["rejected_response"] == "The second."
    assert row["id"] == "r1" and row["meta"] == {"source": "unit", "n": 3} and len(row["images"]) == 2
    assert "rejected_images" not in row


def test_llamafactory_output_golden_and_dataset_info(rich_record, tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "x.json"}}))
    out = convert([rich_record], tmp_path / "lf.jsonl", to="llamafactory")
    [row] = read_jsonl(out)
    assert row["conversations"] == [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Look: <image> and this<image>"},
        {"from": "gpt", "value": "Two shapes."},
        {"from": "human", "value": "Which is red?"},
    ]
    assert row["chosen"] == {"from": "gpt", "value": "The first."}
    assert row["rejected"] == {"from": "gpt", "value": "The second."}
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["other"] == {"file_name": "x.json"}  # existing entries are kept
    assert info["lf"]["file_name"] == "lf.jsonl" and info["lf"]["ranking"] is True
    assert info["lf"]["formatting"] == "sharegpt" and info["lf"]["columns"]["messages"] == "conversations"


def test_same_image_is_stored_once_and_names_are_stable(rich_record, tmp_path):
    twice = PreferenceRecord(**{**rich_record.__dict__, "id": "r2"})
    out = convert([rich_record, twice], tmp_path / "a" / "x.jsonl", to="swift")
    rows = read_jsonl(out)
    assert rows[0]["images"] == rows[1]["images"]
    assert len(list((out.parent / "images").iterdir())) == 2
    again = convert([rich_record], tmp_path / "b" / "x.jsonl", to="swift")
    assert read_jsonl(again)[0]["images"] == rows[0]["images"]


def test_folder_output_and_pil_images(tmp_path):
    im = Image.new("RGBA", (2, 2), (0, 255, 0, 255))
    rec = PreferenceRecord("p", [msg("user", IMG, T("?"))], [msg("assistant", T("a"))],
                           [msg("assistant", T("b"))], images=[ImageRef(pil=im)])
    out = convert([rec], tmp_path / "outdir", to="trl")
    assert out == tmp_path / "outdir" / "prefs.jsonl"
    [row] = read_jsonl(out)
    assert row["images"][0].endswith(".png")
    assert image_digest(ImageRef(path=str(out.parent / row["images"][0]))) == image_digest(ImageRef(pil=im))


# -------------------------------------------------------------------------------------- refusals
def _rec(**kw) -> PreferenceRecord:
    base = dict(id="x", prompt=[msg("user", T("q"))], chosen=[msg("assistant", T("a"))],
                rejected=[msg("assistant", T("b"))], source=RowSource("d.jsonl", 4))
    base.update(kw)
    return PreferenceRecord(**base)


@pytest.mark.parametrize("to, record, needle", [
    ("trl", _rec(prompt=[msg("user", IMG)], images=[ImageRef(path="/a.png")],
                 rejected_images=[ImageRef(path="/b.png")]), "rejected_images"),
    ("llamafactory", _rec(prompt=[msg("user", IMG)], images=[ImageRef(path="/a.png")],
                          rejected_images=[ImageRef(path="/b.png")]), "rejected_images"),
    ("trl", _rec(prompt=[msg("user", {"type": "video"})], videos=[ImageRef(path="/v.mp4")]), "videos"),
    ("swift", _rec(chosen=[msg("assistant", T("a")), msg("assistant", T("b"))]), "2 chosen messages"),
    ("llamafactory", _rec(rejected=[msg("assistant", T("a")), msg("assistant", T("c"))]), "2 rejected messages"),
    ("llamafactory", _rec(prompt=[msg("user", T("a")), msg("user", T("b"))]), "prompt roles"),
    ("swift", _rec(prompt=[msg("user", T("see <image> here"))]), "literal text '<image>'"),
    ("llamafactory", _rec(chosen=[msg("assistant", T("a <video>"))]), "literal text '<video>'"),
])
def test_unexpressible_records_are_refused_with_row_and_reason(tmp_path, to, record, needle):
    with pytest.raises(ConvertError) as info:
        convert([record], tmp_path / "o.jsonl", to=to)
    text = str(info.value)
    assert "d.jsonl:4" in text and needle in text and "->" in text
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.tmp").exists()


def test_unknown_target_and_bad_output_name(tmp_path):
    with pytest.raises(ConvertError, match="unknown target"):
        convert([], tmp_path / "o.jsonl", to="parquet")
    with pytest.raises(ConvertError, match=".jsonl"):
        convert([], tmp_path / "o.csv", to="trl")


def test_meta_that_json_cannot_store_is_refused(tmp_path):
    with pytest.raises(ConvertError, match="meta"):
        convert([_rec(meta={"blob": b"\x00"})], tmp_path / "o.jsonl", to="trl")


def test_swift_keeps_rejected_images_and_list_rejected(tmp_path):
    a, b = png(tmp_path / "a.png", (1, 1, 1)), png(tmp_path / "b.png", (2, 2, 2))
    rec = _rec(prompt=[msg("user", IMG, T("q"))], images=[ImageRef(path=str(a))],
               rejected_images=[ImageRef(path=str(b))], chosen=[msg("assistant", T("same"))],
               rejected=[msg("assistant", T("same")), msg("assistant", T("more"))])
    [row] = read_jsonl(convert([rec], tmp_path / "o" / "s.jsonl", to="swift"))
    assert row["rejected_response"] == [{"role": "assistant", "content": "same"},
                                        {"role": "assistant", "content": "more"}]
    assert len(row["rejected_images"]) == 1 and row["rejected_images"] != row["images"]


# ------------------------------------------------------------------------------------- canonical
def test_canonical_normalizes_representation_only(tmp_path):
    red = png(tmp_path / "r.png", (255, 0, 0))
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (255, 0, 0)).save(buf, "BMP")
    a = _rec(prompt=[msg("user", T("a"), T(""), T("b"), IMG)], images=[ImageRef(path=str(red))], meta={"k": (1, 2)})
    b = _rec(prompt=[{"role": "user", "content": [T("ab"), {"type": "text", "text": None}, IMG]}],
             images=[ImageRef(data=buf.getvalue())], meta={"k": [1, 2]}, source=None)
    assert canonical(a) == canonical(b)
    assert canonical(a)["prompt"] == [{"role": "user", "content": [T("ab"), IMG]}]
    assert canonical(_rec(prompt=[{"role": "user", "content": "ab"}])) == canonical(_rec(prompt=[msg("user", T("ab"))]))
    # what a model sees differs -> canonical differs
    assert canonical(a) != canonical(_rec(prompt=[msg("user", T("a b"), IMG)], images=a.images, meta=a.meta))
    assert canonical(a) != canonical(_rec(prompt=[msg("user", IMG, T("ab"))], images=a.images, meta=a.meta))
    assert canonical(a)["rejected_images"] is None
    assert canonical(_rec(images=[ImageRef(url="http://h/x.png")]))["images"] == ["url:http://h/x.png"]


# ------------------------------------------------------------------------------------ round trip
_POOL_DIR = Path(tempfile.mkdtemp(prefix="vlmdpo-convert-pool-"))
atexit.register(shutil.rmtree, _POOL_DIR, True)
_POOL = []
for _i in range(4):
    _arr = np.random.default_rng(_i).integers(0, 255, (2 + _i, 3, 3), dtype=np.uint8)
    _POOL.append(Image.fromarray(_arr, "RGB"))
    _POOL[-1].save(_POOL_DIR / f"p{_i}.png")


def _ref(kind: str, i: int) -> ImageRef:
    if kind == "path":
        return ImageRef(path=str(_POOL_DIR / f"p{i}.png"), origin=f"p{i}.png")
    if kind == "data":
        buf = io.BytesIO()
        _POOL[i].save(buf, "BMP")
        return ImageRef(data=buf.getvalue())
    return ImageRef(pil=_POOL[i])


# '<' is left out so that no text spells a placeholder (convert refuses those for swift/llamafactory).
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="<"), min_size=1, max_size=10)
_answer = _text.filter(lambda s: s.strip())
_meta = st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(
    st.integers(-5, 5), _text, st.booleans(), st.none(), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 3), max_size=2)), max_size=2)


@st.composite
def records(draw, with_rejected_images: bool = False) -> PreferenceRecord:
    n_images = draw(st.integers(0, 3))
    multi_turn = draw(st.booleans())
    user_turns = 2 if multi_turn else 1
    # each image goes into one user turn, at a drawn position among that turn's text parts
    turns: list[list[dict]] = [[T(t) for t in draw(st.lists(_text, min_size=1, max_size=3))] for _ in range(user_turns)]
    for _ in range(n_images):
        turn = turns[draw(st.integers(0, user_turns - 1))]
        turn.insert(draw(st.integers(0, len(turn))), dict(IMG))
    prompt = [msg("system", T(draw(_text)))] if draw(st.booleans()) else []
    prompt.append(msg("user", *turns[0]))
    if multi_turn:
        prompt += [msg("assistant", T(draw(_answer))), msg("user", *turns[1])]
    chosen = draw(_answer)
    rejected = draw(_answer.filter(lambda s: s != chosen))
    kinds = st.sampled_from(["path", "data", "pil"])
    images = [_ref(draw(kinds), draw(st.integers(0, 3))) for _ in range(n_images)]
    rejected_images = None
    if with_rejected_images and n_images and draw(st.booleans()):
        rejected_images = [_ref(draw(kinds), draw(st.integers(0, 3))) for _ in range(n_images)]
    return PreferenceRecord(id=draw(st.text(min_size=1, max_size=8)), prompt=prompt,
                            chosen=[msg("assistant", T(chosen))], rejected=[msg("assistant", T(rejected))],
                            images=images, rejected_images=rejected_images, meta=draw(_meta))


def _round_trip(recs: list[PreferenceRecord], to: str) -> None:
    from vlmdpo.data.load import load_preferences

    out_dir = Path(tempfile.mkdtemp(prefix=f"vlmdpo-rt-{to}-"))
    try:
        out = convert(recs, out_dir / "data.jsonl", to=to)
        loaded = load_preferences(out, format="auto")
        assert loaded.n_read == len(recs) and loaded.n_skipped == 0
        assert [canonical(r) for r in loaded.records] == [canonical(r) for r in recs]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


_settings = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(st.lists(records(), min_size=1, max_size=3))
def test_round_trip_trl(recs):
    _round_trip(recs, "trl")


@_settings
@given(st.lists(records(with_rejected_images=True), min_size=1, max_size=3))
def test_round_trip_swift(recs):
    _round_trip(recs, "swift")


@_settings
@given(st.lists(records(), min_size=1, max_size=3))
def test_round_trip_llamafactory(recs):
    _round_trip(recs, "llamafactory")

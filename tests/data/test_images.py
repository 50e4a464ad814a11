from __future__ import annotations

import base64
import functools
import http.server
import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmdpo.data import images as images_mod
from vlmdpo.data.images import (
    ImageLoadError,
    ImageSpecError,
    check_image,
    image_digest,
    image_size,
    load_image,
    resize_area,
    resolve_image,
    set_max_image_pixels,
    to_rgb,
)
from vlmdpo.types import ImageRef


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def write_png(path: Path, im: Image.Image | None = None) -> Path:
    path.write_bytes(png_bytes(im or Image.new("RGB", (8, 6), (10, 20, 30))))
    return path


def fake_png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height; no pixel data is needed to read the header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"")


@pytest.fixture(autouse=True)
def _reset_limits():
    yield
    set_max_image_pixels(None)


# ------------------------------------------------------------------------------------- resolve
def test_relative_path_resolves_against_base_dir_and_image_root_wins(tmp_path):
    ref = resolve_image("img/0.jpg", base_dir=tmp_path, image_root=None, allow_remote=False)
    assert ref.path == str(tmp_path / "img" / "0.jpg") and ref.origin == "img/0.jpg"
    root = tmp_path / "root"
    ref = resolve_image("img/0.jpg", base_dir=tmp_path, image_root=root, allow_remote=False)
    assert ref.path == str(root / "img" / "0.jpg")
    ref = resolve_image("/abs/x.png", base_dir=tmp_path, image_root=root, allow_remote=False)
    assert ref.path == "/abs/x.png"
    # resolving does no I/O: the file does not exist and that is fine here
    assert not Path(ref.path).exists()


def test_file_url_and_path_objects(tmp_path):
    assert resolve_image(f"file://{tmp_path}/a.png", base_dir=None, image_root=None,
                         allow_remote=False).path == str(tmp_path / "a.png")
    assert resolve_image(tmp_path / "b.png", base_dir=None, image_root=None, allow_remote=False).path == str(
        tmp_path / "b.png")


def test_data_uri_and_datasets_dict_and_pil():
    raw = png_bytes(Image.new("RGB", (3, 2), "red"))
    ref = resolve_image("data:image/png;base64," + base64.b64encode(raw).decode(), base_dir=None,
                        image_root=None, allow_remote=False)
    assert ref.data == raw and "3" not in ref.origin.split("(")[0]
    assert resolve_image({"bytes": raw, "path": "x.png"}, base_dir=None, image_root=None,
                         allow_remote=False).data == raw
    ref = resolve_image({"bytes": None, "path": "sub/x.png"}, base_dir=Path("/data"), image_root=None,
                        allow_remote=False)
    assert ref.path == "/data/sub/x.png"
    im = Image.new("RGB", (4, 4))
    assert resolve_image(im, base_dir=None, image_root=None, allow_remote=False).pil is im


@pytest.mark.parametrize("value, needle", [
    ("", "empty"),
    ("   ", "empty"),
    ("http://example.com/a.png", "remote"),
    ("s3://bucket/a.png", "s3://"),
    ("data:text/plain;base64,aGk=", "text/plain"),
    ("data:image/png;base64,@@not base64@@", "base64"),
    ("data:image/png,rawbytes", "base64"),
    ({"bytes": None, "path": None}, "neither"),
    ({}, "neither"),
    (42, "int"),
])
def test_unusable_values_raise_spec_error_with_fix(value, needle):
    with pytest.raises(ImageSpecError) as info:
        resolve_image(value, base_dir=None, image_root=None, allow_remote=False)
    assert needle in str(info.value)
    assert info.value.fix
    assert isinstance(info.value, ValueError)


def test_remote_url_allowed():
    ref = resolve_image("https://example.com/a.png", base_dir=None, image_root=None, allow_remote=True)
    assert ref.url == "https://example.com/a.png" and ref.path is None
    with pytest.raises(ImageSpecError) as info:
        resolve_image("https://example.com/a.png", base_dir=None, image_root=None, allow_remote=False)
    assert "allow_remote_images" in info.value.fix


# --------------------------------------------------------------------------------------- check
def test_check_ok_missing_empty_dir_not_image(tmp_path):
    ok = write_png(tmp_path / "ok.png")
    assert check_image(ImageRef(path=str(ok))) is None
    assert image_size(ImageRef(path=str(ok))) == (8, 6)
    missing = ImageRef(path=str(tmp_path / "nope.png"), origin="nope.png")
    assert check_image(missing) == f"image not found: {tmp_path / 'nope.png'} (the row says 'nope.png')"
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in check_image(ImageRef(path=str(tmp_path / "empty.png")))
    assert "directory" in check_image(ImageRef(path=str(tmp_path)))
    (tmp_path / "text.png").write_text("hello, I am not a picture")
    msg = check_image(ImageRef(path=str(tmp_path / "text.png")))
    assert "not an image" in msg and str(tmp_path / "text.png") in msg


def test_truncated_file_passes_header_check_and_fails_decode(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    raw = png_bytes(Image.fromarray(noise))
    path = tmp_path / "cut.png"
    path.write_bytes(raw[: len(raw) // 2])
    ref = ImageRef(path=str(path))
    assert check_image(ref) is None  # header only: the pixels are never read
    msg = check_image(ref, decode=True)
    assert msg is not None and "truncated" in msg and str(path) in msg
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(ref)


def test_decompression_bomb_from_header_alone(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(fake_png_header(20000, 20000))  # 400M px claimed, 45 bytes on disk
    msg = check_image(ImageRef(path=str(path)))
    assert msg is not None and "too large" in msg and str(path) in msg
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(ImageRef(path=str(path)))


def test_bomb_limit_is_configurable(tmp_path):
    path = write_png(tmp_path / "a.png", Image.new("RGB", (20, 20)))
    ref = ImageRef(path=str(path))
    assert check_image(ref) is None
    set_max_image_pixels(399)
    assert "400 pixels" in check_image(ref) and "399" in check_image(ref)
    set_max_image_pixels(400)
    assert check_image(ref) is None


def test_check_is_cached_per_path_and_sees_changes(tmp_path, monkeypatch):
    path = write_png(tmp_path / "a.png")
    ref = ImageRef(path=str(path))
    calls = []
    real_open = images_mod.Image.open
    monkeypatch.setattr(images_mod.Image, "open", lambda *a, **k: calls.append(1) or real_open(*a, **k))
    for _ in range(5):
        assert check_image(ref) is None
    assert len(calls) == 1
    path.write_text("now it is text, and a different size")
    assert "not an image" in check_image(ref)
    assert len(calls) == 2


def test_check_data_and_pil_refs():
    assert check_image(ImageRef(data=png_bytes(Image.new("L", (2, 2))))) is None
    assert "not an image" in check_image(ImageRef(data=b"garbage", origin="row bytes"))
    assert check_image(ImageRef(pil=Image.new("RGB", (2, 2)))) is None
    assert "remote" in check_image(ImageRef(url="http://x/y.png"), allow_remote=False)


# ---------------------------------------------------------------------------------------- load
def pixel(im: Image.Image, xy=(0, 0)):
    assert im.mode == "RGB"
    return im.getpixel(xy)


def test_gray_and_alpha_modes_become_rgb_on_white():
    assert pixel(to_rgb(Image.new("L", (1, 1), 100))) == (100, 100, 100)
    assert pixel(to_rgb(Image.new("LA", (1, 1), (0, 0)))) == (255, 255, 255)
    assert pixel(to_rgb(Image.new("LA", (1, 1), (0, 255)))) == (0, 0, 0)
    # 50% black over white: 255 * (1 - 128/255) = 127
    assert pixel(to_rgb(Image.new("RGBA", (1, 1), (0, 0, 0, 128)))) == (127, 127, 127)
    assert pixel(to_rgb(Image.new("RGBA", (1, 1), (255, 0, 0, 0)))) == (255, 255, 255)
    assert pixel(to_rgb(Image.new("RGBA", (1, 1), (255, 0, 0, 255)))) == (255, 0, 0)
    assert pixel(to_rgb(Image.new("CMYK", (1, 1), (0, 255, 255, 0)))) == (255, 0, 0)
    one = Image.new("1", (2, 1), 0)
    one.putpixel((1, 0), 1)
    assert [pixel(to_rgb(one), (x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]


def test_palette_with_transparency_through_png(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0
    path = tmp_path / "p.png"
    p.save(path)
    im = load_image(ImageRef(path=str(path)))
    assert [pixel(im, (x, 0)) for x in range(2)] == [(255, 255, 255), (255, 0, 0)]


def test_16_bit_is_scaled_to_8_bit(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    im = load_image(ImageRef(path=str(path)))
    # 32896 * 255 / 65535 = 128.0; PIL's own convert would clip everything above 255 to white
    assert [pixel(im, (x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    wide = Image.fromarray(np.array([[1000, 65535]], dtype=np.int32), mode="I")
    assert [pixel(to_rgb(wide), (x, 0))[0] for x in range(2)] == [4, 255]  # 1000*255/65535 = 3.89
    eight = Image.fromarray(np.array([[0, 200]], dtype=np.int32), mode="I")
    assert [pixel(to_rgb(eight), (x, 0))[0] for x in range(2)] == [0, 200]


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "rot.png"
    im.save(path, exif=exif)
    out = load_image(ImageRef(path=str(path)))
    assert out.size == (20, 40)
    assert pixel(out, (10, 2)) == (255, 0, 0) and pixel(out, (10, 37)) == (0, 0, 255)


@pytest.mark.parametrize("size, max_px, min_px, expected", [
    ((100, 50), 1250, None, (50, 25)),   # factor sqrt(1250/5000) = 0.5 exactly
    ((100, 50), 1000, None, (44, 22)),   # factor 0.4472: floor keeps area <= max
    ((100, 50), 5000, None, (100, 50)),  # already within: untouched
    ((10, 5), None, 200, (20, 10)),      # factor 2 exactly
    ((10, 5), None, 201, (21, 11)),      # factor 2.005: ceil keeps area >= min
    ((10, 5), None, 50, (10, 5)),
])
def test_area_resize_keeps_aspect(size, max_px, min_px, expected):
    out = resize_area(Image.new("RGB", size), max_pixels=max_px, min_pixels=min_px)
    assert out.size == expected


def test_load_image_resizes_and_returns_rgb(tmp_path):
    path = write_png(tmp_path / "a.png", Image.new("L", (100, 50), 7))
    out = load_image(ImageRef(path=str(path)), max_pixels=1250)
    assert out.mode == "RGB" and out.size == (50, 25) and pixel(out) == (7, 7, 7)


def test_load_errors_name_the_image(tmp_path):
    with pytest.raises(ImageLoadError, match=str(tmp_path / "gone.png")):
        load_image(ImageRef(path=str(tmp_path / "gone.png")))
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(ImageRef(data=b"xx", origin="row 3 bytes"))


def test_data_and_pil_refs_load():
    raw = png_bytes(Image.new("RGBA", (3, 2), (0, 255, 0, 255)))
    assert pixel(load_image(ImageRef(data=raw))) == (0, 255, 0)
    src = Image.new("P", (2, 2), 0)
    assert load_image(ImageRef(pil=src)).mode == "RGB" and src.mode == "P"  # caller's image untouched


# ---------------------------------------------------------------------------------------- remote
@pytest.fixture()
def http_dir(tmp_path):
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_remote_images_only_when_allowed(http_dir):
    folder, base = http_dir
    write_png(folder / "a.png", Image.new("RGB", (5, 4), (1, 2, 3)))
    ref = resolve_image(f"{base}/a.png", base_dir=None, image_root=None, allow_remote=True)
    assert check_image(ref, allow_remote=True) is None
    assert "remote images are off" in check_image(ref, allow_remote=False)
    assert pixel(load_image(ref, allow_remote=True)) == (1, 2, 3)
    with pytest.raises(ImageLoadError, match="remote images are off"):
        load_image(ref, allow_remote=False)
    missing = ImageRef(url=f"{base}/missing.png")
    assert "HTTP 404" in check_image(missing, allow_remote=True)


# ---------------------------------------------------------------------------------------- digest
def test_digest_depends_on_pixels_not_encoding(tmp_path):
    im = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    png = write_png(tmp_path / "a.png", im)
    im.save(tmp_path / "a.bmp")
    rgba = png_bytes(im.convert("RGBA"))  # fully opaque alpha changes nothing a model sees
    digests = {image_digest(ImageRef(path=str(png))), image_digest(ImageRef(path=str(tmp_path / "a.bmp"))),
               image_digest(ImageRef(data=rgba)), image_digest(ImageRef(pil=im))}
    assert len(digests) == 1
    other = im.copy()
    other.putpixel((0, 0), (255, 255, 255))
    assert image_digest(ImageRef(pil=other)) not in digests
    assert image_digest(ImageRef(pil=im.resize((4, 2)))) not in digests

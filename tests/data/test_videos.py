"""Frame sampling and frame size for videos (vlmdpo.data.videos); decoding is tested in tests/faults/test_video.py."""
from __future__ import annotations

from vlmdpo.data.videos import check_video, sample_indices, scaled_size
from vlmdpo.types import ImageRef


def test_sample_indices_take_fps_frames_per_second_spread_over_the_video():
    assert sample_indices(60, 30.0, 2.0, 128) == [0, 20, 39, 59]  # 2 s at 2 fps, spread over the whole clip
    assert sample_indices(300, 30.0, 1.0, 4) == [0, 100, 199, 299]  # capped by max_frames, first and last kept
    assert sample_indices(1, 30.0, 2.0, 128) == [0]
    assert sample_indices(5, 30.0, 0.1, 128) == [0, 4]  # at least two frames
    assert sample_indices(0, 30.0, 2.0, 128) == []


def test_scaled_size_keeps_aspect_and_never_enlarges():
    assert scaled_size(640, 480, None) == (640, 480)
    assert scaled_size(64, 48, 65536) == (64, 48)
    w, h = scaled_size(640, 480, 256 * 256)
    assert w * h <= 256 * 256 and abs(w / h - 640 / 480) < 0.02


def test_check_video_names_missing_empty_and_remote(tmp_path):
    assert "not found" in check_video(ImageRef(path=str(tmp_path / "no.mp4")))
    (tmp_path / "e.mp4").write_bytes(b"")
    assert "empty" in check_video(ImageRef(path=str(tmp_path / "e.mp4")))
    assert "remote videos are not supported" in check_video(ImageRef(url="http://x/v.mp4"))

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.sources import copy_class_tree
from pipeline.utils import PipelineError
from pipeline.validation import check_image, validate_images
from tests.hostile import make_hostile_dataset, png_bomb


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    src = tmp_path / "src"
    fate = make_hostile_dataset(src, tmp_path / "outside")
    out = tmp_path / "raw"
    ignored: list[dict[str, str]] = []
    copy_class_tree(src, out, ignored)
    return out, fate, ignored


def test_every_hostile_file_gets_its_fate(hostile):
    out, fate, ignored = hostile
    report = validate_images(out, min_side=16, max_pixels=50_000_000).to_dict()
    skipped = {s["path"]: s["reason"] for s in report["skipped_files"]}
    converted = {c["path"]: c["reason"] for c in report["converted_files"]}
    assert sorted(skipped) == sorted(p for p, f in fate.items() if f == "skip")
    assert {i["path"] for i in ignored} == {p for p, f in fate.items() if f == "ignore"}
    assert skipped["dogs/text.jpg"].startswith("not an image")
    assert skipped["dogs/empty.png"].startswith("not an image")
    assert skipped["dogs/truncated.jpg"].startswith("cannot be decoded")
    assert skipped["dogs/tiny.png"].startswith("too small")
    assert skipped["dogs/bomb.png"].startswith("too large")
    expected_converted = {p for p, f in fate.items() if f == "convert"}
    assert {p.removesuffix(".png") for p in converted} | set(converted) >= expected_converted
    assert len(converted) == len(expected_converted)
    assert "EXIF orientation" in converted["cats/rotated.jpg.png"]
    assert "CMYK" in converted["cats/cmyk.jpg.png"]
    # Every kept file is now a plain 8-bit RGB JPEG or PNG that TensorFlow decodes the same way.
    kept = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(kept) == report["images"] == sum(report["per_class"].values())
    for path in kept:
        with Image.open(path) as img:
            assert img.format in ("JPEG", "PNG") and img.mode == "RGB", path
    with Image.open(out / "cats/rotated.jpg.png") as img:
        assert img.size == (40, 80)  # the 80x40 frame displayed upright
    assert report["width"]["min"] >= 16 and report["height"]["max"] == 80


def test_png_named_jpg_is_kept_by_content(tmp_path):
    path = tmp_path / "x.jpg"
    Image.new("RGB", (20, 20), (1, 2, 3)).save(path, "PNG")
    out, reason, size = check_image(path, 16, 10_000)
    assert out is None and reason is None and size == (20, 20)


def test_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    png_bomb(path, 60_000, 60_000)
    _, reason, size = check_image(path, 16, 50_000_000)
    assert size == (0, 0) and "decompression bomb" in reason


def test_16_bit_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16)).save(path)
    out, reason, _ = check_image(path, 16, 10_000)
    assert reason and np.asarray(out)[0, 0].tolist() == [127, 127, 127]


def test_class_left_too_small_is_a_clear_error(tmp_path):
    for i in range(4):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.new("RGB", (20, 20)).save(tmp_path / "a" / f"{i}.png")
    (tmp_path / "b").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "b" / "ok.png")
    (tmp_path / "b" / "bad.jpg").write_text("nope")
    with pytest.raises(PipelineError, match=r"class\(es\) \{'b': 1\}.*not an image"):
        validate_images(tmp_path, min_side=16, max_pixels=10_000)

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline.params import parse_params
from pipeline.sources import copy_class_tree, find_class_root, get_data_source, image_files
from pipeline.sources.local import LocalSource
from pipeline.sources.sample import SampleSource
from pipeline.synthetic import SCENE_CLASSES
from pipeline.utils import PipelineError
from tests.conftest import tiny_params_dict


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _jpeg(path: Path, size=(40, 30), color=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_sample_source_layout_and_mixed_sizes(sample_dataset: Path):
    assert sorted(p.name for p in sample_dataset.iterdir()) == sorted(SCENE_CLASSES)
    sizes = set()
    for cls in SCENE_CLASSES:
        files = sorted((sample_dataset / cls).glob("*.jpg"))
        assert len(files) == 12
        for f in files:
            with Image.open(f) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                assert 40 <= min(im.size) <= 72 and max(im.size) <= 128
                sizes.add(im.size)
    assert len(sizes) > 20  # mixed sizes, like real frames of different videos


def test_sample_source_is_deterministic(tmp_path: Path, sample_dataset: Path):
    params = parse_params(tiny_params_dict())
    (tmp_path / "a").mkdir()
    info = SampleSource(params).fetch(tmp_path / "a")
    assert info["images"] == dict.fromkeys(SCENE_CLASSES, 12)
    assert _digest(tmp_path / "a") == _digest(sample_dataset)
    other = parse_params(tiny_params_dict(seed=8))
    (tmp_path / "b").mkdir()
    SampleSource(other).fetch(tmp_path / "b")
    assert _digest(tmp_path / "b") != _digest(sample_dataset)


def test_find_class_root_in_nested_kaggle_layout(tmp_path: Path):
    root = tmp_path / "download"
    inner = root / "tom_and_jerry" / "tom_and_jerry"
    for cls in ("jerry", "tom", "tom_jerry_0", "tom_jerry_1"):
        _jpeg(inner / cls / "frame0.jpg")
    (root / "ground_truth.csv").write_text("filename,tom,jerry\n")
    (root / "challenges.csv").write_text("x\n")
    assert find_class_root(root) == inner
    assert find_class_root(inner) == inner


def test_find_class_root_errors(tmp_path: Path):
    with pytest.raises(PipelineError, match="does not exist"):
        find_class_root(tmp_path / "missing")
    _jpeg(tmp_path / "flat" / "a.jpg")
    with pytest.raises(PipelineError, match="no class folders"):
        find_class_root(tmp_path / "flat")
    for top in ("one", "two"):
        for cls in ("x", "y"):
            _jpeg(tmp_path / "many" / top / cls / "a.jpg")
    with pytest.raises(PipelineError, match="several folders"):
        find_class_root(tmp_path / "many")


def test_local_source_copies_images_only(tmp_path: Path):
    src = tmp_path / "photos"
    _jpeg(src / "cats" / "a.jpg")
    _jpeg(src / "cats" / "nested" / "b.JPG")
    _jpeg(src / "dogs" / "c.png")
    (src / "dogs" / "notes.csv").write_text("x")
    (src / "dogs" / ".DS_Store").write_bytes(b"\0")
    _jpeg(src / "dogs" / ".hidden.jpg")
    outside = _jpeg(tmp_path / "elsewhere" / "secret.jpg")
    os.symlink(outside, src / "dogs" / "link.jpg")
    _jpeg(src / ".cache" / "x" / "d.jpg")
    out = tmp_path / "out"
    out.mkdir()
    info = LocalSource(parse_params({"data": {"source": "local", "path": str(src)}})).fetch(out)
    assert info["images"] == {"cats": 2, "dogs": 1}
    assert [p.relative_to(out).as_posix() for p in image_files(out)] == [
        "cats/a.jpg",
        "cats/nested/b.JPG",
        "dogs/c.png",
    ]


def test_copy_class_tree_counts(tmp_path: Path):
    for i in range(3):
        _jpeg(tmp_path / "src" / "a" / f"{i}.jpg")
    _jpeg(tmp_path / "src" / "b" / "0.jpg")
    out = tmp_path / "out"
    assert copy_class_tree(tmp_path / "src", out) == {"a": 3, "b": 1}


def test_registry_picks_the_configured_source():
    assert isinstance(get_data_source(parse_params({})), SampleSource)
    local = parse_params({"data": {"source": "local", "path": "/x"}})
    assert isinstance(get_data_source(local), LocalSource)


def test_download_stage_keeps_the_previous_output_on_failure(tmp_path: Path, monkeypatch):
    import yaml

    from pipeline.stages.download_data import main

    _jpeg(tmp_path / "photos" / "only_class" / "a.jpg")
    _jpeg(tmp_path / "photos" / "only_class" / "b.jpg")
    params = tiny_params_dict(data={"source": "local", "path": str(tmp_path / "photos")})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    previous = _jpeg(tmp_path / "data" / "raw" / "old" / "keep.jpg")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="no class folders"):
        main(["--out", "data/raw", "--info", "data_source.json", "--validation", "v.json"])
    assert previous.is_file()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["raw"]

    for name in ("c.jpg", "d.jpg", "e.jpg"):
        _jpeg(tmp_path / "photos" / "second" / name)
    _jpeg(tmp_path / "photos" / "only_class" / "f.jpg")
    main(["--out", "data/raw", "--info", "data_source.json", "--validation", "v.json"])
    assert sorted(p.name for p in (tmp_path / "data/raw").iterdir()) == ["only_class", "second"]
    assert not previous.exists()

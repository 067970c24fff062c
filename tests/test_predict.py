"""``python -m pipeline.tools.predict``: inputs, errors, output formats, agreement with evaluate."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.tools import predict
from pipeline.tools.predict import Prediction, Progress, expand_paths, format_results
from pipeline.utils import read_csv
from tests.e2e import run

CLASSES = ["jerry", "tom", "tom_jerry_0", "tom_jerry_1"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 4-class classifier (32 px) saved as ``.keras``, with its classes.json."""
    from pipeline.models import build_base, build_classifier

    folder = tmp_path_factory.mktemp("model")
    base = build_base("mobilenet_v2", 0.35, 32)
    model = build_classifier(base, "mobilenet_v2", 32, 4, seed=3)
    model.save(folder / "model.keras")
    (folder / "classes.json").write_text(json.dumps(CLASSES))
    return folder


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.jpg"
    text.write_text("not an image")
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    return {"text": text, "empty": empty, "missing": folder / "missing.jpg"}


def test_expand_paths(tmp_path: Path):
    (tmp_path / "imgs/sub").mkdir(parents=True)
    for name in ("imgs/b.jpg", "imgs/sub/a.png", "imgs/.hidden.jpg", "imgs/readme.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    got = expand_paths(
        [
            str(tmp_path / "imgs"),
            str(tmp_path / "imgs/readme.txt"),
            str(tmp_path / "empty"),
            str(tmp_path / "nope.jpg"),
        ]
    )
    assert got == [
        (str(tmp_path / "imgs/b.jpg"), None),
        (str(tmp_path / "imgs/sub/a.png"), None),
        (str(tmp_path / "imgs/readme.txt"), None),  # named explicitly: tried whatever its name
        (str(tmp_path / "empty"), "folder holds no image files"),
        (str(tmp_path / "nope.jpg"), "no such file or folder"),
    ]


def test_top_k_and_formats():
    proba = np.array([0.1, 0.6, 0.05, 0.25], dtype="float32")
    top = predict.top_k(proba, CLASSES, 3)
    assert top == [("tom", 0.6), ("tom_jerry_1", 0.25), ("jerry", 0.1)]
    results = [Prediction("a.jpg", top), Prediction("b.jpg", error="Unknown image file format")]

    table = format_results(results, "table", 3).splitlines()
    assert table[0].split() == ["file", "predicted", "confidence", "top-3"]
    assert table[2].split()[:3] == ["a.jpg", "tom", "0.6000"]
    assert "tom 0.6000, tom_jerry_1 0.2500, jerry 0.1000" in table[2]
    assert table[3].split()[:2] == ["b.jpg", "ERROR"] and "Unknown image" in table[3]

    data = json.loads(format_results(results, "json", 3))
    assert data[0]["predicted"] == "tom" and data[0]["confidence"] == 0.6
    assert data[0]["top_k"][1] == {"class": "tom_jerry_1", "probability": 0.25}
    assert data[1] == {
        "file": "b.jpg",
        "predicted": None,
        "confidence": None,
        "top_k": [],
        "error": "Unknown image file format",
    }

    rows = list(csv.DictReader(io.StringIO(format_results(results, "csv", 3))))
    assert rows[0]["top_k"] == "tom:0.6000;tom_jerry_1:0.2500;jerry:0.1000"
    assert rows[0]["error"] == "" and rows[1]["predicted"] == ""


def test_progress_lines_when_not_a_terminal():
    stream = io.StringIO()
    bar = Progress(10, enabled=True, stream=stream)
    for _ in range(5):
        bar.update(2)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "predict: 2/10 files (20%)" and lines[-1] == "predict: 10/10 files (100%)"
    assert len(lines) == 5
    quiet = io.StringIO()
    Progress(10, enabled=False, stream=quiet).update(10)
    assert quiet.getvalue() == ""


def test_predict_files_decodes_like_the_pipeline(tiny_model: Path, sample_dataset: Path, tmp_path):
    """Same probabilities as the input pipeline of training/evaluation; errors per file."""
    from pipeline.data import Split, make_dataset
    from pipeline.models import load_model

    model = load_model(tiny_model / "model.keras")
    good = sorted(str(p) for p in sample_dataset.rglob("*.jpg"))[::6]  # 8 images, 4 classes
    bad = _bad_files(tmp_path)
    files = [(p, None) for p in good] + expand_paths([str(p) for p in bad.values()])
    results = predict.predict_files(model, CLASSES, files, k=4, batch_size=3, progress=False)

    expected = model.predict(make_dataset(Split(good, [0] * len(good), CLASSES), 32, 64), verbose=0)
    assert [r.file for r in results[: len(good)]] == good
    for r, p in zip(results, expected, strict=False):
        assert r.error is None and r.predicted == CLASSES[int(p.argmax())]
        assert dict(r.top_k) == pytest.approx(dict(zip(CLASSES, p.round(4), strict=True)), abs=2e-4)
    errors = {Path(r.file).name: r.error for r in results[len(good) :]}
    assert "Unknown image file format" in errors["notes.jpg"]
    assert errors["empty.png"] and errors["missing.jpg"] == "no such file or folder"
    assert all(not r.top_k for r in results[len(good) :])


@pytest.mark.parametrize("resize", ["squash", "pad", "crop"])
def test_wide_model_answers_a_video_frame_and_a_portrait_photo(tmp_path: Path, resize: str):
    """A 32x56 model: a 1280x720 frame and a 405x720 portrait image are resized as the prepare
    stage resizes them (``data.resize`` of ``--params``) and averaged with their mirror images
    (``evaluate.tta: flip``)."""
    import tensorflow as tf
    from PIL import Image

    from pipeline.data import decode_image
    from pipeline.models import build_base, build_classifier, load_model, with_tta

    model = build_classifier(build_base("mobilenet_v2", 0.35, (32, 56)), "mobilenet_v2",
                             (32, 56), 4, seed=3)  # fmt: skip
    model.save(tmp_path / "model.keras")
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    rng = np.random.default_rng(1)
    files = []
    for name, (w, h) in {"frame.jpg": (1280, 720), "portrait.png": (405, 720)}.items():
        pixels = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((w, h)).save(tmp_path / name)
        files.append(str(tmp_path / name))
    (tmp_path / "params.yaml").write_text(f"data:\n  resize: {resize}\nevaluate:\n  tta: flip\n")
    out = io.StringIO()
    args = ["--model", str(tmp_path / "model.keras"), "--classes", str(tmp_path / "classes.json"),
            "--params", str(tmp_path / "params.yaml"), "--format", "json", "--top-k",
            "4"]  # fmt: skip
    with contextlib.redirect_stdout(out):
        assert predict.main([*args, *files]) == 0
    results = json.loads(out.getvalue())
    images = np.stack([decode_image(tf.constant(f), (32, 56), resize).numpy() for f in files])
    expected = with_tta(load_model(tmp_path / "model.keras"), "flip").predict(images, verbose=0)
    for r, p in zip(results, expected, strict=True):
        assert r["error"] is None and r["predicted"] == CLASSES[int(p.argmax())]
        got = {t["class"]: t["probability"] for t in r["top_k"]}
        assert got == pytest.approx(dict(zip(CLASSES, p.round(4), strict=True)), abs=2e-4)


def test_exit_status(tiny_model: Path, sample_dataset: Path, tmp_path, capsys):
    model, classes = str(tiny_model / "model.keras"), str(tiny_model / "classes.json")
    image = str(next(sample_dataset.rglob("*.jpg")))
    bad = _bad_files(tmp_path)

    assert predict.main(["--model", model, "--classes", classes, image, str(bad["text"])]) == 0
    out, err = capsys.readouterr()
    assert Path(image).name in out and f"error: {bad['text']}: Unknown image file format" in err

    assert predict.main(["--model", model, "--classes", classes, *map(str, bad.values())]) == 1
    assert "none of 3 file(s) could be classified" in capsys.readouterr().err

    assert predict.main(["--model", str(tmp_path / "none.keras"), "--classes", classes, image]) == 2
    assert "`dvc repro`" in capsys.readouterr().err
    assert predict.main(["--model", model, "--classes", str(tmp_path / "c.json"), image]) == 2
    assert "`dvc repro`" in capsys.readouterr().err
    (tmp_path / "three.json").write_text(json.dumps(CLASSES[:3]))
    assert predict.main(["--model", model, "--classes", str(tmp_path / "three.json"), image]) == 2
    assert "predicts 4 classes but the class names list 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        predict.main(["--top-k", "0", image])
    assert exc.value.code == 2


# --- after one tiny `dvc repro` (the session's `trained_repo`) -------------------------------


@pytest.mark.slow
def test_predictions_match_the_evaluate_stage(trained_repo: Path, tmp_path: Path):
    evaluated = {r["path"]: r for r in read_csv(trained_repo / "reports/predictions.csv")}
    # Copies elsewhere: the result must not depend on where a file is.
    for rel in evaluated:
        shutil.copy(trained_repo / "data/raw" / rel, tmp_path / rel.replace("/", "__"))
    bad = _bad_files(tmp_path / "bad")
    files = [str(tmp_path / rel.replace("/", "__")) for rel in evaluated]
    proc = run(
        ["python", "-m", "pipeline.tools.predict", "--format", "json", *files, str(bad["text"])],
        trained_repo,
    )
    results = json.loads(proc.stdout)
    assert [r["file"] for r in results] == [*files, str(bad["text"])]
    for rel, r in zip(evaluated, results, strict=False):
        assert r["predicted"] == evaluated[rel]["finetune"] and r["error"] is None
        assert r["confidence"] == pytest.approx(
            float(evaluated[rel]["finetune_confidence"]), abs=2e-4
        )
        assert len(r["top_k"]) == 3 and r["top_k"][0]["class"] == r["predicted"]
    assert results[-1]["predicted"] is None and results[-1]["error"]
    assert f"error: {bad['text']}:" in proc.stderr

    nothing = run(
        ["python", "-m", "pipeline.tools.predict", str(bad["missing"])], trained_repo, check=False
    )
    assert nothing.returncode == 1 and "no such file or folder" in nothing.stderr


@pytest.mark.slow
def test_folder_in_batches_with_progress(trained_repo: Path):
    folder = trained_repo / "data/raw/tom"
    proc = run(
        [
            "python",
            "-m",
            "pipeline.tools.predict",
            "--format",
            "csv",
            "--batch-size",
            "5",
            str(folder),
        ],
        trained_repo,
    )
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == len(list(folder.iterdir())) == 12
    assert all(r["predicted"] in CLASSES and not r["error"] for r in rows)
    assert "predict: 12/12 files (100%)" in proc.stderr.splitlines()

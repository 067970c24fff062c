"""End to end: a run made to overfit on purpose is diagnosed as overfitting.

Tiny data (16 images per class, 44 for training), a head with no dropout and no augmentation,
30 transfer epochs at a brisk rate and a patience that never stops them: the head memorises the
training images while val loss climbs. The base is pretrained on 512 generated images so that its
features tell images apart (with the 64 of ``tiny_params_dict`` they barely do, and the head
cannot fit anything).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import tiny_params_dict
from tests.e2e import make_repo, run, stages_run

pytestmark = pytest.mark.slow

NO_AUGMENTATION = {
    "flip": False,
    "rotation": 0.0,
    "zoom": 0.0,
    "translation": 0.0,
    "contrast": 0.0,
    "brightness": 0.0,
}


def overfit_params() -> dict:
    return tiny_params_dict(
        data={"sample": {"images_per_class": 16}},
        pretrain={"images": 512, "epochs": 2},
        model={"dense_units": 64, "dropout": 0.0},
        augmentation=NO_AUGMENTATION,
        transfer={"epochs": 30, "batch_size": 8, "learning_rate": 0.01, "patience": 30},
        # 2 epochs: fewer than diagnosis.min_epochs
        finetune={"epochs": 2, "patience": 2},
    )


def test_overfitting_run_is_diagnosed(tmp_path: Path):
    params = overfit_params()
    repo = make_repo(tmp_path / "repo", params)
    run(["dvc", "repro", "evaluate"], repo)  # evaluate and what it needs, not later stages

    metrics = json.loads((repo / "reports/metrics.json").read_text())
    t = metrics["diagnosis"]["transfer"]
    limits = params["diagnosis"]
    assert t["verdict"] == "overfitting", t
    assert t["epochs"] == 30 and t["stopped_early"] is False
    assert t["train_accuracy"] > t["val_accuracy"]
    assert t["train_val_gap"] > limits["max_gap"] or (
        t["val_loss_rise"] > limits["max_val_loss_rise"] and t["train_loss_change"] < 0
    )
    assert t["best_epoch"] < 30
    f = metrics["diagnosis"]["finetune"]
    assert f["verdict"] == "inconclusive" and f["last_epoch"] == 32 and f["epochs"] == 2

    report = (repo / "reports/diagnosis.md").read_text()
    # (an overfitted head may also lose to the linear probe: ", below the linear-probe baseline")
    assert "**Transfer learning (epochs 1-30): overfitting" in report
    assert "raise `model.dropout` (now 0)" in report
    assert "**Fine-tuning (epochs 31-32): inconclusive" in report
    with Image.open(repo / "reports/figures/learning_curves.png") as im:
        assert im.format == "PNG"

    # DVC shows the verdict of the detailed metrics (a DVC-cached output, not a headline) ...
    show = ["dvc", "metrics", "show", "--json", "reports/metrics.json"]
    shown = json.loads(run(show, repo).stdout)
    data = shown[""]["data"]["reports/metrics.json"]["data"]
    assert data["diagnosis"]["transfer"]["verdict"] == "overfitting"

    # ... and a change of state between commits. Thresholds retrain nothing.
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "overfitting run"], repo)
    params["diagnosis"] = {**params["diagnosis"], "max_gap": 1.0, "max_val_loss_rise": 10.0}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stages_run(run(["dvc", "repro", "evaluate"], repo).stdout) == ["evaluate"]
    after = json.loads((repo / "reports/metrics.json").read_text())
    assert after["diagnosis"]["transfer"]["verdict"] != "overfitting"
    assert {k: v for k, v in after.items() if k != "diagnosis"} == {
        k: v for k, v in metrics.items() if k != "diagnosis"
    }
    diff = json.loads(
        run(["dvc", "metrics", "diff", "--json", "--targets", "reports/metrics.json"], repo).stdout
    )
    change = diff["reports/metrics.json"]["diagnosis.transfer.verdict"]
    assert change["old"] == "overfitting"
    assert change["new"] == after["diagnosis"]["transfer"]["verdict"]

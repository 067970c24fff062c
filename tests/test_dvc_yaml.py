"""dvc.yaml: the run-cache can work, the headline metrics, the model in the registry."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _outs(kinds: tuple[str, ...] = ("outs", "metrics", "plots")) -> dict[str, dict]:
    """``{output path: options}`` of every stage, of the given kinds of output."""
    found = {}
    for spec in DVC_YAML["stages"].values():
        for kind in kinds:
            for out in spec.get(kind, []):
                path, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
                found[path] = options or {}
    return found


def test_no_persistent_output_so_the_run_cache_works():
    # DVC skips the run-cache for any stage with a `persist` output
    assert not [path for path, options in _outs().items() if "persist" in options]
    assert "persist" not in (ROOT / "dvc.yaml").read_text().replace("`persist`", "")


def test_git_tracked_outputs_are_metrics_or_plots_except_the_review_documents():
    """DVC saves no run-cache entry for a stage with a `cache: false` output that is neither a
    metric nor a plot of the stage; only model_card keeps such a document (the model card)."""
    plain = {p: o for p, o in _outs(("outs",)).items() if o.get("cache") is False}
    assert set(plain) == {"reports/model_card.md"}
    runnable_from_cache = [
        name
        for name, spec in DVC_YAML["stages"].items()
        if not any(isinstance(o, dict) and next(iter(o.values())).get("cache") is False
                   for o in spec.get("outs", []))
    ]  # fmt: skip
    assert runnable_from_cache == [
        "download_data", "download_weights", "split", "prepare", "baseline", "transfer",
        "finetune", "evaluate", "export",
    ]  # fmt: skip


def test_only_the_headline_is_a_metric():
    assert "metrics" not in DVC_YAML  # declared by the stage that writes it (run-cache)
    assert _outs(("metrics",)) == {"reports/summary.json": {"cache": False}}
    for detail in ("reports/metrics.json", "reports/export.json", "reports/leakage.json"):
        assert detail in _outs(("outs",)), detail  # still tracked outputs


def test_the_exported_model_is_a_registry_artifact():
    (name, artifact), *others = DVC_YAML["artifacts"].items()
    assert not others and name == "image-classifier"
    assert artifact["type"] == "model" and artifact["desc"] and artifact["labels"]
    assert artifact["path"] in _outs()  # versioned by the export stage
    assert artifact["path"] in DVC_YAML["stages"]["export"]["outs"]

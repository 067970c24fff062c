"""dvc.yaml: the run-cache can work, the headline metrics, the model in the registry."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _outs() -> dict[str, dict]:
    """``{output path: options}`` of every stage."""
    found = {}
    for spec in DVC_YAML["stages"].values():
        for out in spec.get("outs", []):
            path, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            found[path] = options or {}
    return found


def test_no_persistent_output_so_the_run_cache_works():
    # DVC skips the run-cache for any stage with a `persist` output
    assert not [path for path, options in _outs().items() if "persist" in options]
    assert "persist" not in (ROOT / "dvc.yaml").read_text().replace("`persist`", "")


def test_only_the_headline_is_a_metric_and_it_is_an_output():
    assert DVC_YAML["metrics"] == ["reports/summary.json"]
    outs = _outs()
    assert outs["reports/summary.json"] == {"cache": False}
    for detail in ("reports/metrics.json", "reports/export.json", "reports/leakage.json"):
        assert outs[detail] == {"cache": False}, detail  # still tracked, in git


def test_the_exported_model_is_a_registry_artifact():
    (name, artifact), *others = DVC_YAML["artifacts"].items()
    assert not others and name == "image-classifier"
    assert artifact["type"] == "model" and artifact["desc"] and artifact["labels"]
    assert artifact["path"] in _outs()  # versioned by the export stage
    assert artifact["path"] in DVC_YAML["stages"]["export"]["outs"]

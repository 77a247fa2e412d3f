"""The mask rule has one source: the shipped UNet's trained-model record (chosen by cross-validation).

``inference.json`` and ``monai-lgg predict`` read a checkpoint's record, and a model whose record
names no rule (every model a user trains) falls back to the shipped record's, exactly as before the rule moved out
of ``inference.json``. ``train.json`` validates at :data:`monai_lgg.bundle.settings.THRESHOLD` with every
component: the rule is chosen from trained models, so it cannot steer their validation.
"""

from __future__ import annotations

import json

from monai.bundle import ConfigParser

from monai_lgg.bundle.record import (
    SHIPPED_CHECKPOINT,
    read_record,
    recipe_postprocessing,
    sidecar_path,
    trained_min_component_fraction,
    trained_threshold,
)
from monai_lgg.bundle.settings import BUNDLES_DIR, DEFAULTS, THRESHOLD, bundle_info
from monai_lgg.inference.loading import load_network

SHIPPED = BUNDLES_DIR / "unet"


def _parsed(config: str, key: str, **overrides: object) -> object:
    parser = ConfigParser()
    parser.read_config(str(SHIPPED / "configs" / config))
    parser.update({"bundle_root": str(SHIPPED), **overrides})
    return parser.get_parsed_content(key)


def test_the_shipped_record_holds_the_cross_validated_rule():
    record = read_record(SHIPPED_CHECKPOINT)
    results = json.loads((BUNDLES_DIR.parent / record.raw["crossval"]["source"]).read_text())
    assert (record.threshold, record.min_component_fraction) == (0.4, 1.0)
    assert results["ship"] == {"threshold": record.threshold, "min_component_fraction": record.min_component_fraction}
    assert recipe_postprocessing() == (record.threshold, record.min_component_fraction)


def test_inference_json_and_predict_apply_the_shipped_record():
    rule = recipe_postprocessing()
    assert (_parsed("inference.json", "threshold"), _parsed("inference.json", "min_component_fraction")) == rule
    _, info = load_network("unet")
    assert (info.threshold, info.min_component_fraction) == rule


def test_a_model_without_a_rule_follows_the_recipe(tmp_path):
    untrained = tmp_path / "model.pt"  # training writes no rule: none was chosen for this model
    sidecar_path(untrained).write_text(json.dumps({"geometry": "brain"}))
    assert (trained_threshold(untrained), trained_min_component_fraction(untrained)) == recipe_postprocessing()
    assert _parsed("inference.json", "threshold", ckpt_path=str(untrained)) == recipe_postprocessing()[0]
    assert bundle_info(SHIPPED).threshold is None  # inference.json computes it: no second literal to drift
    assert DEFAULTS["threshold"] is None and DEFAULTS["min_component_fraction"] is None


def test_train_json_validates_at_the_validation_threshold_and_records_no_rule():
    assert _parsed("train.json", "threshold") == THRESHOLD
    raw = json.loads((SHIPPED / "configs" / "train.json").read_text())
    assert raw["threshold"] == "$lgg.THRESHOLD" and raw["min_component_fraction"] == 0.0
    assert "postprocessing" not in raw["provenance"]


def test_a_record_rule_wins_and_a_bad_value_falls_back(tmp_path):
    checkpoint = tmp_path / "model.pt"
    sidecar_path(checkpoint).write_text(json.dumps({"postprocessing": {"threshold": 0.3, "min_component_fraction": 0}}))
    assert (trained_threshold(checkpoint), trained_min_component_fraction(checkpoint)) == (0.3, 0.0)
    bad = {"postprocessing": {"threshold": "$0.1", "min_component_fraction": 2}}
    sidecar_path(checkpoint).write_text(json.dumps(bad))
    assert (trained_threshold(checkpoint), trained_min_component_fraction(checkpoint)) == recipe_postprocessing()

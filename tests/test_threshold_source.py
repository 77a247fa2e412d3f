"""The mask threshold has one source: the trained-model record, with one fallback in monai_lgg.bundle.settings.

``train.json`` validates at the fallback (no record exists before training) and writes it into the record;
``inference.json`` and ``monai-lgg predict`` read the record, so for the shipped UNet they apply its calibrated 0.4
and largest-component filter.
"""

from __future__ import annotations

import json

from monai.bundle import ConfigParser

from monai_lgg.bundle.record import read_record, sidecar_path, trained_min_component_fraction, trained_threshold
from monai_lgg.bundle.settings import BUNDLES_DIR, DEFAULTS, THRESHOLD, bundle_info
from monai_lgg.inference.loading import load_network

SHIPPED = BUNDLES_DIR / "unet"


def _parsed(config: str, key: str, **overrides: object) -> object:
    parser = ConfigParser()
    parser.read_config(str(SHIPPED / "configs" / config))
    parser.update({"bundle_root": str(SHIPPED), **overrides})
    return parser.get_parsed_content(key)


def test_inference_json_and_predict_apply_the_shipped_record():
    record = read_record(SHIPPED / "models" / "model.pt")
    assert (record.threshold, record.min_component_fraction) == (0.4, 1.0)  # the shipped model's calibration
    assert _parsed("inference.json", "threshold") == record.threshold
    assert _parsed("inference.json", "min_component_fraction") == record.min_component_fraction
    _, info = load_network("unet")
    assert (info.threshold, info.min_component_fraction) == (record.threshold, record.min_component_fraction)


def test_train_json_validates_at_the_fallback_and_records_it(tmp_path):
    assert DEFAULTS["threshold"] == THRESHOLD == _parsed("train.json", "threshold")
    assert bundle_info(SHIPPED).threshold == THRESHOLD  # inference.json computes it: no second literal to drift
    raw = json.loads((SHIPPED / "configs" / "train.json").read_text())
    assert "postprocessing={'threshold': float(@threshold)" in raw["provenance"]
    untrained = tmp_path / "model.pt"  # no record beside it: the fallback, as train.json validated
    assert trained_threshold(untrained) == THRESHOLD
    assert trained_min_component_fraction(untrained) == DEFAULTS["min_component_fraction"]
    assert _parsed("inference.json", "threshold", ckpt_path=str(untrained)) == THRESHOLD


def test_a_bad_record_value_falls_back(tmp_path):
    checkpoint = tmp_path / "model.pt"
    bad = {"postprocessing": {"threshold": "$0.1", "min_component_fraction": 2}}
    sidecar_path(checkpoint).write_text(json.dumps(bad))
    assert trained_threshold(checkpoint) == THRESHOLD
    assert trained_min_component_fraction(checkpoint) == DEFAULTS["min_component_fraction"]

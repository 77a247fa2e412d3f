"""Score post-processing rules beyond the cross-validation's candidates on out-of-fold probabilities.

    python tools/postprocessing_probe.py <runs>/<cell>/oof [--folds 0,1,2,3,4] [--json_out probe.json]

``tools/crossval_report.py`` chooses a threshold and a minimum component size leave-one-fold-out. Before a
new kind of rule earns a place among those candidates, this probe asks whether it could help at all: it
scores each rule on *all* patients of the folder (pooled, in hindsight, so an upper bound, never a result) and
prints mean / median / minimum per-patient 3D Dice, patients below 0.5 and the false-positive rate. Rules:
a threshold with or without keeping the largest 3D component (the candidates' family), the same followed by
filling enclosed holes slice by slice, and hysteresis (components of p >= low kept where they reach p >= high)
followed by the largest component.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from monai_lgg.errors import LGGInputError, as_list
from monai_lgg.io import write_json
from monai_lgg.studies.crossval import load_out_of_fold, postprocess_mask, score_mask
from monai_lgg.transforms.components import (
    fill_holes_per_slice,
    hysteresis_mask,
    keep_largest_component,
)

Rule = Callable[[np.ndarray], np.ndarray]


def probe_rules() -> dict[str, Rule]:
    """The rules, by name, each mapping uint8 probabilities x255 ``(H, W, D)`` to a bool mask."""
    rules: dict[str, Rule] = {}
    for t in (0.3, 0.4, 0.5):
        rules[f"threshold {t}"] = lambda p, t=t: postprocess_mask(p, t)
        rules[f"threshold {t}, largest"] = lambda p, t=t: postprocess_mask(p, t, 1.0)
        rules[f"threshold {t}, largest, holes filled"] = lambda p, t=t: fill_holes_per_slice(
            postprocess_mask(p, t, 1.0)
        )
    for low in (0.1, 0.2, 0.3):
        rules[f"hysteresis 0.5/{low}, largest"] = lambda p, low=low: keep_largest_component(
            hysteresis_mask(p / 255.0, 0.5, low)
        )
    return rules


def probe(oof_dir: str | Path, folds: Sequence[int] | None = None) -> list[dict]:
    """Pooled per-patient scores of every rule of :func:`probe_rules` on the cases of ``oof_dir``."""
    cases = load_out_of_fold(oof_dir, folds)
    if not cases:
        raise LGGInputError(oof_dir, "holds no <case>.npz out-of-fold predictions (crossval_report.py writes them)")
    rows = []
    for name, rule in probe_rules().items():
        scores = [score_mask(rule(c["prob"]), c["label"]) for c in cases.values()]
        dice = np.array([s["dice"] for s in scores])
        fp, empty = sum(s["fp_slices"] for s in scores), sum(s["empty_slices"] for s in scores)
        rows.append(
            {
                "rule": name,
                "patients": len(dice),
                "mean": float(dice.mean()),
                "median": float(np.median(dice)),
                "min": float(dice.min()),
                "below_0.5": int((dice < 0.5).sum()),
                "fp_rate": fp / empty if empty else float("nan"),
            }
        )
    return rows


def main(oof_dir: str, folds: str | Sequence[int] | None = None, json_out: str | None = None) -> None:
    """Print the table (and write it to ``json_out``)."""
    rows = probe(oof_dir, [int(f) for f in as_list(folds)] if folds is not None else None)
    print(f"{oof_dir}: {rows[0]['patients']} patients, pooled over all of them (in hindsight: an upper bound)")
    print(f"{'rule':42s} {'mean':>6s} {'median':>6s} {'min':>6s} {'<0.5':>4s} {'FP':>6s}")
    for r in rows:
        print(
            f"{r['rule']:42s} {r['mean']:6.3f} {r['median']:6.3f} {r['min']:6.3f} {r['below_0.5']:4d} "
            f"{100 * r['fp_rate']:5.1f}%"
        )
    if json_out:
        write_json(json_out, rows)

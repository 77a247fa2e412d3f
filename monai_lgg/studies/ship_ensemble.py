"""Build the shipped model: the ensemble of a cross-validation's fold models, one float16 state dict.

    python tools/ship_ensemble.py /work/runs/cv_recipe/unet-dicece-adamw bundles/unet/models/model.pt \\
        --crossval docs/results/cv_recipe/crossval/results.json --overwrite

Writes OUTPUT (``monai_lgg.networks.ProbabilityEnsemble`` state dict, weights-only) and its sidecar
``model.json`` (members, every training patient, geometry, the post-processing rule chosen by the
cross-validation and its leave-one-fold-out scores). ``inference.json`` and ``monai-lgg predict`` read the rule from
that record, and models without a rule of their own follow it too
(:func:`monai_lgg.bundle.record.recipe_postprocessing`). An existing OUTPUT is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import json
from pathlib import Path

from monai_lgg.errors import LGGInputError, as_flag, as_list
from monai_lgg.studies.crossval import build_ensemble


def main(cell_dir: str, output: str, crossval: str, folds: str = "0,1,2,3,4", overwrite: bool = False) -> None:
    """Ensemble ``<cell_dir>/fold<f>/models/model.pt`` into ``output``; record ``crossval``'s rule and scores."""
    target = Path(output)
    if target.exists() and not as_flag(overwrite, "overwrite"):
        raise LGGInputError(target, "exists; pass --overwrite to replace it (git checkout restores shipped weights)")
    fold_list = [int(f) for f in as_list(folds)]
    checkpoints = [Path(cell_dir) / f"fold{f}" / "models" / "model.pt" for f in fold_list]
    for path in checkpoints:
        if not path.is_file():
            raise LGGInputError(path, "fold model not found: train every fold first (tools/experiment_grid.py)")
    results = json.loads(Path(crossval).read_text())
    record = {
        "postprocessing": results["ship"],
        "crossval": {
            "source": str(crossval),
            "lofo": results["lofo"],
            "raw": results["raw"],
            "cases": results["cases"],
        },
    }
    path = build_ensemble(checkpoints, target, half=True, record=record)
    print(
        f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {len(checkpoints)} members); "
        f"post-processing recorded: {results['ship']}"
    )

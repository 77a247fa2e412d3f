"""Run an experiment grid (bundles x losses x optimizers over patient folds) and write docs/results/<name>/.

Examples::

    # 5-fold patient-level cross-validation of the UNet bundle (the model card's numbers)
    python tools/experiment_grid.py cv_unet --dataset_dir ../shared/data/lgg/kaggle_3m \\
        --bundles unet --losses dicece --optimizers adamw --folds 0,1,2,3,4 \\
        --overrides "{'epochs': 20, 'spatial_size': [128, 128], 'roi_size': [256, 256], 'batch_size': 16, \\
            'channels_last': True, 'val_interval': 2}" \\
        --budget "CPU: 20 epochs of 128x128 random crops"

    # the seed reports' comparison at a reduced CPU budget, one factor varied at a time
    python tools/experiment_grid.py grid_cpu --dataset_dir ../shared/data/lgg/kaggle_3m --folds 0 \\
        --bundles unet,unetplusplus,transunet,unetr,attentionunet,unext \\
        --losses dice,bce,dicece,logcoshdice,shapeaware --optimizers adam,adamw,sgd \\
        --overrides "{'epochs': 4, 'spatial_size': [128, 128]}"

Runs are written under ``--work_dir`` (default ``runs/<name>``) and skipped when already finished,
so a stopped grid continues where it stopped. See docs/evaluation.md.
"""

from __future__ import annotations

import ast

from monai_lgg.errors import LGGInputError, as_list
from monai_lgg.studies import PROJECT_ROOT
from monai_lgg.studies.experiments import grid_cells, run_grid, write_results

PROJECT = PROJECT_ROOT


def main(
    name: str,
    dataset_dir: str = "synthetic",
    bundles: str = "unet",
    losses: str = "dicece",
    optimizers: str = "adamw",
    folds: str = "0,1,2,3,4",
    design: str = "oneway",
    overrides: str | dict = "{}",
    budget: str = "",
    work_dir: str | None = None,
    output: str | None = None,
    report_cells: int = 1,
) -> None:
    """Train and evaluate every cell of the grid on every fold, then write the results folder.

    Args:
        name: grid name: results go to docs/results/<name>/.
        dataset_dir: kaggle_3m folder, converted data set, or "synthetic".
        bundles: comma-separated bundle names (unet, unetplusplus, transunet, unetr, attentionunet, unext).
        losses: comma-separated loss names (dice, bce, dicece, dicefocal, tversky, logcoshdice, shapeaware).
        optimizers: comma-separated optimizer names (adam, adamw, sgd).
        folds: comma-separated test folds; each cell runs on each.
        design: oneway (the unet/dicece/adamw cell, then one factor varied at a time) or cross (every combination).
        overrides: config overrides shared by every run, a Python dict literal (e.g. "{'epochs': 4}").
        budget: words describing the budget, printed with the table (default: from the overrides).
        work_dir: where runs write (default runs/<name>).
        output: results folder (default docs/results/<name>).
        report_cells: how many of the best cells also get a per-patient report.
    """
    extra = ast.literal_eval(overrides) if isinstance(overrides, str) else dict(overrides)
    if not isinstance(extra, dict):
        raise LGGInputError(None, f"--overrides must be a dict literal, got {overrides!r}")
    fold_list = [int(f) for f in as_list(folds)]
    cells = grid_cells(*([str(v) for v in as_list(x)] for x in (bundles, losses, optimizers)), design)
    record = run_grid(
        name,
        dataset_dir,
        cells,
        fold_list,
        extra,
        work_dir or PROJECT / "runs" / name,
        PROJECT / "bundles",
        budget or f"overrides {extra}",
    )
    print(f"wrote {write_results(record, output or PROJECT / 'docs' / 'results' / name, report_cells)}")

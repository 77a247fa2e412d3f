#!/usr/bin/env python
"""Prepare a monai-lgg bundle and studies for MONAI Label's monaibundle app (see docs/monailabel.md).

    python tools/prepare_monailabel.py BUNDLE APP_DIR [--name lgg_unet] [--dataset data/lgg] [--checkpoint FILE]

Copies BUNDLE to APP_DIR/model/NAME (symlinks resolved, models/ holding only model.pt), checks every
file and key MONAI Label's BundleInferTask reads, and with --dataset writes one 3-channel NIfTI per
case into APP_DIR/studies.
"""

from __future__ import annotations

from pathlib import Path

import fire

from monai_lgg.errors import LGGInputError


def prepare(
    bundle: str,
    app_dir: str,
    name: str = "lgg_unet",
    dataset: str | None = None,
    checkpoint: str | None = None,
    overwrite: bool = False,
) -> None:
    """Copy the bundle into the app, check it, and optionally write the studies."""
    from monai_lgg.inference.monailabel import (
        check_monailabel_bundle,
        prepare_monailabel_bundle,
        write_multichannel_studies,
    )

    target = prepare_monailabel_bundle(bundle, Path(app_dir) / "model" / name, checkpoint, overwrite)
    problems = check_monailabel_bundle(target)
    if problems:
        raise LGGInputError(target, "; ".join(problems))
    print(f"bundle ready for MONAI Label: {target}")
    if dataset:
        studies = write_multichannel_studies(dataset, Path(app_dir) / "studies", overwrite)
        print(f"wrote {len(studies)} studies into {Path(app_dir) / 'studies'}")


if __name__ == "__main__":
    try:
        fire.Fire(prepare)
    except LGGInputError as err:
        raise SystemExit(f"prepare_monailabel: error: {err}") from None

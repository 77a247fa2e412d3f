#!/usr/bin/env python
"""Put a monai-lgg bundle and its studies into a MONAI Label monaibundle app (see docs/monailabel.md).

    python tools/prepare_monailabel.py BUNDLE APP_DIR [--name NAME] [--dataset data/lgg] [--studies DIR]
                                      [--checkpoint FILE] [--overwrite]

BUNDLE is a project bundle (``unet``), a bundle folder, or what ``monai-lgg export_bundle`` wrote (its
folder, whose weights are downloaded through large_files.yml, or its zip). It is copied to
APP_DIR/model/NAME (default: the bundle folder's name; symlinks resolved, models/ holding only
model.pt) and every file and key MONAI Label's BundleInferTask reads is checked. With --dataset (a
converted data set, a folder of NIfTI volumes or one volume), one 3-channel NIfTI per case is written
into --studies (default APP_DIR/studies): the study files MONAI Label serves, which the bundle accepts
(the converted imagesTr hold one channel per file). Studies keep the input's storage (any orientation: the
bundle reorients them and returns masks on their own grid); a volume whose slices are not close to axial is
refused here.
"""

from __future__ import annotations

from pathlib import Path

import fire

from monai_lgg.errors import LGGInputError, as_flag


def prepare(
    bundle: str,
    app_dir: str,
    name: str | None = None,
    dataset: str | None = None,
    studies: str | None = None,
    checkpoint: str | None = None,
    overwrite: bool = False,
) -> None:
    """Copy the bundle into the app, check it, and optionally write the studies."""
    from monai_lgg.inference.loading import resolve_bundle
    from monai_lgg.inference.monailabel import (
        check_monailabel_bundle,
        prepare_monailabel_bundle,
        write_multichannel_studies,
    )

    overwrite = as_flag(overwrite, "overwrite")  # fire passes --overwrite false as the text 'false'
    name = name or resolve_bundle(bundle).name
    target = prepare_monailabel_bundle(bundle, Path(app_dir) / "model" / name, checkpoint, overwrite)
    problems = check_monailabel_bundle(target)
    if problems:
        raise LGGInputError(target, "; ".join(problems))
    print(f"bundle ready for MONAI Label: {target} (serve it with --conf models {name})")
    if dataset:
        folder = Path(studies) if studies else Path(app_dir) / "studies"
        written = write_multichannel_studies(dataset, folder, overwrite)
        print(f"wrote {len(written)} studies into {folder}")


if __name__ == "__main__":
    try:
        fire.Fire(prepare)
    except LGGInputError as err:
        raise SystemExit(f"prepare_monailabel: error: {err}") from None

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

from monai_lgg.errors import run_tool
from monai_lgg.inference.monailabel import prepare_app

if __name__ == "__main__":
    run_tool(prepare_app)

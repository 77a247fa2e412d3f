"""Serve a monai-lgg bundle with MONAI Label's ``monaibundle`` app.

MONAI Label's ``BundleInferTask`` (monailabel 0.8.5, ``monailabel/tasks/infer/bundle.py``) reads,
from ``<app>/model/<name>/``:

* ``configs/inference.json`` (or ``.yaml``), parsed with ``bundle_root`` set to the folder;
* ``models/model.pt`` (else ``models/model.ts``), and every ``models/*.pt`` as choices of the
  ``model_filename`` option, the shortest name being the default; it loads the file with
  ``torch.load``, takes ``checkpoint.get("model", checkpoint)`` and calls
  ``load_state_dict(strict=False)``;
* ``configs/metadata.json``: the first key of ``network_data_format.inputs`` (image key) and of
  ``outputs`` (prediction key), the output ``channel_def`` (label names; ``background`` dropped), the
  input ``spatial_shape`` (its length is the reported dimension), ``description`` and ``version``;
* config keys ``network_def`` (instantiated), ``preprocessing`` / ``pre_transforms`` (a ``Compose`` or
  list; each ``LoadImaged`` gets ``image_only=False`` and is wrapped), ``inferer``,
  ``postprocessing`` / ``post_transforms`` (``SaveImaged`` is dropped, MONAI Label's ``Restored`` is
  appended), ``device`` (replaced by the request's device) and optional ``displayable_configs``.

The studies MONAI Label serves are single files, so a case must be one 3-channel NIfTI
(rows x columns x slices x 3): :func:`write_multichannel_studies` makes them from any NIfTI input the registry of
input forms reads (:mod:`monai_lgg.inference.formats`: a converted data set, whose ``imagesTr`` hold one channel per
file, which the bundle refuses; a folder of volumes; one volume). A study may be stored in any orientation: the
bundle's preprocessing reorients it losslessly to the model's frame, as ``monai-lgg predict`` does, and its
postprocessing maps the mask back onto the study's grid before MONAI Label's ``Restored`` gives it the study's
affine (:mod:`monai_lgg.transforms.orientation`); a study whose slices are not close to axial is refused when the
studies are written.

:func:`prepare_monailabel_bundle` takes a project bundle, the Model Zoo export of one
(``monai-lgg export_bundle``: its weights come through ``large_files.yml``) or the export's zip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.bundle.settings import resolve_bundle
from monai_lgg.errors import LGGInputError, as_flag
from monai_lgg.inference.formats import find_cases
from monai_lgg.inference.orientation import plan_reorientation
from monai_lgg.io import atomic_dir, atomic_path

__all__ = [
    "prepare_monailabel_bundle",
    "write_multichannel_studies",
    "check_monailabel_bundle",
    "monailabel_labels",
    "prepare_app",
]

BUNDLE_PARTS = ("configs", "docs", "LICENSE")


def prepare_monailabel_bundle(
    bundle: str | Path, target: str | Path, checkpoint: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Copy a bundle for ``<app>/model/<name>``: symlinks resolved, ``models/`` holding only ``model.pt`` (and its
    record).

    Only ``model.pt`` is copied because MONAI Label offers every ``models/*.pt`` and picks the
    shortest name by default: a training checkpoint such as ``last.pt`` would be chosen and loaded
    with ``strict=False``, i.e. silently with random weights.

    Args:
        bundle: a bundle folder, its zip, a project bundle name, or a Model Zoo export without weights
            (they are then downloaded through its ``large_files.yml``, hash-checked, by MONAI).
        target: ``<app>/model/<name>``.
        checkpoint: weights to serve instead of the bundle's.
        overwrite: replace an existing ``target``.
    """
    root = resolve_bundle(bundle)
    large_files = root / "large_files.yml"
    checkpoint = Path(checkpoint) if checkpoint else root / "models" / "model.pt"
    if not checkpoint.is_file() and not large_files.is_file():
        raise LGGInputError(checkpoint, "checkpoint not found (train the bundle first, or pass --checkpoint)")
    target = Path(target)
    if target.exists() and not overwrite:
        raise LGGInputError(target, "output already exists (pass --overwrite to replace it)")
    with atomic_dir(target) as tmp:
        for part in BUNDLE_PARTS:
            source = root / part
            if source.is_dir():
                shutil.copytree(source, tmp / part, symlinks=False)
            elif source.is_file():
                shutil.copy2(source, tmp / part)
        (tmp / "models").mkdir()
        if checkpoint.is_file():
            shutil.copy2(checkpoint, tmp / "models" / "model.pt")
        else:
            _download_weights(large_files, tmp)
        # the weights' record: the configs read what the checkpoint holds from it (channels, ensemble members);
        # without it MONAI Label would build another network and load the weights with strict=False
        record = sidecar_path(checkpoint)
        if record.is_file():
            shutil.copy2(record, tmp / "models" / "model.json")
    target.chmod(0o755)  # readable by a server running as another user
    return target


def _download_weights(large_files: Path, bundle: Path) -> None:
    """``models/model.pt`` of a Model Zoo export, fetched as its ``large_files.yml`` says (hash-checked by MONAI)."""
    from monai.bundle import download_large_files

    shutil.copy2(large_files, bundle / large_files.name)
    try:
        download_large_files(bundle_path=str(bundle))
    except Exception as err:  # URL, network and hash errors have many types
        raise LGGInputError(large_files, f"the weights cannot be downloaded ({type(err).__name__}: {err})") from None
    finally:
        (bundle / large_files.name).unlink(missing_ok=True)
    if not (bundle / "models" / "model.pt").is_file():
        raise LGGInputError(large_files, "does not provide models/model.pt")


def write_multichannel_studies(source: str | Path, studies: str | Path, overwrite: bool = False) -> list[Path]:
    """Write each volume case of ``source`` as one ``<case>.nii.gz`` (rows x columns x slices x 3, uint8), stored
    as the input is (its orientation and affine).

    Args:
        source: a converted data set, a folder of NIfTI volumes or one volume.
        studies: the MONAI Label studies folder to write.
        overwrite: replace existing files.

    Raises:
        LGGInputError: no NIfTI volume, an existing study, or a volume whose slices are not close to axial (the
            bundle would refuse it at every request).
    """
    cases = [c for c in find_cases(source) if c.form == "volume"]
    if not cases:
        raise LGGInputError(source, "holds no NIfTI volumes (convert the Kaggle slices first: monai-lgg convert)")
    written = []
    for case in cases:
        target = Path(studies) / f"{case.name}.nii.gz"
        if target.exists() and not overwrite:
            raise LGGInputError(target, "output exists (pass --overwrite to replace it)")
        images = [nib.load(f) for f in case.files]
        # what the bundle (and predict) refuses is refused here, once, not in the server's log at each request
        plan_reorientation(case.files[0], images[0].affine, images[0].shape)
        data = (
            np.stack([np.asanyarray(i.dataobj) for i in images], axis=-1)
            if len(images) > 1
            else np.asanyarray(images[0].dataobj)
        )
        stacked = nib.Nifti1Image(data, images[0].affine)
        stacked.header.set_xyzt_units("mm")
        with atomic_path(target) as tmp:
            nib.save(stacked, tmp)
        written.append(target)
    return written


def monailabel_labels(metadata: dict) -> dict[str, int]:
    """The ``labels`` MONAI Label derives from ``metadata.json`` (output ``channel_def``, background dropped)."""
    outputs = metadata["network_data_format"]["outputs"]
    channels = next(iter(outputs.values())).get("channel_def", {})
    return {name.lower(): int(index) for index, name in channels.items() if name.lower() != "background"}


def check_monailabel_bundle(bundle: str | Path) -> list[str]:
    """Problems that would stop or mislead MONAI Label's ``BundleInferTask`` on this bundle folder.

    Checks every file and key listed in the module docstring, instantiating ``network_def``,
    ``preprocessing``, ``inferer`` and ``postprocessing`` the way ``BundleInferTask`` does
    (``bundle_root`` overridden). An empty list means the bundle is servable.
    """
    from monai.bundle import ConfigParser
    from monai.transforms import Compose, LoadImaged

    root = Path(bundle)
    problems: list[str] = []
    config_file = root / "configs" / "inference.json"
    if not config_file.is_file():
        return [f"{config_file}: missing (BundleInferTask ignores bundles without configs/inference.json)"]
    models = sorted(p.name for p in (root / "models").glob("*.pt"))
    if "model.pt" not in models and not (root / "models" / "model.ts").is_file():
        problems.append(f"{root / 'models'}: neither model.pt nor model.ts")
    if sorted(models, key=len)[:1] != ["model.pt"] and "model.pt" in models:
        problems.append(f"{root / 'models'}: {models} - MONAI Label would load {sorted(models, key=len)[0]} by default")
    metadata_file = root / "configs" / "metadata.json"
    try:
        metadata = json.loads(metadata_file.read_text())
        formats = metadata["network_data_format"]
        image_key, image = next(iter(formats["inputs"].items()))
        pred_key, _ = next(iter(formats["outputs"].items()))
        if not image.get("spatial_shape"):
            problems.append(f"{metadata_file}: input has no spatial_shape")
        if not monailabel_labels(metadata):
            problems.append(f"{metadata_file}: output channel_def names no label")
    except (OSError, KeyError, StopIteration, ValueError) as err:
        return problems + [f"{metadata_file}: unusable by MONAI Label ({type(err).__name__}: {err})"]
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.config.update({"bundle_root": str(root)})
    for key in ("device", "network_def", "preprocessing", "inferer", "postprocessing"):
        if key not in parser.config:
            problems.append(f"{config_file}: no '{key}' key")
            continue
        try:
            value = parser.get_parsed_content(key, instantiate=True)
        except Exception as err:
            problems.append(f"{config_file}: '{key}' cannot be instantiated ({type(err).__name__}: {err})")
            continue
        if key == "preprocessing":
            transforms = list(value.transforms) if isinstance(value, Compose) else list(value)
            if not any(isinstance(t, LoadImaged) and image_key in t.keys for t in transforms):
                problems.append(f"{config_file}: preprocessing has no LoadImaged of '{image_key}'")
        if key == "postprocessing" and not isinstance(value, Compose | list):
            problems.append(f"{config_file}: postprocessing is not a Compose or list")
    if pred_key != "pred" or image_key != "image":
        problems.append(f"{metadata_file}: keys {image_key!r}/{pred_key!r}, the configs use 'image'/'pred'")
    return problems


def prepare_app(
    bundle: str,
    app_dir: str,
    name: str | None = None,
    dataset: str | None = None,
    studies: str | None = None,
    checkpoint: str | None = None,
    overwrite: bool = False,
) -> None:
    """Put a bundle and, with ``dataset``, its studies into a MONAI Label ``monaibundle`` app.

    The command ``tools/prepare_monailabel.py`` (docs/monailabel.md).

    Args:
        bundle: a project bundle (``unet``), a bundle folder, or what ``monai-lgg export_bundle`` wrote.
        app_dir: the app; the bundle goes to ``<app_dir>/model/<name>`` and is checked key by key.
        name: the bundle's name in the app (default: the bundle folder's name).
        dataset: a converted data set, a folder of NIfTI volumes or one volume: one 3-channel study per case.
        studies: where the studies go (default ``<app_dir>/studies``).
        checkpoint: weights to serve instead of the bundle's ``models/model.pt``.
        overwrite: replace an existing bundle copy and studies.

    Raises:
        LGGInputError: a bad bundle, data set or option, or a copy MONAI Label would not serve.
    """
    overwrite = as_flag(overwrite, "overwrite")  # the command line passes --overwrite false as the text 'false'
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

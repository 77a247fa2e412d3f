"""Segment the same converted patients stored in other orientations and grids, and score each in world space.

For every patient of a ``monai-lgg convert`` output (``PLS`` storage) the volume and its reference mask are also
stored as RAS, LPS, sagittal (``SAR``) and coronal (``RSA``) arrays with unchanged world coordinates (a lossless
axis permutation/flip), and resampled in-plane to 0.5 mm (512 x 512, linear) and cropped to 240 x 240 at 1 mm.
Each is segmented with ``predict`` (its defaults); the masks of the reoriented copies are mapped back onto the
converted grid with their affines, the resampled ones are scored on their own grid against the reference mask
resampled the same way. Prints a Markdown table (docs/inputs.md).

Usage::

    python tools/orientation_check.py CONVERTED_DIR WORK_DIR [--cases N] [--bundle unet]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from scipy.ndimage import affine_transform

STORAGES = {"converted (PLS)": None, "RAS": "RAS", "LPS": "LPS", "sagittal (SAR)": "SAR", "coronal (RSA)": "RSA"}


def reorient(image: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    """The same voxels stored with axis codes ``codes``; world coordinates unchanged."""
    transform = ornt_transform(io_orientation(image.affine), axcodes2ornt(tuple(codes)))
    data = apply_orientation(np.asanyarray(image.dataobj), transform)
    return nib.Nifti1Image(data, image.affine @ inv_ornt_aff(transform, image.shape), image.header)


def to_grid(image: nib.Nifti1Image, target: nib.Nifti1Image) -> np.ndarray:
    """``image``'s array on ``target``'s grid, when the two differ only by an axis permutation/flip."""
    transform = ornt_transform(io_orientation(image.affine), io_orientation(target.affine))
    data = apply_orientation(np.asanyarray(image.dataobj), transform)
    assert np.allclose(image.affine @ inv_ornt_aff(transform, image.shape), target.affine, atol=1e-4)
    return data


def resample_in_plane(image: nib.Nifti1Image, factor: float, shape: tuple[int, int], order: int) -> nib.Nifti1Image:
    """In-plane (rows, columns) resampling by ``factor`` (2: half the pixel size), centred, onto ``shape``.

    Output pixel ``i`` samples input coordinate ``c_in + (i - c_out) / factor``; the affine is composed with that
    mapping, so world coordinates stay right.
    """
    data = np.asanyarray(image.dataobj).astype(np.float32)
    rows, cols = image.shape[:2]
    matrix = np.diag([1 / factor, 1 / factor, 1.0])
    offset = np.array([(rows - 1) / 2 - (shape[0] - 1) / 2 / factor, (cols - 1) / 2 - (shape[1] - 1) / 2 / factor, 0])
    out = affine_transform(data, matrix, offset, output_shape=(*shape, image.shape[2]), order=order)
    index_map = np.eye(4)
    index_map[:3, :3], index_map[:3, 3] = matrix, offset
    affine = image.affine @ index_map
    result = nib.Nifti1Image(out, affine)
    result.set_qform(affine, code=1)
    result.set_sform(affine, code=1)
    return result


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def variants(converted: Path, case: str) -> dict[str, tuple[list[nib.Nifti1Image], nib.Nifti1Image]]:
    """Every storage/grid of one case: its modality images and its reference mask."""
    images = [nib.load(p) for p in sorted((converted / "imagesTr").glob(f"{case}_000?.nii.gz"))]
    label = nib.load(converted / "labelsTr" / f"{case}.nii.gz")
    out = {}
    for name, codes in STORAGES.items():
        out[name] = ([m if codes is None else reorient(m, codes) for m in images], label)
    for name, factor, shape in (("in-plane 0.5 mm (512x512)", 2.0, (512, 512)), ("1 mm on 240x240", 1.0, (240, 240))):
        resampled = [resample_in_plane(m, factor, shape, 1) for m in images]
        reference = resample_in_plane(label, factor, shape, 1)
        mask = (np.asarray(reference.dataobj) > 0.5 * np.asarray(label.dataobj).max()).astype(np.uint8)
        out[name] = (resampled, nib.Nifti1Image(mask, reference.affine))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("converted", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--bundle", default="unet")
    args = parser.parse_args(argv)
    from monai_lgg.inference.predict import predict

    cases = sorted(p.name for p in (args.converted / "labelsTr").glob("*.nii.gz"))[: args.cases]
    cases = [c.removesuffix(".nii.gz") for c in cases]
    table: dict[str, dict[str, float]] = {}
    for case in cases:
        label = nib.load(args.converted / "labelsTr" / f"{case}.nii.gz")
        for name, (images, reference) in variants(args.converted, case).items():
            folder = args.work / "in" / name.split()[0] / case
            folder.mkdir(parents=True, exist_ok=True)
            for k, image in enumerate(images):
                nib.save(image, folder / f"{case}_{k:04d}.nii.gz")
            out = args.work / "out" / name.split()[0] / case
            predict(folder, out, bundle=args.bundle, progress=False, overwrite=True)
            mask = nib.load(out / f"{case}.nii.gz")
            assert mask.shape == images[0].shape and np.allclose(mask.affine, images[0].affine)
            if name in STORAGES:
                score = dice(to_grid(mask, label), np.asarray(label.dataobj))
            else:
                score = dice(np.asarray(mask.dataobj), np.asarray(reference.dataobj))
            table.setdefault(name, {})[case] = round(score, 4)
            print(f"{case} {name}: {score:.4f}", file=sys.stderr)
    print("| input | " + " | ".join(cases) + " |")
    print("|---" * (len(cases) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in cases) + " |")
    (args.work / "orientation_dice.json").write_text(json.dumps(table, indent=1))
    return 0

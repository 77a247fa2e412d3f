"""A small deterministic LGG-like data set in the Kaggle ``kaggle_3m`` layout.

Brain-like phantoms: an elliptical head with a bright skull rim, grey/white-matter texture and dark
ventricles; a FLAIR-bright lesion (an off-centre ellipsoid, so a flipped or transposed pipeline
shows) spans a run of slices, and the other slices have empty masks. It is the embedded default of
the quick start and of the tests, and needs no download.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter

from monai_lgg.io import atomic_dir

__all__ = ["synthetic_case_ids", "make_synthetic_case", "generate_synthetic_kaggle"]

_INSTITUTIONS = ("SA", "SB")


def synthetic_case_ids(num_patients: int) -> list[str]:
    """Case folder names following the TCGA pattern, alternating two fake institution codes."""
    return [f"TCGA_{_INSTITUTIONS[i % 2]}_A{i + 1:03d}_2001{(i % 12) + 1:02d}01" for i in range(num_patients)]


def make_synthetic_case(
    num_slices: int = 24, size: int = 256, seed: int = 0, lesion: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic patient.

    Args:
        num_slices: slices (inferior to superior).
        size: rows = columns.
        seed: the case's seed (everything is derived from it).
        lesion: put a lesion in the volume.

    Returns:
        ``image`` (slices, size, size, 3) uint8 (pre-contrast, FLAIR, post-contrast) and
        ``mask`` (slices, size, size) uint8 {0, 255}.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    z = (np.arange(num_slices, dtype=np.float32) + 0.5) / num_slices
    centre = np.array([0.5, 0.5]) + rng.uniform(-0.03, 0.03, 2)
    axes = np.array([0.38, 0.31]) * rng.uniform(0.9, 1.1, 2)  # anterior-posterior longer than left-right
    lesion_centre = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.4), rng.uniform(0.3, 0.45)])
    lesion_axes = np.array([rng.uniform(0.15, 0.3), rng.uniform(0.06, 0.12), rng.uniform(0.06, 0.12)])
    texture = gaussian_filter(rng.standard_normal((num_slices, size, size)).astype(np.float32), (0.5, 4, 4))
    texture /= texture.std() + 1e-6

    image = np.zeros((num_slices, size, size, 3), dtype=np.float32)
    mask = np.zeros((num_slices, size, size), dtype=np.uint8)
    for k in range(num_slices):
        scale = np.sqrt(max(1e-3, 1.0 - ((z[k] - 0.45) / 0.6) ** 2))  # head narrows towards both ends
        r = np.sqrt(((rows - centre[0]) / (axes[0] * scale)) ** 2 + ((cols - centre[1]) / (axes[1] * scale)) ** 2)
        brain, skull = r < 0.9, (r >= 0.9) & (r < 1.0)
        ventricle = (
            (np.abs(cols - centre[1]) < 0.04 * scale) & (np.abs(rows - centre[0]) < 0.12 * scale) & (z[k] > 0.35)
        )
        base = np.where(brain, 1.0, 0.0) + 0.15 * texture[k] * brain
        image[k, ..., 0] = 95 * base + 160 * skull
        image[k, ..., 1] = 85 * base - 50 * (ventricle & brain) + 120 * skull
        image[k, ..., 2] = 100 * base + 170 * skull
        if lesion:
            d = ((z[k] - lesion_centre[0]) / lesion_axes[0]) ** 2
            lesion_k = (
                ((cols - lesion_centre[1]) / lesion_axes[1]) ** 2
                + ((rows - lesion_centre[2]) / lesion_axes[2]) ** 2
                + d
                < 1
            ) & brain
            mask[k] = lesion_k * 255
            image[k, ..., 1] += 95 * lesion_k  # FLAIR abnormality
            image[k, ..., 0] -= 15 * lesion_k
    image += rng.normal(0, 3, image.shape).astype(np.float32) * (image > 0)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def generate_synthetic_kaggle(
    output: str | Path, num_patients: int = 8, num_slices: int = 24, size: int = 256, seed: int = 0
) -> Path:
    """Write a synthetic data set in the Kaggle ``kaggle_3m`` layout (uncompressed TIFFs, like Kaggle's).

    The folder is built under a temporary name and renamed, so it is either complete or absent;
    an existing ``output`` is replaced.

    Args:
        output: the folder to write (``<output>/TCGA_.../TCGA_..._<n>.tif`` and ``data.csv``).
        num_patients: patients (cases).
        num_slices: slices per patient; patients get a few more or fewer around it.
        size: slice rows = columns.
        seed: global seed; the same arguments always give the same pixels.

    Returns:
        ``output``.
    """
    output = Path(output)
    with atomic_dir(output) as tmp:
        rows = []
        for index, case_id in enumerate(synthetic_case_ids(num_patients)):
            slices = max(4, num_slices + (index % 3) - 1)
            image, mask = make_synthetic_case(slices, size, seed=seed * 1000 + index)
            folder = tmp / case_id
            folder.mkdir()
            for k in range(slices):
                tifffile.imwrite(folder / f"{case_id}_{k + 1}.tif", image[k], photometric="rgb")
                tifffile.imwrite(folder / f"{case_id}_{k + 1}_mask.tif", mask[k])
            rows.append(
                {
                    "Patient": "_".join(case_id.split("_")[:3]),
                    "histological_type": 1 + index % 3,
                    "gender": 1 + index % 2,
                }
            )
        with open(tmp / "data.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return output

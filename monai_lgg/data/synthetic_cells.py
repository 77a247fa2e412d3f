"""A small seeded 3-class cell data set: background 0, cell body 1, nucleus 2 (like the Jurkat data of the seed report).

Each image holds a few roundish cells on a bright, unevenly lit background, some of them touching (their
shared border is the line where one cell's ellipse takes over from the other's), each with one nucleus of
varying size and position. Images are RGB (stain-like colours: pink cytoplasm, purple nucleus) or grey, with
per-cell intensity changes, texture, blur and noise, so the classes are not separable by colour alone at the
borders. The set is written like any user data: an ``images/`` + ``masks/`` folder of PNGs (masks hold the
class indices 0, 1, 2), then converted with :func:`monai_lgg.data.folders.convert_folders`, as
:mod:`monai_lgg.data.synthetic` writes the Kaggle layout and converts it with ``convert_kaggle``.

Example::

    from monai_lgg.data.synthetic_cells import synthetic_cells_dataset

    converted = synthetic_cells_dataset("/tmp/cells")  # /tmp/cells/converted/datalist.json
    # python -m monai.bundle run --config_file bundles/unet/configs/train.json \\
    #     --dataset_dir /tmp/cells/converted --out_channels 3 --spatial_size "[128, 128]"
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from monai_lgg.errors import LGGInputError
from monai_lgg.io import atomic_dir

__all__ = ["CELL_CLASSES", "make_cell_image", "generate_synthetic_cells", "synthetic_cells_dataset"]

CELL_CLASSES = ("background", "cell", "nucleus")
# RGB colours of background, cytoplasm and nucleus (an H&E-like stain); grey images use their mean.
_COLOURS = np.array([[232.0, 226.0, 236.0], [214.0, 140.0, 186.0], [112.0, 66.0, 150.0]], dtype=np.float32)


def _place_cells(rng: np.random.Generator, size: int, count: int, touching: float) -> list[dict]:
    """Cell ellipses (centre, radii, angle) in pixels; with probability ``touching`` a cell is put against another."""
    scale = size / 128
    cells: list[dict] = []
    for _ in range(count):
        radius = rng.uniform(9, 16) * scale
        radii = np.array([radius, radius * rng.uniform(0.75, 1.0)])
        if cells and rng.random() < touching:
            other = cells[rng.integers(len(cells))]
            angle = rng.uniform(0, 2 * np.pi)
            distance = (other["radii"].mean() + radius) * rng.uniform(0.8, 0.95)  # slightly pressed together
            centre = other["centre"] + distance * np.array([np.sin(angle), np.cos(angle)])
        else:
            centre = rng.uniform(radius, size - radius, 2)
        cells.append({"centre": centre, "radii": radii, "angle": rng.uniform(0, np.pi)})
    return cells


def _ellipse_distance(rows: np.ndarray, cols: np.ndarray, centre, radii, angle: float) -> np.ndarray:
    """Normalised elliptical distance: < 1 inside the ellipse."""
    dr, dc = rows - centre[0], cols - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dr + sin * dc, -sin * dr + cos * dc
    return np.sqrt((u / radii[0]) ** 2 + (v / radii[1]) ** 2)


def make_cell_image(
    size: int = 128, seed: int = 0, channels: int = 3, num_cells: tuple[int, int] = (7, 13), touching: float = 0.45
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic microscopy image and its 3-class mask.

    Args:
        size: rows = columns.
        seed: the image's seed (everything is derived from it).
        channels: 3 (RGB) or 1 (grey).
        num_cells: range of the number of cells (inclusive), for a 128 x 128 image (scaled with the area).
        touching: probability that a cell is placed against a previous one.

    Returns:
        ``image`` (size, size, channels) uint8 and ``mask`` (size, size) uint8 with 0 background,
        1 cell body (cytoplasm), 2 nucleus.
    """
    if channels not in (1, 3):
        raise LGGInputError(None, f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    area = (size / 128) ** 2
    count = int(rng.integers(round(num_cells[0] * area), round(num_cells[1] * area) + 1))
    cells = _place_cells(rng, size, max(count, 1), touching)

    # each pixel belongs to the cell whose ellipse it is deepest in: touching cells share a straight-ish border
    distance = np.stack([_ellipse_distance(rows, cols, c["centre"], c["radii"], c["angle"]) for c in cells])
    owner = distance.argmin(0)
    inside = distance.min(0) < 1.0
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[inside] = 1
    shade = np.ones((size, size), dtype=np.float32)  # per-cell stain strength
    for i, cell in enumerate(cells):
        own = inside & (owner == i)
        offset = rng.uniform(-0.25, 0.25, 2) * cell["radii"]
        fraction = rng.uniform(0.3, 0.65)  # nucleus size varies from cell to cell
        radii = cell["radii"] * fraction * rng.uniform(0.85, 1.0, 2)
        nucleus = _ellipse_distance(rows, cols, cell["centre"] + offset, radii, rng.uniform(0, np.pi)) < 1.0
        mask[own & nucleus] = 2
        shade[own] = rng.uniform(0.7, 1.15)

    colours = _COLOURS if channels == 3 else _COLOURS.mean(1, keepdims=True)
    image = colours[mask].astype(np.float32)  # (H, W, C)
    background = colours[0]
    image = background + (image - background) * shade[..., None]  # weaker or stronger stain per cell
    membrane = inside & (np.sort(distance, 0)[1] - distance.min(0) < 0.08) if len(cells) > 1 else np.zeros_like(inside)
    image[membrane | (inside & (distance.min(0) > 0.9))] *= 0.85  # darker cell outlines and shared borders
    texture = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 1.5)
    image *= 1 + 0.12 * (texture / (texture.std() + 1e-6))[..., None] * inside[..., None]
    light = 1 + 0.08 * ((rows - rng.uniform(0, size)) / size)[..., None]  # uneven illumination
    image = gaussian_filter(image * light, (0.8, 0.8, 0))  # optics blur
    image += rng.normal(0, 7, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def generate_synthetic_cells(
    output: str | Path, num_images: int = 24, size: int = 128, seed: int = 0, channels: int = 3
) -> Path:
    """Write the cell images as ``images/cell_NNN.png`` + ``masks/cell_NNN.png`` (class indices 0, 1, 2).

    The folder is built under a temporary name and renamed, so it is either complete or absent; an
    existing ``output`` is replaced. The same arguments always give the same pixels.

    Args:
        output: the folder to write.
        num_images: images (each becomes one case of the converted set).
        size: rows = columns of every image.
        seed: global seed.
        channels: 3 (RGB PNGs) or 1 (grey PNGs).

    Returns:
        ``output``.
    """
    if num_images < 1:
        raise LGGInputError(None, f"num_images must be at least 1, got {num_images}")
    output = Path(output)
    with atomic_dir(output) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for index in range(num_images):
            image, mask = make_cell_image(size, seed=seed * 100_003 + index, channels=channels)
            name = f"cell_{index + 1:03d}.png"
            pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if channels == 3 else image[..., 0]
            if not (cv2.imwrite(str(tmp / "images" / name), pixels) and cv2.imwrite(str(tmp / "masks" / name), mask)):
                raise OSError(f"cannot write {tmp / name}")
    return output


def synthetic_cells_dataset(
    output: str | Path, num_images: int = 24, size: int = 128, seed: int = 0, channels: int = 3, num_folds: int = 5
) -> Path:
    """Generate the cell set into ``<output>/folders`` and convert it into ``<output>/converted``.

    The converted folder has the format every bundle trains on (one-slice NIfTI volumes per image,
    ``dataset.json`` with ``labels`` {background: 0, cell: 1, nucleus: 2}, ``datalist.json`` with folds);
    train with ``--out_channels 3 --spatial_size "[128, 128]"`` (and ``--in_channels 1`` for grey images).

    Args:
        output: parent folder of both outputs (replaced if they exist).
        num_images: images, i.e. cases.
        size: rows = columns.
        seed: global seed (also of the fold assignment).
        channels: 3 (RGB) or 1 (grey).
        num_folds: folds of the converted set (test = fold f, validation = fold f + 1, train = the rest).

    Returns:
        the converted folder (holding ``datalist.json``).
    """
    from monai_lgg.data.folders import convert_folders

    output = Path(output)
    folders = generate_synthetic_cells(output / "folders", num_images, size, seed, channels)
    result = convert_folders(
        folders,
        output / "converted",
        mask_mode="labels",
        class_names=list(CELL_CLASSES),
        num_folds=num_folds,
        seed=seed,
        name="synthetic-cells",
        overwrite=True,
        progress=False,
    )
    if result.output is None:
        first = result.report["errors"][0]
        raise LGGInputError(first["file"], first["problem"])
    return Path(result.output)

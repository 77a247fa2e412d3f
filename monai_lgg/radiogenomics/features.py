"""Tumour shape features of a binary 3D mask: the three of Buda et al. 2019 and standard 3D descriptors.

Every formula is in ``docs/radiogenomics.md``; in short (``V`` volume, ``A`` surface area, all in
physical units from the voxel spacing, so anisotropic voxels are handled):

* ``volume_voxels`` / ``volume_mm3`` / ``num_components``: the whole mask. Every other feature is
  measured on the **largest 3D connected component** (26-connectivity), as the dataset authors'
  pipeline kept only that component before measuring shape; ``largest_component_fraction`` says how
  much of the mask it holds.
* ``bevr`` (bounding ellipsoid volume ratio, 3D): ``V_mesh / V_E``, ``V_mesh`` the volume enclosed by
  the component's marching-cubes surface and ``V_E`` that of the minimum-volume ellipsoid enclosing
  the surface (Khachiyan's algorithm on its convex hull). In (0, 1]: 1 for an ellipsoid (up to
  voxelisation), ``2 / (pi * sqrt(3)) = 0.368`` for a cube.
* ``angular_sd`` (angular standard deviation, 2D) and ``margin_fluctuation`` (2D): on the slice
  (plane of the third array axis, the plane the masks were drawn in) where the component's area is
  largest, the outer boundary of that slice's largest region is resampled at ``BOUNDARY_SAMPLES``
  points equally spaced in arc length; ``r`` is each point's distance from the region's centroid
  divided by the mean distance (so neither feature measures size). ASD is the mean, over 10 equal
  angular bins around the centroid, of the standard deviation of ``r`` in the bin; MF is the standard
  deviation of ``r`` minus its circular moving average over ``MF_WINDOW_FRACTION`` of the boundary.
* ``surface_area_mm2``: area of the marching-cubes mesh at level 0.5 (scikit-image);
  ``sphericity = (36 pi V_mesh^2)^(1/3) / A`` (IBSI, with the mesh's enclosed volume, as pyradiomics).
* ``elongation = sqrt(l2 / l1)``, ``flatness = sqrt(l3 / l1)`` and axis lengths ``4 sqrt(l)`` from the
  eigenvalues ``l1 >= l2 >= l3`` of the covariance of the voxel centres (IBSI / pyradiomics).
* ``extent`` = voxels / voxels of the axis-aligned bounding box; ``solidity = V_mesh`` / volume of the
  convex hull of the surface (scipy / Qhull); ``max_diameter_mm``: largest distance between surface vertices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

__all__ = [
    "FEATURE_COLUMNS",
    "PAPER_FEATURES",
    "TESTED_FEATURES",
    "STANDARD_FEATURES",
    "BOUNDARY_SAMPLES",
    "MF_WINDOW_FRACTION",
    "ASD_BINS",
    "shape_features",
    "largest_component",
    "minimum_volume_ellipsoid",
    "bounding_ellipsoid_volume_ratio",
    "boundary_samples",
    "radial_profile",
    "angular_standard_deviation",
    "margin_fluctuation",
]

PAPER_FEATURES = ("angular_sd", "margin_fluctuation", "bevr")
STANDARD_FEATURES = (
    "surface_area_mm2",
    "sphericity",
    "elongation",
    "flatness",
    "extent",
    "solidity",
    "major_axis_mm",
    "minor_axis_mm",
    "least_axis_mm",
    "max_diameter_mm",
)
FEATURE_COLUMNS = ("volume_voxels", "volume_mm3", *PAPER_FEATURES, *STANDARD_FEATURES, "num_components")
#: extra descriptive columns of ``shape_features.csv`` (not tested against clinical variables)
INFO_COLUMNS = ("largest_component_fraction", "slice_2d", "spacing_mm")

BOUNDARY_SAMPLES = 360  # boundary points, equally spaced in arc length, for the 2D features
ASD_BINS = 10  # equiangular bins of the angular standard deviation (Czarnek et al. 2017; Buda et al. 2019)
MF_WINDOW_FRACTION = 0.05  # moving-average window of the margin fluctuation, as a fraction of the boundary
_FULL_3D = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 26-connected component of a 3D mask and the number of components.

    Ties go to the component with the lowest label (first in C order), so the result is deterministic.
    """
    labels, count = ndimage.label(mask, structure=_FULL_3D)
    if count <= 1:
        return labels > 0, count
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1), count


def minimum_volume_ellipsoid(
    points: np.ndarray, tolerance: float = 1e-4, max_iter: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-volume enclosing ellipsoid ``{x : (x - c)^T A (x - c) <= 1}`` of a point set.

    Khachiyan's barycentric coordinate-ascent algorithm with Wolfe's away steps (Khachiyan 1996; Todd &
    Yildirim 2007): each step moves weight to the point farthest outside the current ellipsoid, or away
    from the weighted point deepest inside it, whichever is further from optimal. It stops when the
    ellipsoid, grown by ``(1 + tolerance)``, holds every point; the returned ``A`` is then scaled so the
    ellipsoid holds every point exactly, and its volume is at most ``(1 + tolerance)^(d / 2)`` times
    the true minimum.

    Args:
        points: ``(n, d)`` coordinates spanning ``d`` dimensions (pass convex hull vertices: only they matter).
        tolerance: relative stopping tolerance.
        max_iter: iteration cap (reached only for degenerate inputs).

    Returns:
        ``(centre, A)``.
    """
    points = np.asarray(points, dtype=float)
    n, d = points.shape
    lifted = np.vstack([points.T, np.ones(n)])  # (d + 1, n)
    weights = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        scatter = (lifted * weights) @ lifted.T
        distances = np.einsum("ij,ji->i", lifted.T, np.linalg.solve(scatter, lifted))
        far = int(np.argmax(distances))
        inside = np.where(weights > 0, distances, np.inf)
        near = int(np.argmin(inside))
        outward, inward = distances[far] / (d + 1) - 1.0, 1.0 - inside[near] / (d + 1)
        if outward <= tolerance:
            break
        j = far if outward >= inward else near
        # optimal step along e_j (negative: an away step), never below zero weight
        step = (distances[j] - d - 1.0) / ((d + 1.0) * (distances[j] - 1.0))
        step = max(step, -weights[j] / max(1.0 - weights[j], 1e-12))
        weights *= 1.0 - step
        weights[j] = max(weights[j] + step, 0.0)  # an away step to the limit drops the point exactly
    centre = points.T @ weights
    covariance = (points.T * weights) @ points - np.outer(centre, centre)
    shape = np.linalg.inv(covariance) / d
    offsets = points - centre
    reach = np.einsum("ij,jk,ik->i", offsets, shape, offsets).max()
    return centre, shape / max(reach, 1e-300)  # exact enclosure of every point


def bounding_ellipsoid_volume_ratio(mesh_volume: float, hull: ConvexHull) -> float:
    """``V / V_E``: volume enclosed by the tumour surface over that of its minimum enclosing ellipsoid (BEVR).

    Args:
        mesh_volume: volume enclosed by the marching-cubes surface, in mm^3.
        hull: convex hull of that surface's vertices (the ellipsoid enclosing it encloses the surface).
    """
    _, shape = minimum_volume_ellipsoid(hull.points[hull.vertices])
    ellipsoid_volume = 4.0 / 3.0 * math.pi / math.sqrt(np.linalg.det(shape))
    return float(min(1.0, mesh_volume / ellipsoid_volume))  # <= 1 up to the mesh's float32 rounding


def boundary_samples(region: np.ndarray, spacing: Sequence[float], num: int = BOUNDARY_SAMPLES) -> np.ndarray:
    """``num`` points of a 2D region's outer boundary (marching squares at 0.5), equally spaced in arc length, in mm.

    The longest contour is the outer boundary; holes are ignored. Coordinates are (row, column) times
    the in-plane spacing.
    """
    from skimage.measure import find_contours

    contours = find_contours(np.pad(region.astype(float), 1), 0.5)
    contour = (max(contours, key=len) - 1.0) * np.asarray(spacing, dtype=float)
    closed = np.vstack([contour, contour[:1]]) if not np.allclose(contour[0], contour[-1]) else contour
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    positions = np.linspace(0.0, arc[-1], num, endpoint=False)
    return np.stack([np.interp(positions, arc, closed[:, axis]) for axis in range(2)], axis=1)


def radial_profile(points: np.ndarray, centroid: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radial distance (distance / mean distance) and angle of boundary points about ``centroid``."""
    offsets = np.asarray(points, dtype=float) - np.asarray(centroid, dtype=float)
    distance = np.hypot(offsets[:, 0], offsets[:, 1])
    return distance / distance.mean(), np.arctan2(offsets[:, 0], offsets[:, 1])


def angular_standard_deviation(radius: np.ndarray, angle: np.ndarray, bins: int = ASD_BINS) -> float:
    """Mean over ``bins`` equal angular sectors of the standard deviation of the normalised radius in each."""
    sector = np.minimum(((angle + math.pi) / (2 * math.pi) * bins).astype(int), bins - 1)
    spreads = [radius[sector == b].std() for b in range(bins) if np.count_nonzero(sector == b) >= 2]
    return float(np.mean(spreads))


def margin_fluctuation(radius: np.ndarray, window_fraction: float = MF_WINDOW_FRACTION) -> float:
    """Standard deviation of the normalised radius minus its circular moving average (boundary order)."""
    window = max(3, int(round(window_fraction * radius.size)) | 1)  # odd, so the average is centred
    smooth = ndimage.uniform_filter1d(radius, size=window, mode="wrap")
    return float((radius - smooth).std())


def _largest_region_2d(plane: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(plane, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return labels > 0
    return labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)


def _features_2d(component: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, int]:
    areas = component.sum(axis=(0, 1))
    k = int(np.argmax(areas))  # first slice of largest area: deterministic
    region = _largest_region_2d(component[:, :, k])
    if region.sum() < 2:
        return float("nan"), float("nan"), k
    in_plane = np.asarray(spacing[:2], dtype=float)
    centroid = np.argwhere(region).mean(axis=0) * in_plane
    radius, angle = radial_profile(boundary_samples(region, in_plane), centroid)
    return angular_standard_deviation(radius, angle), margin_fluctuation(radius), k


def _surface_mesh(component: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, ConvexHull]:
    """Marching-cubes surface (level 0.5) of a component: area, enclosed volume, convex hull of the vertices."""
    from skimage.measure import marching_cubes, mesh_surface_area

    verts, faces, _, _ = marching_cubes(np.pad(component, 1).astype(np.float32), 0.5, spacing=tuple(spacing))
    area = float(mesh_surface_area(verts, faces))
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    volume = float(abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)  # divergence theorem
    return area, volume, ConvexHull(verts)


def _principal_axes(component: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    coords = np.argwhere(component) * np.asarray(spacing, dtype=float)
    if len(coords) < 2:
        return np.zeros(3)
    return np.clip(np.sort(np.linalg.eigvalsh(np.cov(coords, rowvar=False)))[::-1], 0.0, None)


def shape_features(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """All shape features of one patient's mask (see the module docstring and docs/radiogenomics.md).

    Args:
        mask: 3D array, tumour where non-zero, indexed (row, column, slice).
        spacing: voxel size along the three array axes in mm (a NIfTI header's zooms).

    Returns:
        ``{column: value}`` for :data:`FEATURE_COLUMNS` and :data:`INFO_COLUMNS`; an empty mask has
        volume 0, no components and NaN shape features.
    """
    mask = np.asarray(mask) > 0
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    spacing = tuple(float(s) for s in spacing)
    voxels = int(mask.sum())
    row: dict[str, float] = {name: float("nan") for name in FEATURE_COLUMNS + INFO_COLUMNS}
    row.update(volume_voxels=voxels, volume_mm3=voxels * float(np.prod(spacing)), num_components=0)
    row["spacing_mm"] = "x".join(f"{s:g}" for s in spacing)
    if voxels == 0:
        return row
    component, count = largest_component(mask)
    # crop to the component's bounding box so the mesh and hull work on a small array
    box = ndimage.find_objects(component.astype(np.uint8))[0]
    component = component[box]
    size = int(component.sum())
    row.update(num_components=count, largest_component_fraction=size / voxels)
    asd, mf, k = _features_2d(component, spacing)
    row.update(angular_sd=asd, margin_fluctuation=mf, slice_2d=k + box[2].start)
    area, mesh_volume, hull = _surface_mesh(component, spacing)
    row["bevr"] = bounding_ellipsoid_volume_ratio(mesh_volume, hull)
    eig = _principal_axes(component, spacing)
    row.update(
        surface_area_mm2=area,
        sphericity=(36.0 * math.pi * mesh_volume**2) ** (1.0 / 3.0) / area if area > 0 else float("nan"),
        elongation=math.sqrt(eig[1] / eig[0]) if eig[0] > 0 else float("nan"),
        flatness=math.sqrt(eig[2] / eig[0]) if eig[0] > 0 else float("nan"),
        extent=size / component.size,  # the crop is the component's bounding box
        solidity=min(1.0, mesh_volume / hull.volume),  # <= 1 up to the mesh's float32 rounding
        major_axis_mm=4.0 * math.sqrt(eig[0]),
        minor_axis_mm=4.0 * math.sqrt(eig[1]),
        least_axis_mm=4.0 * math.sqrt(eig[2]),
        max_diameter_mm=float(pdist(hull.points[hull.vertices]).max()),
    )
    return row


TESTED_FEATURES = (
    *PAPER_FEATURES,
    "volume_mm3",
    "surface_area_mm2",
    "sphericity",
    "elongation",
    "flatness",
    "extent",
    "solidity",
    "max_diameter_mm",
)

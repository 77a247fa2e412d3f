"""monai-lgg radiogenomics: shape features with known answers, the statistics, the I/O and the command."""

from __future__ import annotations

import csv
import json
import math
import subprocess

import nibabel as nib
import numpy as np
import pytest
import tifffile
from scipy import stats

from monai_lgg.errors import LGGInputError
from monai_lgg.radiogenomics import associations as assoc
from monai_lgg.radiogenomics.analysis import measure_masks, run_radiogenomics
from monai_lgg.radiogenomics.associations import (
    agreement,
    association_tests,
    chi2_power,
    detectable_effect,
    fisher_exact_2xk,
    icc_absolute_agreement,
)
from monai_lgg.radiogenomics.features import (
    angular_standard_deviation,
    boundary_samples,
    margin_fluctuation,
    minimum_volume_ellipsoid,
    radial_profile,
    shape_features,
)
from monai_lgg.radiogenomics.io import find_clinical, find_mask_cases, load_clinical, load_mask, patient_id

from .conftest import CONSOLE_SCRIPT

CUBE_BEVR = 2.0 / (math.pi * math.sqrt(3.0))  # a cube in its circumscribed sphere
CUBE_SPHERICITY = math.pi ** (1 / 3) * 6 ** (2 / 3) / 6.0


def ellipsoid(semi_axes, spacing=(1.0, 1.0, 1.0), centre=(0.0, 0.0, 0.0), margin=3) -> np.ndarray:
    """A solid ellipsoid with semi-axes in mm, sampled on a grid of ``spacing`` mm (voxel centres inside)."""
    sizes = [int(2 * (a + abs(c)) / s) + 2 * margin for a, c, s in zip(semi_axes, centre, spacing, strict=True)]
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(sizes, spacing, strict=True)], indexing="ij")
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, semi_axes, strict=True)) <= 1.0


def ellipsoid_surface(a: float, b: float, c: float) -> float:
    """Exact surface area of an ellipsoid a >= b >= c (Legendre's elliptic-integral formula)."""
    from scipy.special import ellipeinc, ellipkinc

    phi = math.acos(c / a)
    m = a**2 * (b**2 - c**2) / (b**2 * (a**2 - c**2))
    return 2 * math.pi * c**2 + 2 * math.pi * a * b / math.sin(phi) * (
        ellipeinc(phi, m) * math.sin(phi) ** 2 + ellipkinc(phi, m) * math.cos(phi) ** 2
    )


# ------------------------------------------------------------------------------ textbook shapes


def test_sphere_textbook_values():
    r = 20.0
    f = shape_features(ellipsoid((r, r, r)))
    assert f["volume_voxels"] == pytest.approx(4 / 3 * math.pi * r**3, rel=0.01)
    assert f["volume_mm3"] == f["volume_voxels"]
    assert f["sphericity"] == pytest.approx(1.0, abs=0.1)  # the binary-mask mesh over-estimates the area (~9 %)
    assert f["bevr"] == pytest.approx(1.0, abs=0.1)
    assert f["elongation"] == pytest.approx(1.0, abs=0.01) and f["flatness"] == pytest.approx(1.0, abs=0.01)
    assert f["extent"] == pytest.approx(math.pi / 6, abs=0.01)
    assert f["max_diameter_mm"] == pytest.approx(2 * r, rel=0.05)
    assert f["angular_sd"] < 0.02 and f["margin_fluctuation"] < 0.02  # a circle: constant radius
    assert f["num_components"] == 1 and f["largest_component_fraction"] == 1.0


def test_ellipsoid_textbook_values():
    a, b, c = 24.0, 16.0, 10.0
    f = shape_features(ellipsoid((a, b, c)))
    volume = 4 / 3 * math.pi * a * b * c
    assert f["volume_voxels"] == pytest.approx(volume, rel=0.015)
    assert f["elongation"] == pytest.approx(b / a, abs=0.02)
    assert f["flatness"] == pytest.approx(c / a, abs=0.02)
    assert f["major_axis_mm"] == pytest.approx(4 * a / math.sqrt(5), rel=0.02)  # 4 sqrt(variance), variance a^2 / 5
    true_sphericity = (36 * math.pi * volume**2) ** (1 / 3) / ellipsoid_surface(a, b, c)
    assert f["sphericity"] == pytest.approx(true_sphericity, rel=0.1)
    assert f["bevr"] == pytest.approx(1.0, abs=0.12)
    assert f["extent"] == pytest.approx(math.pi / 6, abs=0.02)
    # the largest slice is the a x b ellipse: not a circle, so its angular SD exceeds a sphere's
    assert f["angular_sd"] > shape_features(ellipsoid((16.0, 16.0, 16.0)))["angular_sd"] + 0.02


def test_cube_textbook_values():
    side = 30
    f = shape_features(np.pad(np.ones((side,) * 3, dtype=bool), 2))
    assert f["volume_voxels"] == side**3
    assert f["extent"] == 1.0
    assert f["solidity"] == pytest.approx(1.0, abs=1e-3)
    assert f["bevr"] == pytest.approx(CUBE_BEVR, abs=0.03)  # the mesh's half-voxel chamfers make it slightly larger
    assert f["sphericity"] == pytest.approx(CUBE_SPHERICITY, abs=0.02)
    assert f["elongation"] == pytest.approx(1.0) and f["max_diameter_mm"] == pytest.approx(
        side * math.sqrt(3), rel=0.03
    )


def test_minimum_volume_ellipsoid_exact_cases():
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float) + 5.0
    centre, shape = minimum_volume_ellipsoid(corners)
    np.testing.assert_allclose(centre, 5.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.eigvalsh(shape), 1 / 3, rtol=1e-3)  # the sphere of radius sqrt(3)
    # points on a rotated ellipsoid's surface: the ellipsoid itself comes back
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(400, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    points = (directions * [9.0, 4.0, 2.0]) @ rotation.T + [1.0, -2.0, 3.0]
    centre, shape = minimum_volume_ellipsoid(points)
    np.testing.assert_allclose(np.sort(1 / np.sqrt(np.linalg.eigvalsh(shape))), [2.0, 4.0, 9.0], rtol=5e-3)
    np.testing.assert_allclose(centre, [1.0, -2.0, 3.0], atol=0.05)


def test_spacing_is_used_and_the_paper_features_do_not_depend_on_it():
    mask = ellipsoid((12.0, 9.0, 6.0), centre=(1.5, -2.0, 0.5))
    iso = shape_features(mask, (1.0, 1.0, 1.0))
    aniso = shape_features(mask, (0.5, 0.5, 4.0))
    assert aniso["volume_mm3"] == pytest.approx(iso["volume_voxels"] * 1.0)
    for name in ("bevr", "extent", "solidity", "angular_sd", "margin_fluctuation"):  # affine-invariant / in-plane only
        assert aniso[name] == pytest.approx(iso[name], rel=2e-3), name
    assert aniso["elongation"] != pytest.approx(iso["elongation"], rel=0.05)
    # a physical sphere sampled with 3 mm slices is round only when the 3 mm are used
    sphere = ellipsoid((15.0, 15.0, 15.0), spacing=(1.0, 1.0, 3.0))
    assert shape_features(sphere, (1.0, 1.0, 3.0))["elongation"] > 0.97
    assert shape_features(sphere, (1.0, 1.0, 1.0))["flatness"] < 0.5


def test_2d_feature_formulas():
    angle = np.linspace(-math.pi, math.pi, 360, endpoint=False)
    assert angular_standard_deviation(np.ones(360), angle) == 0.0
    alternating = 1.0 + 0.1 * np.where(np.arange(360) % 2 == 0, 1.0, -1.0)
    assert angular_standard_deviation(alternating, angle) == pytest.approx(0.1, rel=1e-3)
    assert margin_fluctuation(np.ones(360)) == 0.0
    # a centred moving average over 19 samples (5 % of 360) of an alternation holds 9 samples of the centre's
    # sign and 10 of the other: it is -1/19 of the centre, so 20/19 of the alternation is left
    assert margin_fluctuation(alternating) == pytest.approx(0.1 * 20 / 19, rel=1e-6)
    slow = 1.0 + 0.1 * np.cos(angle)  # one lobe around the boundary: smooth, no fluctuation
    assert margin_fluctuation(slow) < 0.001


def test_2d_features_of_a_digitised_ellipse_match_the_continuous_curve():
    rows, cols = np.mgrid[0:120, 0:120]
    region = ((rows - 60) / 45.0) ** 2 + ((cols - 60) / 22.0) ** 2 <= 1.0
    radius, angle = radial_profile(boundary_samples(region, (1.0, 1.0)), np.argwhere(region).mean(axis=0))
    t = np.linspace(0, 2 * math.pi, 20000, endpoint=False)
    curve = np.stack([60 + 45 * np.cos(t), 60 + 22 * np.sin(t)], axis=1)
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(np.vstack([curve, curve[:1]]), axis=0), axis=1))])
    positions = np.linspace(0, arc[-1], 360, endpoint=False)
    exact = np.stack([np.interp(positions, arc, np.append(curve[:, k], curve[0, k])) for k in range(2)], axis=1)
    r_exact, a_exact = radial_profile(exact, (60.0, 60.0))
    assert angular_standard_deviation(radius, angle) == pytest.approx(
        angular_standard_deviation(r_exact, a_exact), rel=0.1
    )
    assert margin_fluctuation(radius) < 0.01 and margin_fluctuation(r_exact) < 0.01


def test_empty_mask_and_several_components():
    empty = shape_features(np.zeros((8, 8, 4), dtype=bool))
    assert empty["volume_voxels"] == 0 and empty["num_components"] == 0 and math.isnan(empty["bevr"])
    two = np.zeros((40, 20, 20), dtype=bool)
    two[2:14, 2:14, 2:14] = True  # 1728 voxels
    two[25:30, 5:10, 5:10] = True  # 125 voxels, not touching
    f = shape_features(two)
    assert f["num_components"] == 2 and f["volume_voxels"] == 1853
    assert f["largest_component_fraction"] == pytest.approx(1728 / 1853) and f["extent"] == 1.0


# ------------------------------------------------------------------------------ statistics


def test_fisher_2x2_and_2xk():
    assert fisher_exact_2xk(np.array([[8, 2], [1, 5]]))[0] == pytest.approx(stats.fisher_exact([[8, 2], [1, 5]]).pvalue)
    for table in ([[8, 2, 3], [1, 5, 4]], [[3, 11, 2, 7, 5], [9, 7, 1, 2, 6]]):
        p, method = fisher_exact_2xk(np.array(table))
        monte_carlo = stats.fisher_exact(
            table, method=stats.MonteCarloMethod(n_resamples=20000, rng=np.random.default_rng(0))
        )
        assert method == "exact" and p == pytest.approx(monte_carlo.pvalue, abs=0.015)
    assert fisher_exact_2xk(np.array([[3, 0, 4], [2, 0, 5]]))[0] == pytest.approx(
        stats.fisher_exact([[3, 4], [2, 5]]).pvalue
    )


def test_fisher_falls_back_to_monte_carlo_for_huge_tables(monkeypatch):
    table = np.array([[10, 12, 3, 5], [5, 8, 4, 9]])
    exact, _ = fisher_exact_2xk(table)
    monkeypatch.setattr(assoc, "MAX_EXACT_TABLES", 0)
    p, method = fisher_exact_2xk(table)
    assert method == "monte-carlo" and p == pytest.approx(exact, abs=0.01)


def test_icc_matches_shrout_and_fleiss():
    ratings = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert icc_absolute_agreement(ratings) == pytest.approx(0.29, abs=0.005)  # ICC(2,1) of their Table 4
    same = np.repeat(np.arange(10.0)[:, None], 2, axis=1)
    assert icc_absolute_agreement(same) == pytest.approx(1.0)


def test_power_of_a_chi_square_test():
    assert chi2_power(0.0, 100, 3, 0.05) == pytest.approx(0.05)
    w = detectable_effect(88, 1, 0.05)
    assert w == pytest.approx(0.3, abs=0.005)  # Cohen: w = 0.3, 1 df, alpha .05 -> 80 % power at n = 88


def _cohort(n: int, seed: int) -> tuple[list[dict], dict]:
    """A cohort whose BEVR depends strongly on the RNASeq cluster (cluster 2 low) and nothing else does."""
    rng = np.random.default_rng(seed)
    clusters = np.tile([1, 2, 3, 4], n // 4 + 1)[:n]
    rows, clinical = [], {}
    for i, cluster in enumerate(clusters):
        patient = f"P{i:03d}"
        rows.append(
            {
                "patient": patient,
                "bevr": (0.3 if cluster == 2 else 0.5) + rng.normal(0, 0.02),
                "angular_sd": rng.normal(0.1, 0.02),
                "margin_fluctuation": rng.normal(0.03, 0.01),
            }
        )
        clinical[patient] = {"RNASeqCluster": int(cluster), "age_at_initial_pathologic": float(rng.integers(20, 70))}
    return rows, clinical


def test_positive_control_and_shuffled_label_control():
    rows, clinical = _cohort(60, seed=0)
    features = ("angular_sd", "margin_fluctuation", "bevr")
    tests = association_tests(rows, clinical, features, ["RNASeqCluster"], primary_variables=["RNASeqCluster"])
    by_key = {(r["feature"], r["test"].split(" ")[0]): r for r in tests}
    assert by_key[("bevr", "fisher")]["p_bonferroni"] < 1e-3 and by_key[("bevr", "fisher")]["family"] == "primary"
    assert by_key[("bevr", "kruskal-wallis")]["p"] < 1e-6
    # the same patients with their cluster labels shuffled: nothing may come out significant
    permutation = np.random.default_rng(1).permutation(len(rows))
    patients = [r["patient"] for r in rows]
    shuffled = {patients[i]: clinical[patients[j]] for i, j in enumerate(permutation)}
    shuffled_tests = association_tests(rows, shuffled, features, ["RNASeqCluster"], primary_variables=["RNASeqCluster"])
    assert all(r["p_bonferroni"] > 0.05 for r in shuffled_tests), [(r["feature"], r["p"]) for r in shuffled_tests]
    # and over many shuffles the Fisher test keeps its level (it is conservative: at most ~5 % below 0.05)
    x = np.array([r["bevr"] for r in rows])
    high = x > np.median(x)
    labels = np.array([clinical[p]["RNASeqCluster"] for p in patients])
    rng = np.random.default_rng(2)
    rejections = 0
    for _ in range(200):
        y = rng.permutation(labels)
        table = np.array(
            [[np.sum((y == c) & ~high) for c in (1, 2, 3, 4)], [np.sum((y == c) & high) for c in (1, 2, 3, 4)]]
        )
        rejections += fisher_exact_2xk(table)[0] < 0.05
    assert rejections / 200 <= 0.08


def test_missing_values_are_excluded_per_test_and_counted():
    rows, clinical = _cohort(20, seed=3)
    for patient in ("P001", "P002", "P003"):
        clinical[patient]["RNASeqCluster"] = None  # blank cells
    clinical["P004"]["age_at_initial_pathologic"] = None
    rows[5]["bevr"] = float("nan")  # an empty mask: no shape
    rows.append({"patient": "NOT_IN_TABLE", "bevr": 0.4, "angular_sd": 0.1, "margin_fluctuation": 0.02})
    tests = association_tests(rows, clinical, ["bevr"], ["RNASeqCluster", "age_at_initial_pathologic"])
    fisher = {r["variable"]: r for r in tests if r["test"].startswith("fisher")}
    assert fisher["RNASeqCluster"]["n"] == 16 and fisher["RNASeqCluster"]["n_missing_variable"] == 3
    assert fisher["RNASeqCluster"]["n_missing_feature"] == 1
    assert (
        fisher["age_at_initial_pathologic"]["n"] == 18
        and fisher["age_at_initial_pathologic"]["n_missing_variable"] == 1
    )
    counts = [
        int(v)
        for part in fisher["RNASeqCluster"]["groups"].split(": ", 1)[1].split("; ")
        for v in part.split(": ")[1].split("/")
    ]
    assert sum(counts) == 16
    spearman = [r for r in tests if r["test"] == "spearman"][0]
    assert spearman["n"] == 18 and spearman["family"] == "exploratory"


def test_agreement_of_identical_and_shifted_features():
    rows, _ = _cohort(24, seed=4)
    shifted = [{**r, "bevr": r["bevr"] + 0.05} for r in rows]
    same = agreement(rows, rows, ["bevr"])[0]
    assert same["icc"] == pytest.approx(1.0) and same["bias"] == 0.0 and same["same_median_side"] == 1.0
    moved = agreement(shifted, rows, ["bevr"])[0]
    assert moved["bias"] == pytest.approx(0.05) and moved["icc"] < 1.0 and moved["spearman_rho"] == pytest.approx(1.0)
    assert moved["loa_low"] == pytest.approx(0.05) and moved["loa_high"] == pytest.approx(0.05)


# ------------------------------------------------------------------------------ inputs and the command


def _save_nifti(path, array, zooms=(1.0, 1.0, 1.0)):
    image = nib.Nifti1Image(array.astype(np.uint8), np.diag([*zooms, 1.0]))
    nib.save(image, path)


def _fake_study(root, n: int = 12):
    """NIfTI masks of ``n`` Kaggle-named patients (3 clusters of shapes) and a data.csv."""
    masks = root / "masks"
    masks.mkdir(parents=True)
    rng = np.random.default_rng(5)
    lines = ["Patient,RNASeqCluster,gender,age_at_initial_pathologic"]
    for i in range(n):
        cluster = i % 3 + 1
        axes = (8.0, 8.0, 6.0) if cluster == 1 else (12.0, 5.0, 4.0) if cluster == 2 else (7.0, 6.0, 6.0)
        mask = ellipsoid(tuple(a + rng.uniform(-0.5, 0.5) for a in axes))
        if cluster == 3:  # a bumpy, irregular tumour: two overlapping blobs
            mask = mask | np.roll(mask, 4, axis=0)
        case = f"TCGA_AA_{i:04d}_20000101"
        _save_nifti(masks / f"{case}.nii.gz", mask)
        blank = "" if i == 0 else str(cluster)
        lines.append(f"TCGA_AA_{i:04d},{blank},{1 + i % 2},{30 + i}")
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    return masks


def test_mask_discovery_and_patient_ids(tmp_path):
    assert patient_id("TCGA_CS_4941_19960909") == "TCGA_CS_4941" and patient_id("case7") == "case7"
    masks = _fake_study(tmp_path, n=3)
    _save_nifti(masks / "TCGA_AA_0000_20000101_0000.nii.gz", np.zeros((4, 4, 4)))  # an image channel: skipped
    assert [c.name for c in find_mask_cases(masks)] == [f"TCGA_AA_{i:04d}_20000101" for i in range(3)]
    # Kaggle-layout slice masks of the same volume give the same features
    mask, _ = load_mask(find_mask_cases(masks)[1])
    case_dir = tmp_path / "kaggle" / "TCGA_AA_0001_20000101"
    case_dir.mkdir(parents=True)
    for k in range(mask.shape[2]):
        tifffile.imwrite(case_dir / f"TCGA_AA_0001_20000101_{k + 1}_mask.tif", mask[..., k].astype(np.uint8) * 255)
        tifffile.imwrite(case_dir / f"TCGA_AA_0001_20000101_{k + 1}.tif", np.zeros((*mask.shape[:2], 3), np.uint8))
    slices = measure_masks(tmp_path / "kaggle")
    volume = measure_masks(masks)
    assert slices.rows[0]["patient"] == "TCGA_AA_0001"
    assert slices.rows[0]["bevr"] == pytest.approx(volume.rows[1]["bevr"])
    assert slices.rows[0]["angular_sd"] == pytest.approx(volume.rows[1]["angular_sd"])
    # several folders at once (e.g. one per fold); a case found twice is refused
    extra = tmp_path / "extra"
    extra.mkdir()
    _save_nifti(extra / "TCGA_AA_0099_20000101.nii.gz", mask)
    assert len(find_mask_cases(f"{masks},{extra}")) == 4 and len(find_mask_cases([masks, extra])) == 4
    with pytest.raises(LGGInputError, match="found twice"):
        find_mask_cases([masks, tmp_path / "kaggle"])
    assert find_clinical(masks) == tmp_path / "data.csv"


def test_out_of_fold_masks_come_from_each_patients_own_fold(tmp_path):
    cases = [f"TCGA_AA_{i:04d}_20000101" for i in range(6)]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"case": c, "fold": i // 3} for i, c in enumerate(cases)]}))
    tumour = ellipsoid((6.0, 5.0, 4.0))
    for fold in (0, 1):  # each fold model "segments" every patient; fold f's model finds tumour only in fold f
        (tmp_path / f"fold{fold}").mkdir()
        for i, case in enumerate(cases):
            _save_nifti(
                tmp_path / f"fold{fold}" / f"{case}.nii.gz", tumour if i // 3 == fold else np.zeros_like(tumour)
            )
    folders = [tmp_path / "fold0", tmp_path / "fold1"]
    rows = measure_masks(folders, folds=datalist).rows
    assert [r["case"] for r in rows] == cases and all(r["volume_voxels"] == tumour.sum() for r in rows)
    assert all(r["volume_voxels"] == 0 for r in measure_masks(folders[::-1], folds=datalist).rows)
    with pytest.raises(LGGInputError, match="has 2 folds: give 2 mask folders"):
        measure_masks(folders[:1], folds=datalist)
    (tmp_path / "fold1" / f"{cases[4]}.nii.gz").unlink()
    with pytest.raises(LGGInputError, match=f"fold 1: no mask for 1 test case.*{cases[4]}"):
        measure_masks(folders, folds=datalist)


def test_npz_out_of_fold_predictions(tmp_path):
    """``.npz`` arrays as monai_lgg.studies.crossval.out_of_fold writes them (uint8 probabilities x 255), or a mask."""
    tumour = ellipsoid((7.0, 5.0, 4.0))
    prob = np.where(tumour, 200, 40).astype(np.uint8)
    prob[0, 0, 0] = 127  # just below 0.5: background
    np.savez_compressed(tmp_path / "TCGA_AA_0001_20000101.npz", prob=prob, label=tumour, fold=np.array(2))
    np.savez_compressed(tmp_path / "TCGA_AA_0002_20000101.npz", mask=tumour.astype(np.uint8))
    cases = find_mask_cases(tmp_path)
    assert [c.form for c in cases] == ["array", "array"]
    for case in cases:
        mask, spacing = load_mask(case)
        assert np.array_equal(mask, tumour) and spacing == (1.0, 1.0, 1.0)
    np.savez_compressed(tmp_path / "TCGA_AA_0003_20000101.npz", label=tumour)
    with pytest.raises(LGGInputError, match="neither a 'mask' nor a 'prob'"):
        load_mask(find_mask_cases(tmp_path)[2])


def test_nifti_spacing_comes_from_the_header(tmp_path):
    sphere = ellipsoid((10.0, 10.0, 10.0), spacing=(1.0, 1.0, 2.5))
    _save_nifti(tmp_path / "case.nii.gz", sphere, zooms=(1.0, 1.0, 2.5))
    mask, spacing = load_mask(find_mask_cases(tmp_path)[0])
    assert spacing == (1.0, 1.0, 2.5) and mask.sum() == sphere.sum()
    assert shape_features(mask, spacing)["elongation"] > 0.95


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: _save_nifti(d / "p.nii.gz", np.zeros((5, 5))), "expected a 3D mask volume"),
        (
            lambda d: nib.save(nib.Nifti1Image(np.full((4, 4, 4), 0.3, np.float32), np.eye(4)), d / "p.nii.gz"),
            "not a mask",
        ),
        (lambda d: (d / "p.nii.gz").write_bytes(b"not a nifti"), "unreadable NIfTI"),
    ],
)
def test_bad_masks_name_the_file(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(LGGInputError, match=message) as err:
        load_mask(find_mask_cases(tmp_path)[0])
    assert "p.nii.gz" in str(err.value)


def test_bad_folders_and_tables(tmp_path):
    with pytest.raises(LGGInputError, match="does not exist"):
        find_mask_cases(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LGGInputError, match="holds no masks"):
        find_mask_cases(tmp_path / "empty")
    gap = tmp_path / "gap" / "TCGA_AA_0001_20000101"
    gap.mkdir(parents=True)
    for k in (1, 2, 4):
        tifffile.imwrite(gap / f"TCGA_AA_0001_20000101_{k}_mask.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(LGGInputError, match="gap in slice numbers"):
        load_mask(find_mask_cases(tmp_path / "gap")[0])
    masks = _fake_study(tmp_path / "study", n=3)
    with pytest.raises(LGGInputError, match="no clinical table"):
        run_radiogenomics(tmp_path / "gap", tmp_path / "out")
    with pytest.raises(LGGInputError, match="has no column NotAColumn"):
        run_radiogenomics(masks, tmp_path / "out", variables=["NotAColumn"])
    assert load_clinical(tmp_path / "study" / "data.csv")["TCGA_AA_0000"]["RNASeqCluster"] is None


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CONSOLE_SCRIPT, *args], capture_output=True, text=True, timeout=300)


def test_command_end_to_end_with_reference(tmp_path, capsys):
    masks = _fake_study(tmp_path)
    out = tmp_path / "out"
    args = [
        "radiogenomics",
        str(masks),
        str(out),
        "--reference",
        str(masks),
        "--variables",
        "RNASeqCluster,gender",
        "--progress",
        "false",
    ]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    for name in (
        "shape_features.csv",
        "associations.csv",
        "agreement.csv",
        "summary.json",
        "report.md",
        "report.html",
        "reference/shape_features.csv",
        "reference/dice.csv",
        "figures/agreement.png",
        "figures/pvalue_heatmap.png",
    ):
        assert (out / name).is_file(), name
    with open(out / "shape_features.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and rows[0]["patient"] == "TCGA_AA_0000" and float(rows[0]["bevr"]) > 0.5
    with open(out / "agreement.csv") as f:
        assert all(float(r["icc"]) == pytest.approx(1.0) for r in csv.DictReader(f))  # masks = reference
    with open(out / "associations.csv") as f:
        tests = list(csv.DictReader(f))
    rna = [
        t
        for t in tests
        if t["variable"] == "RNASeqCluster" and t["feature"] == "bevr" and t["test"].startswith("fisher")
    ][0]
    assert rna["family"] == "primary" and rna["n"] == "11" and rna["n_missing_variable"] == "1"
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["counts"]["blank_cells_per_variable"]["RNASeqCluster"] == 1
        and summary["dice_vs_reference"]["mean"] == 1.0
    )
    assert (out / "report.html").read_text().count("<img") == 4
    again = run_cli(*args)  # the output exists: refused with one line, nothing touched
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0
    assert again.stderr.startswith("monai-lgg: error: ") and "--overwrite" in again.stderr
    # the same one-line errors in process (no second interpreter start-up)
    from monai_lgg.cli import main

    with pytest.raises(SystemExit) as exit_code:
        main(["radiogenomics", str(tmp_path / "nowhere"), str(tmp_path / "o2")])
    assert exit_code.value.code == 2
    assert capsys.readouterr().err.strip() == f"monai-lgg: error: {tmp_path / 'nowhere'}: does not exist"


@pytest.mark.slow  # two full analyses with their figures: ~15 s on an idle 2-core machine
def test_results_writer_keeps_other_mask_sets(tmp_path):
    from monai_lgg.radiogenomics.results import main, write_results

    masks = _fake_study(tmp_path)
    clinical = str(tmp_path / "data.csv")
    docs = tmp_path / "docs"
    (docs / "cv").mkdir(parents=True)
    write_results(
        docs, str(masks), clinical, shipped=str(masks), command="python -m monai_lgg.radiogenomics.results ..."
    )
    readme = (docs / "README.md").read_text()
    assert "bounding ellipsoid volume ratio (3D) × RNASeqCluster" in readme and "p (shipped_model)" in readme
    assert "Cross-validated masks (to do" in readme and (docs / "shipped_model" / "agreement.csv").is_file()
    assert not (docs / "reference" / "report.html").exists()  # the HTML duplicates the PNGs: kept out of docs
    main(["--readme_only", "--output", str(docs)])  # rebuilt from the sub-folders, keeping the recorded command
    assert (docs / "README.md").read_text() == readme


@pytest.mark.realdata
def test_real_kaggle_masks_match_data_csv(shared_lgg):
    cases = find_mask_cases(shared_lgg)
    clinical = load_clinical(shared_lgg / "data.csv")
    assert len(cases) == 66 and all(case.patient in clinical for case in cases)
    mask, spacing = load_mask(cases[0])
    f = shape_features(mask, spacing)
    assert f["volume_voxels"] == int(mask.sum()) > 0 and 0 < f["bevr"] <= 1.0 and spacing == (1.0, 1.0, 1.0)

"""``monai-lgg predict --uncertainty``: the measures, the ensemble/TTA passes, the outputs, and the CV report tool.

Networks here are untrained (random weights, fixed seeds): the tests check definitions, geometry and plumbing,
not accuracy. Whether the uncertainty tracks accuracy is measured on the real cross-validation by
``tools/uncertainty_report.py`` (docs/results/uncertainty).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch

from monai_lgg.bundle.record import sidecar_path
from monai_lgg.cli import main
from monai_lgg.engines.bundle import bundle_network
from monai_lgg.errors import LGGInputError
from monai_lgg.inference import Predictor
from monai_lgg.inference.uncertainty import UNCERTAINTY_COLUMNS, border_band, entropy, uncertainty_rows
from monai_lgg.io import save_checkpoint, write_json
from monai_lgg.metrics.correlation import correlation_test, detection_auc, partial_spearman, spearman
from monai_lgg.networks.ensemble import EnsembleWithMembers, ProbabilityEnsemble

from .conftest import PROJECT_ROOT

SIZE = ["--spatial_size", "[64,64]"]


# ---------------------------------------------------------------- definitions


def test_entropy_known_values():
    assert torch.allclose(entropy(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.0, 1.0, 0.0]))
    p = torch.tensor([0.1, 0.3])
    assert torch.allclose(entropy(p), entropy(1 - p))  # symmetric
    assert abs(float(entropy(torch.tensor(0.1))) - 0.468996) < 1e-5  # -0.1 log2 0.1 - 0.9 log2 0.9
    classes = torch.tensor([[1 / 3, 1.0], [1 / 3, 0.0], [1 / 3, 0.0]])  # (K=3, 2 voxels): uniform, certain
    assert torch.allclose(entropy(classes, class_dim=0), torch.tensor([1.0, 0.0]), atol=1e-6)


def test_border_band_and_case_rows():
    mask = np.zeros((20, 20, 3), dtype=np.uint8)
    mask[5:15, 5:15, 1] = 1
    band = border_band(mask, 1)
    assert int(band[..., 1].sum()) == 76 and not band[..., [0, 2]].any()  # 36 inside + 40 outside, in-plane only
    assert band[5, 5, 1] and band[4, 5, 1] and not band[9, 9, 1] and not band[3, 5, 1]
    uncertainty = np.where(mask > 0, 0.2, 0.0).astype(np.float32)
    uncertainty[band] = 0.8
    information = uncertainty / 2
    rows = uncertainty_rows(mask, uncertainty, information, width=1)
    assert len(rows) == 4 and list(rows[0]) == list(UNCERTAINTY_COLUMNS)
    assert rows[0]["entropy_tumour"] == "" and rows[0]["entropy_border"] == ""  # no tumour: blank, not 0
    inside = (36 * 0.8 + 64 * 0.2) / 100
    assert rows[1]["entropy_tumour"] == pytest.approx(inside) and rows[1]["entropy_border"] == pytest.approx(0.8)
    assert rows[-1]["entropy_tumour"] == pytest.approx(inside) and rows[-1]["mutual_info_border"] == pytest.approx(0.4)
    assert all(r["mutual_info_tumour"] == "" for r in uncertainty_rows(mask, uncertainty, None))  # one pass


# ---------------------------------------------------------------- passes


def _members(n: int, out_channels: int = 1) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [
        torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, out_channels, 3, padding=1)
        )
        for _ in range(n)
    ]


def test_ensemble_with_members_is_the_ensemble_plus_its_members():
    ensemble = ProbabilityEnsemble(_members(3)).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        out = EnsembleWithMembers(ensemble)(x)
        assert out.shape == (2, 4, 16, 16) and torch.equal(out[:, :1], ensemble(x))
        assert torch.equal(out[:, 2:3], ensemble.members[1](x))
        assert torch.equal(torch.jit.script(ensemble)(x), ensemble(x))  # still scriptable (Model Zoo export)


@pytest.mark.parametrize("geometry, size", [("brain", (3, 60, 70, 5)), ("patch", (3, 80, 100, 4))])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_uncertainty_keeps_the_probability_bit_for_bit(geometry, size, precision):
    """Opening the ensemble up gives the very probabilities of the default path (so the same masks), for one
    window (brain) and overlapping sliding windows (patch); 2 members x 2 flips = 4 passes."""
    ensemble = ProbabilityEnsemble(_members(2)).eval()
    image = torch.rand(*size) * 100
    predictor = Predictor([ensemble], (32, 32), tta=True, geometry=geometry, precision=precision, overlap=0.5)
    result = predictor.uncertainty(image)
    assert torch.equal(result.probability, predictor.probabilities(image))
    assert result.passes == 4 and result.entropy.shape == size[1:] and result.mutual_information.shape == size[1:]
    assert float(result.entropy.min()) >= 0 and float(result.entropy.max()) <= 1
    assert float(result.mutual_information.min()) >= 0
    assert bool((result.mutual_information <= result.entropy + 1e-5).all())
    assert torch.allclose(result.entropy, entropy(result.probability))


def test_uncertainty_passes_single_network_and_multiclass():
    image = torch.rand(3, 40, 40)
    single = Predictor(_members(1), (32, 32), tta=False, geometry="brain").uncertainty(image)
    assert single.passes == 1 and single.mutual_information is None and single.entropy.shape == (40, 40)
    assert Predictor(_members(1), (32, 32), tta=True, geometry="brain").uncertainty(image).passes == 2
    two = Predictor(_members(2), (32, 32), tta=True).uncertainty(image)  # two separate networks x 2 flips
    assert two.passes == 4 and two.mutual_information is not None
    classes = Predictor(_members(2, out_channels=3), (32, 32), tta=True, out_channels=3).uncertainty(
        torch.rand(3, 40, 40, 2)
    )
    assert classes.probability.shape == (3, 40, 40, 2) and classes.entropy.shape == (40, 40, 2) and classes.passes == 4
    assert float(classes.entropy.max()) <= 1 and float(classes.mutual_information.min()) >= 0


# ---------------------------------------------------------------- predict --uncertainty


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """An untrained 2-member ensemble checkpoint (like the shipped one) and a single network, 64x64 brain geometry."""
    root = tmp_path_factory.mktemp("uncertainty-models")
    bundle = root / "unet"
    shutil.copytree(
        PROJECT_ROOT / "bundles" / "unet", bundle, ignore=shutil.ignore_patterns("models", "eval", "logs", "runs")
    )
    record = {"in_channels": 3, "out_channels": 1, "geometry": "brain", "spatial_size": [64, 64]}
    torch.manual_seed(3)
    nets = [bundle_network(bundle, in_channels=3, out_channels=1, spatial_size=[64, 64]) for _ in range(2)]
    paths = {"bundle": bundle, "ensemble": root / "ensemble" / "model.pt", "single": root / "single" / "model.pt"}
    save_checkpoint(ProbabilityEnsemble(nets).state_dict(), paths["ensemble"])
    write_json(sidecar_path(paths["ensemble"]), {**record, "members": 2})
    save_checkpoint(nets[0].state_dict(), paths["single"])
    write_json(sidecar_path(paths["single"]), record)
    return paths


def _predict(source: Path, out: Path, checkpoints: dict, *extra: str, model: str = "ensemble") -> None:
    main(
        [
            "predict",
            str(source),
            str(out),
            "--bundle",
            str(checkpoints["bundle"]),
            "--checkpoint",
            str(checkpoints[model]),
            "--threshold",
            "0.5",
            "--progress",
            "False",
            *SIZE,
            *extra,
        ]
    )


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_uncertainty_volume(tiny_dataset, checkpoints, tmp_path):
    """Flag off: no uncertainty output, and the same masks, probabilities and tables as with it. Flag on: a float32
    NIfTI map in the mask's geometry, in [0, 1]; summary columns in both tables; the picture."""
    source = sorted((tiny_dataset / "imagesTr").glob("*_0000.nii.gz"))[0]
    case = source.name[: -len("_0000.nii.gz")]
    _predict(source, tmp_path / "off", checkpoints, "--probabilities")
    _predict(source, tmp_path / "on", checkpoints, "--probabilities", "--uncertainty")
    off, on = tmp_path / "off", tmp_path / "on"
    assert not list(off.rglob("*uncertainty*"))
    for name in (f"{case}.nii.gz", f"{case}_prob.nii.gz"):
        assert (off / name).read_bytes() == (on / name).read_bytes(), name
    mask = nib.load(on / f"{case}.nii.gz")
    unc = nib.load(on / f"{case}_uncertainty.nii.gz")
    values = np.asarray(unc.dataobj)
    assert values.dtype == np.float32 and values.shape == mask.shape and np.array_equal(unc.affine, mask.affine)
    assert values.min() >= 0 and values.max() <= 1 and values.max() > 0
    rows_off, rows_on = _read_csv(off / f"{case}_tumour.csv"), _read_csv(on / f"{case}_tumour.csv")
    assert [{k: r[k] for k in rows_off[0]} for r in rows_on] == rows_off  # the original columns are untouched
    assert set(UNCERTAINTY_COLUMNS) <= set(rows_on[-1]) and rows_on[-1]["slice"] == "all"
    summary = _read_csv(on / "tumour_summary.csv")[0]
    assert summary["uncertainty_passes"] == "4" and all(k in summary for k in UNCERTAINTY_COLUMNS)
    if int(summary["tumour_voxels"]):
        assert 0 <= float(summary["entropy_tumour"]) <= 1 and 0 <= float(summary["mutual_info_border"]) <= 1
    picture = cv2.imread(str(on / "overlays" / f"{case}_uncertainty.png"))
    assert picture is not None and picture.shape[1] >= 2 * 384  # two panels, enlarged from 64 px to be legible


def test_predict_uncertainty_slices_single_network(tiny_dataset, checkpoints, tmp_path, capsys):
    """Kaggle slices: one float32 TIFF per slice beside its mask. One network without TTA still works
    (entropy only: the mutual-information cells are blank). Existing outputs are refused."""
    patient = sorted(p for p in (tiny_dataset.parent / "kaggle_3m").iterdir() if p.is_dir())[0]
    out = tmp_path / "slices"
    _predict(patient, out, checkpoints, "--uncertainty", "--tta", "false", model="single")
    masks = sorted(out.rglob("*_mask.tif"))
    assert masks
    for mask_path in masks:
        unc = tifffile.imread(str(mask_path).replace("_mask.tif", "_uncertainty.tif"))
        assert unc.dtype == np.float32 and unc.shape == tifffile.imread(mask_path).shape
        assert unc.min() >= 0 and unc.max() <= 1
    summary = _read_csv(out / "tumour_summary.csv")[0]
    assert summary["uncertainty_passes"] == "1" and summary["mutual_info_tumour"] == ""
    assert (out / "overlays" / f"{patient.name}_uncertainty.png").is_file()  # one patient's folder: written at the top
    with pytest.raises(SystemExit):
        _predict(patient, out, checkpoints, "--uncertainty", model="single")
    assert "output exists" in capsys.readouterr().err


def test_bad_input_with_uncertainty_is_one_line(checkpoints, tmp_path, capsys):
    for args, message in (
        ([str(tmp_path / "missing.nii.gz"), str(tmp_path / "o1"), "--uncertainty"], "does not exist"),
        ([str(tmp_path), str(tmp_path / "o2"), "--uncertainty", "maybe"], "uncertainty must be true or false"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", *args, "--bundle", str(checkpoints["bundle"]), "--progress", "False"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("monai-lgg: error: "), lines
        assert message in lines[0]
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


# ---------------------------------------------------------------- statistics and the CV report tool


def test_rank_statistics_known_answers():
    rng = np.random.default_rng(0)
    dice = rng.random(20)
    perfect = correlation_test(1 - dice, dice, n_resamples=999)
    assert perfect["rho"] == pytest.approx(-1) and perfect["ci"] == pytest.approx([-1, -1])
    assert perfect["p_value"] == pytest.approx(1 / 1000)  # no permutation reaches |rho| = 1
    assert correlation_test(dice**3, dice, n_resamples=99)["rho"] == pytest.approx(1)  # ranks only
    noise = correlation_test(rng.random(20), dice, n_resamples=999)
    assert abs(noise["rho"]) < 0.5 and noise["p_value"] > 0.05 and noise["ci"][0] < 0 < noise["ci"][1]
    # x and y both follow z: strongly correlated, but not beyond z
    z = rng.random(200)
    x, y = z + 0.05 * rng.random(200), z + 0.05 * rng.random(200)
    assert spearman(x, y) > 0.9 and abs(partial_spearman(x, y, z)) < 0.2
    assert detection_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert detection_auc([0.5, 0.5], [True, False]) == 0.5
    assert np.isnan(correlation_test([1, 1, 1], [1, 2, 3])["rho"])  # constant: undefined, not 0


def _tool():
    from monai_lgg.studies import uncertainty_report

    return uncertainty_report


def test_report_tool_known_ranking(tmp_path):
    """Uncertainties ranked exactly against Dice: rho -1, AUC 1, the low-Dice patients ranked first; report written."""
    tool = _tool()
    dice = np.linspace(0.1, 0.95, 12)
    rows = [
        {
            "case": f"c{i}",
            "fold": i % 2,
            "dice": d,
            "predicted_voxels": 1000 + 37 * ((i * 5) % 12),
            "entropy_tumour": 1 - d,
            "entropy_border": 2 - d,
            "mutual_info_tumour": (1 - d) / 3,
            "mutual_info_border": "",
        }
        for i, d in enumerate(dice)
    ]
    result = tool.evaluate(rows, low=0.5, n_resamples=499)
    low = int((dice < 0.5).sum())
    for key in ("entropy_tumour", "entropy_border", "mutual_info_tumour"):
        r = result["summaries"][key]
        assert r["spearman"]["rho"] == pytest.approx(-1) and r["auc_low_dice"] == 1.0
        assert r["low_dice_ranks"] == list(range(1, low + 1))
    assert not result["summaries"]["mutual_info_border"]["available"]
    out = tool.write_report(rows, tmp_path / "report", result, ["python tools/uncertainty_report.py test"])
    readme = (out / "README.md").read_text()
    assert "-1.00 (-1.00 to -1.00)" in readme and "python tools/uncertainty_report.py test" in readme
    assert cv2.imread(str(out / "uncertainty_vs_dice.png")) is not None
    assert json.loads((out / "results.json").read_text())["patients"] == 12
    assert len(tool._read_rows(out / "per_patient.csv")) == 12


def test_report_tool_collects_out_of_fold_and_refuses_leaks(tiny_dataset, tmp_path):
    """Each patient is scored by its own fold's model (2 flips: 2 passes); a model whose sidecar lists one of
    its test patients is refused."""
    tool = _tool()
    from monai_lgg.data.datalist import load_fold

    datalist = tiny_dataset / "datalist.json"
    cell = tmp_path / "cell"
    for fold in (0, 1):
        torch.manual_seed(fold)
        net = bundle_network(PROJECT_ROOT / "bundles" / "unet", in_channels=3, out_channels=1, spatial_size=[64, 64])
        path = cell / f"fold{fold}" / "models" / "model.pt"
        save_checkpoint(net.state_dict(), path)
        training = [item["case"] for item in load_fold(datalist, fold, "train")]
        write_json(sidecar_path(path), {"geometry": "brain", "spatial_size": [64, 64], "training_cases": training})
    rows = tool.collect(cell, tiny_dataset, folds=(0, 1))
    expected = [item["case"] for fold in (0, 1) for item in load_fold(datalist, fold, "test")]
    assert [r["case"] for r in rows] == expected and all(r["passes"] == 2 for r in rows)
    assert all(0 <= r["dice"] <= 1 and set(UNCERTAINTY_COLUMNS) <= set(r) for r in rows)
    write_json(
        cell / "fold1" / "models" / "model.json",
        {"geometry": "brain", "spatial_size": [64, 64], "training_cases": [expected[-1]]},
    )
    with pytest.raises(LGGInputError, match="not a test patient of fold 1"):
        tool.collect(cell, tiny_dataset, folds=(0, 1))

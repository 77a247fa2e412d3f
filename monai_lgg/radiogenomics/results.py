"""Write ``docs/results/radiogenomics/``: the analysis on the reference masks and on automatic masks.

Re-runnable: each mask set given is analysed into its own sub-folder (``reference/``,
``shipped_model/``, ``cv/``); sub-folders of sets not given this time are kept, and the README is
rebuilt from every sub-folder present. Example (the shared data converted once into /tmp/lgg)::

    python -m monai_lgg.radiogenomics.results --reference /tmp/lgg \\
        --clinical ../shared/data/lgg/kaggle_3m/data.csv --cv OOF_MASKS --output docs/results/radiogenomics
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from monai_lgg.io import atomic_dir, atomic_path
from monai_lgg.radiogenomics.analysis import run_radiogenomics
from monai_lgg.radiogenomics.associations import chi2_power, detectable_effect
from monai_lgg.radiogenomics.report import FEATURE_LABELS

__all__ = ["MASK_SETS", "write_results", "main"]

#: sub-folder -> (what the masks are, whether they are an honest automatic-mask result)
MASK_SETS = {
    "reference": "reference (manual) masks of the data set",
    "shipped_model": "shipped UNet weights, TRAINED ON THESE 66 PATIENTS (not an honest automatic-mask result)",
    "cv": "cross-validated UNet masks (each patient segmented by a model that never saw it)",
}
PAPER = {
    ("bevr", "RNASeqCluster"): "p < 0.0002 (strongest)",
    ("margin_fluctuation", "RNASeqCluster"): "p < 0.005",
}
PAPER_N = 110
KEPT_FILES = ("shape_features.csv", "associations.csv", "agreement.csv", "summary.json", "report.md")


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(value: str | float | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _p(value: str | float | None) -> str:
    value = _float(value)
    if math.isnan(value):
        return "–"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _analyse(
    name: str, masks: str, reference: str | None, clinical: str, output: Path, folds: str | None = None
) -> None:
    """Run the analysis of one mask set into ``output / name`` (the HTML stays out: it embeds the PNGs again)."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / name
        summary = run_radiogenomics(
            masks,
            run_dir,
            clinical,
            reference,
            title=f"Radiogenomics: {MASK_SETS[name]}",
            masks_label=MASK_SETS[name],
            folds=folds,
        )
        command = ["monai-lgg", "radiogenomics", masks, str(output / name), "--clinical", clinical]
        command += ["--reference", reference] if reference else []
        command += ["--folds", folds] if folds else []
        command += ["--label", MASK_SETS[name]]
        summary["command"] = shlex.join(command)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        with atomic_dir(output / name) as target:
            for item in KEPT_FILES:
                if (run_dir / item).is_file():
                    shutil.copy2(run_dir / item, target / item)
            for sub in ("figures", "reference"):
                if (run_dir / sub).is_dir():
                    shutil.copytree(run_dir / sub, target / sub)


def _primary(folder: Path) -> dict[tuple[str, str], dict]:
    return {
        (r["feature"], r["variable"]): r for r in _read_csv(folder / "associations.csv") if r["family"] == "primary"
    }


def _significant(rows: dict[tuple[str, str], dict], key: str = "p_bonferroni") -> list[str]:
    return [
        f"{FEATURE_LABELS.get(f, f)} × {v} ({key.replace('p_', '')} p = {_p(r[key])})"
        for (f, v), r in rows.items()
        if _float(r[key]) < 0.05
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _power_section(reference: dict[tuple[str, str], dict], primary_tests: int) -> str:
    alpha_ours, alpha_paper = 0.05 / primary_tests, 0.005
    rna = reference.get(("bevr", "RNASeqCluster"))
    n_rna = int(rna["n"]) if rna else 52
    share = n_rna / 66
    rows = []
    for label, n in (
        ("here, RNASeq known", n_rna),
        ("here, all patients", 66),
        (f"paper, RNASeq known (estimate: 110 × {n_rna}/66)", round(PAPER_N * share)),
        ("paper, all patients", PAPER_N),
    ):
        rows.append(
            [label, str(n), f"{detectable_effect(n, 3, alpha_paper):.2f}", f"{detectable_effect(n, 3, alpha_ours):.2f}"]
        )
    text = [
        "Four RNASeq clusters make 2 × 4 tables (3 degrees of freedom). The smallest effect (Cramér's V = Cohen's w) "
        "that a test of independence detects with 80 % power, by the non-central chi-square approximation "
        "(Cohen 1988; Fisher's exact test is slightly more conservative):",
        "",
        _table(["patients", "n", f"w at α = {alpha_paper} (paper)", f"w at α = 0.05/{primary_tests} (here)"], rows),
        "",
    ]
    observed = [(key, r) for key, r in sorted(reference.items()) if key[1] == "RNASeqCluster" and _float(r["p"]) < 0.05]
    if observed:
        text.append(
            "Power, at the effect measured here on the reference masks, of a study of each size (α = 0.05/"
            f"{primary_tests}):"
        )
        text.append("")
        prow = []
        for (feature, variable), r in observed:
            effect = _float(r["effect"])
            prow.append(
                [
                    f"{FEATURE_LABELS.get(feature, feature)} × {variable}",
                    f"{effect:.2f}",
                    f"{chi2_power(effect, n_rna, 3, alpha_ours):.2f}",
                    f"{chi2_power(effect, round(PAPER_N * share), 3, alpha_ours):.2f}",
                ]
            )
        text.append(
            _table(
                ["association", "Cramér's V here", f"power, n = {n_rna}", f"power, n = {round(PAPER_N * share)}"], prow
            )
        )
        text.append("")
    ours, theirs = detectable_effect(n_rna, 3, alpha_ours), detectable_effect(round(PAPER_N * share), 3, alpha_paper)
    text.append(
        f"So with 66 patients ({n_rna} with an RNASeq cluster) only large effects (V ≥ {ours:.2f}) are detected "
        "with 80 % "
        f"power after the correction, against V ≥ {theirs:.2f} for the paper's design; the paper's 110 patients also "
        "ran fewer tests (10). Effects measured on a sample this small are inflated by selection (winner's curse), and "
        "a failed replication here would be weak evidence against the paper."
    )
    return "\n".join(text)


def write_readme(output: Path, command: str) -> str:
    """Build ``README.md`` from every analysed sub-folder of ``output``."""
    present = [name for name in MASK_SETS if (output / name / "associations.csv").is_file()]
    if "reference" not in present:
        raise FileNotFoundError(f"{output}/reference: run with --reference first")
    primary = {name: _primary(output / name) for name in present}
    summaries = {name: json.loads((output / name / "summary.json").read_text()) for name in present}
    ref_summary = summaries["reference"]
    primary_tests = ref_summary["tests"]["primary"]
    header = ["feature × variable", "n", "p (reference)", "Bonferroni p (reference)"]
    for name in present[1:]:
        header += [f"p ({name})", f"Bonferroni p ({name})"]
    header.append("paper (110 patients, automatic masks)")
    rows = []
    for key, r in primary["reference"].items():
        line = [f"{FEATURE_LABELS.get(key[0], key[0])} × {key[1]}", r["n"], _p(r["p"]), _p(r["p_bonferroni"])]
        for name in present[1:]:
            other = primary[name].get(key, {})
            line += [_p(other.get("p")), _p(other.get("p_bonferroni"))]
        line.append(PAPER.get(key, "–"))
        rows.append(line)

    parts = [
        "# Radiogenomics: tumour shape vs genomic subtypes (Buda et al. 2019, re-run here)",
        "The data set's own scientific question (Buda, Saha & Mazurowski 2019, *Computers in Biology and Medicine* "
        "109:218, arXiv:1906.03720): do shape features measured on the tumour masks predict the genomic subtypes in "
        "`data.csv`? Here it is answered with `monai-lgg radiogenomics` "
        "([docs/radiogenomics.md](../../radiogenomics.md): "
        "every definition and test) on the 66 shared patients, for the reference masks and for automatic masks.",
        "## Commands",
        f"This folder was written by\n\n```bash\n{command}\n```\n\nwhich runs, per mask set:\n\n```bash\n"
        + "\n".join(summaries[name]["command"] for name in present)
        + "\n```",
        "The reference masks are the converted labels (`monai-lgg convert ../shared/data/lgg/kaggle_3m /tmp/lgg`); "
        "`shipped_model` masks come from `monai-lgg predict /tmp/lgg /tmp/rg_shipped` with the shipped "
        "`bundles/unet/models/model.pt`."
        + (
            "" if "cv" in present else " The cross-validated masks do not exist yet: see *Cross-validated masks* below."
        ),
        "## What the paper did and found",
        "- 110 TCGA-LGG patients (5 institutions); FLAIR masks from their deep-learning segmentation "
        "(mean / median Dice 82 % / 85 %), compared with manual masks.\n"
        "- Three features: angular standard deviation and margin fluctuation (2D), "
        "bounding ellipsoid volume ratio (3D).\n"
        '- Fisher\'s exact test "for 10 hypotheses for each pair of imaging feature and genomic subtype", Bonferroni '
        "correction, significance at p < 0.005 (abstract, arXiv:1906.03720).\n"
        "- Strongest associations: RNASeq cluster with bounding ellipsoid volume ratio (p < 0.0002) and with margin "
        "fluctuation (p < 0.005); the abstract adds further associations of the bounding ellipsoid volume ratio "
        "(the copy read here was cut off mid-sentence, so they are not listed).",
        "## Results: the primary family (the paper's three features × the seven genomic clusterings)",
        "Fisher's exact test of the feature's median split against the clusters (2 × K, exact Freeman–Halton), "
        f"Bonferroni over the {primary_tests} tests of the family. `–` in the paper column: not one of the two "
        "associations quoted above (the paper may report more).",
        _table(header, rows),
    ]
    bullets = []
    for name in present:
        sig = _significant(primary[name])
        bullets.append(
            f"- **{name}** ({MASK_SETS[name]}): "
            + (
                f"{len(sig)} of {primary_tests} significant after Bonferroni: " + "; ".join(sig)
                if sig
                else f"none of the {primary_tests} significant after Bonferroni"
            )
            + "."
        )
    parts.append("\n".join(bullets))
    ref = primary["reference"]
    bevr, mf = ref.get(("bevr", "RNASeqCluster")), ref.get(("margin_fluctuation", "RNASeqCluster"))
    comparison = ["## Comparison with the paper"]
    if bevr is not None and mf is not None:
        comparison.append(
            "- **Bounding ellipsoid volume ratio × RNASeq cluster**, the paper's strongest finding: "
            f"p = {_p(bevr['p'])} "
            f"(Bonferroni {_p(bevr['p_bonferroni'])}, n = {bevr['n']}) on the reference masks"
            + (
                ", i.e. significant after correction on this subset too"
                if _float(bevr["p_bonferroni"]) < 0.05
                else ", not significant after correction here"
            )
            + f". Per cluster (low/high BEVR): {bevr['groups'].split(': ', 1)[-1]}."
        )
        comparison.append(
            f"- **Margin fluctuation × RNASeq cluster** (paper p < 0.005): p = {_p(mf['p'])} (Bonferroni "
            f"{_p(mf['p_bonferroni'])}) on the reference masks"
            + (
                ": significant here too."
                if _float(mf["p_bonferroni"]) < 0.05
                else f": not significant after correction with {mf['n']} patients."
            )
        )
    comparison += [
        "- This is **not an independent replication**: the 66 patients are a subset of the paper's 110, and the "
        "reference masks are the data set's manual masks, whereas the paper's headline used its automatic masks.",
        "- Feature definitions follow the paper's description as far as it could be found (docs/radiogenomics.md lists "
        "each choice: largest slice, 10 angular bins, normalised radii, the moving-average window of margin "
        "fluctuation, median split); the exact values of the authors' code cannot be checked.",
        "- **Voxel spacing is unknown** in the Kaggle TIFFs (1 mm assumed). The bounding ellipsoid volume ratio, "
        "extent and solidity do not depend on it (the minimum-volume ellipsoid and the convex hull follow any "
        "scaling of the axes), and the 2D features depend only on the in-plane pixels being square; volume, surface "
        "area, sphericity, elongation, flatness and diameter are in voxel units and would change with the true "
        "slice thickness.",
    ]
    parts += [comparison[0], "\n".join(comparison[1:])]
    parts += ["## Power: 66 patients instead of 110", _power_section(ref, primary_tests)]
    for name in present[1:]:
        agree = _read_csv(output / name / "agreement.csv")
        dice = summaries[name].get("dice_vs_reference", {})
        rows = [
            [
                FEATURE_LABELS.get(a["feature"], a["feature"]),
                a["n"],
                f"{_float(a['icc']):.2f}",
                f"{_float(a['spearman_rho']):.2f}",
                f"{_float(a['bias']):.3g}",
                f"{_float(a['loa_low']):.3g} … {_float(a['loa_high']):.3g}",
                f"{_float(a['same_median_side']):.2f}",
            ]
            for a in agree
        ]
        parts += [
            f"## How far the `{name}` masks change the science",
            f"Masks: {MASK_SETS[name]}. 3D Dice against the reference: mean {_float(dice.get('mean')):.3f}, "
            f"median {_float(dice.get('median')):.3f}. Agreement of each feature (ICC(A,1), Spearman, Bland–Altman "
            "bias and 95 % limits, share of patients on the same side of the median, i.e. in the same row of the "
            "Fisher tables):",
            _table(["feature", "n", "ICC", "Spearman ρ", "bias", "95 % limits", "same median side"], rows),
            f"![agreement]({name}/figures/agreement.png)\n\n![p-values]({name}/figures/pvalue_comparison.png)",
            f"Full report: [{name}/report.md]({name}/report.md).",
        ]
    parts += [
        "## Figures (reference masks)",
        "![distributions](reference/figures/distributions.png)\n\n![heat map](reference/figures/pvalue_heatmap.png)",
        "Full report: [reference/report.md](reference/report.md); tables: `*/shape_features.csv`, "
        "`*/associations.csv`, "
        "`*/agreement.csv`.",
    ]
    if "cv" not in present:
        parts += [
            "## Cross-validated masks (to do: run when the fold models exist)",
            "Each patient must be segmented by the fold model that neither trained nor selected its epoch on it. "
            "The out-of-fold predictions of `monai_lgg.studies.crossval.out_of_fold` (`<grid cell>/oof/<case>.npz`, "
            "probabilities thresholded at 0.5 here, without the leave-one-fold-out post-processing) are such "
            "masks:",
            "```bash\n.venv/bin/python -m monai_lgg.radiogenomics.results --reference /work/data/lgg \\\n"
            "    --clinical ../shared/data/lgg/kaggle_3m/data.csv \\\n"
            "    --cv /work/runs/cv_recipe/unet-dicece-adamw/oof --output docs/results/radiogenomics\n```",
            "Alternatively let every fold model segment the whole converted set, one folder per fold "
            "(`monai-lgg predict /work/data/lgg /tmp/oof/fold$f --checkpoint .../fold$f/models/model.pt`), and "
            "pass `--cv /tmp/oof/fold0,...,/tmp/oof/fold4 --cv_folds /work/data/lgg/datalist.json`: each patient's "
            "mask is then taken from its own fold's folder. Either way the writer adds `cv/` (features, "
            "associations, agreement with the reference, report), keeps `shipped_model/`, re-runs `reference/`, "
            "and rebuilds this README with the CV columns. The plain command is `monai-lgg radiogenomics "
            "/work/runs/cv_recipe/unet-dicece-adamw/oof OUT --reference /work/data/lgg "
            '--clinical ../shared/data/lgg/kaggle_3m/data.csv --label "cross-validated UNet masks"`.',
        ]
    text = "\n\n".join(parts) + "\n"
    with atomic_path(output / "README.md") as tmp:
        tmp.write_text(text)
    return text


def write_results(
    output: str | Path,
    reference: str,
    clinical: str,
    shipped: str | None = None,
    cv: str | None = None,
    command: str = "",
    cv_folds: str | None = None,
) -> Path:
    """Analyse the given mask sets into ``output/<set>/`` and rebuild ``output/README.md``.

    ``cv_folds`` (a ``datalist.json``) makes ``cv`` one folder per fold model, each patient's mask taken
    from its own fold's folder.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    _analyse("reference", reference, None, clinical, output)
    if shipped:
        _analyse("shipped_model", shipped, reference, clinical, output)
    if cv:
        _analyse("cv", cv, reference, clinical, output, cv_folds)
    write_readme(output, command)
    return output


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="reference masks: a converted set (labelsTr/) or mask folder (required)")
    parser.add_argument("--clinical", help="data.csv (required)")
    parser.add_argument("--shipped", help="masks of the shipped model on the same patients (labelled: trained on them)")
    parser.add_argument("--cv", help="cross-validated (out-of-fold) masks; several folders separated by commas")
    parser.add_argument(
        "--cv_folds", help="datalist.json: --cv is one folder per fold model (fold 0 first), masks picked by fold"
    )
    parser.add_argument("--output", default="docs/results/radiogenomics")
    parser.add_argument("--readme_only", action="store_true", help="only rebuild README.md from the sub-folders")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if args.readme_only:
        previous = (output / "README.md").read_text() if (output / "README.md").is_file() else ""
        marker = "This folder was written by\n\n```bash\n"
        # keep the command that analysed the sub-folders
        command = previous.split(marker, 1)[1].split("\n```", 1)[0] if marker in previous else "(unknown)"
        write_readme(output, command)
        print(f"wrote {output}/README.md")
        return
    if not args.reference or not args.clinical:
        parser.error("--reference and --clinical are required (unless --readme_only)")
    command = shlex.join(["python", "-m", "monai_lgg.radiogenomics.results", *(sys.argv[1:] if argv is None else argv)])
    written = write_results(output, args.reference, args.clinical, args.shipped, args.cv, command, args.cv_folds)
    print(f"wrote {written}/README.md")


if __name__ == "__main__":
    main()

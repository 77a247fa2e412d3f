"""The radiogenomics report: Markdown + self-contained HTML with plots.

Figures (matplotlib object API, no GUI backend): feature distributions per genomic subtype, a
heat map of the association p-values and, with reference masks, agreement (scatter and Bland-Altman)
and the p-values of both mask sets against each other.
"""

from __future__ import annotations

import base64
import html
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monai_lgg.radiogenomics.associations import category_label, category_order, is_missing
from monai_lgg.radiogenomics.features import PAPER_FEATURES, TESTED_FEATURES
from monai_lgg.report import figure_png, new_figure

__all__ = ["write_report", "FEATURE_LABELS"]

FEATURE_LABELS = {
    "angular_sd": "angular SD (2D)",
    "margin_fluctuation": "margin fluctuation (2D)",
    "bevr": "bounding ellipsoid volume ratio (3D)",
    "volume_mm3": "volume (mm³)",
    "surface_area_mm2": "surface area (mm²)",
    "sphericity": "sphericity",
    "elongation": "elongation",
    "flatness": "flatness",
    "extent": "extent",
    "solidity": "solidity",
    "max_diameter_mm": "max 3D diameter (mm)",
}
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}th{background:#f2f2f2}img{max-width:100%;border:1px solid #eee}"
    "li,p{font-size:14px}"
)
ALPHA = 0.05


def _p(value: object) -> str:
    if value == "" or value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    value = float(value)
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _num(value: object, digits: int = 3) -> str:
    if value == "" or value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.{digits}g}"


def _fisher(tests: Sequence[dict]) -> dict[tuple[str, str], dict]:
    return {(r["feature"], r["variable"]): r for r in tests if r["test"].startswith("fisher")}


def _continuous(tests: Sequence[dict]) -> dict[tuple[str, str], dict]:
    return {(r["feature"], r["variable"]): r for r in tests if not r["test"].startswith("fisher")}


# ------------------------------------------------------------------------------------------ figures


def distributions_figure(
    rows: Sequence[dict], clinical: Mapping, tests: Sequence[dict], variables: Sequence[str]
) -> bytes:
    """Box plots (with every patient as a dot) of the paper's features per category of each variable."""
    fisher = _fisher(tests)
    fig = new_figure(2.3 * len(variables) + 0.6, 2.5 * len(PAPER_FEATURES))
    axes = fig.subplots(len(PAPER_FEATURES), len(variables), squeeze=False)
    rng = np.random.default_rng(0)  # jitter only
    for i, feature in enumerate(PAPER_FEATURES):
        for j, variable in enumerate(variables):
            ax = axes[i][j]
            groups: dict[str, list[float]] = {}
            for row in rows:
                value = float(row[feature])
                answer = clinical.get(row["patient"], {}).get(variable)
                if np.isfinite(value) and not is_missing(answer):
                    groups.setdefault(category_label(answer), []).append(value)
            labels = sorted(groups, key=category_order)
            if labels:
                ax.boxplot([groups[k] for k in labels], showfliers=False, widths=0.6)
                for k, label in enumerate(labels, start=1):
                    ax.scatter(
                        k + rng.uniform(-0.15, 0.15, len(groups[label])), groups[label], s=8, alpha=0.6, color="#4C72B0"
                    )
                ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
            test = fisher.get((feature, variable))
            ax.set_title(f"{variable}\nFisher p={_p(test['p']) if test else '–'}", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
            if j == 0:
                ax.set_ylabel(FEATURE_LABELS.get(feature, feature), fontsize=8)
    return figure_png(fig)


def heatmap_figure(tests: Sequence[dict], features: Sequence[str], variables: Sequence[str]) -> bytes:
    """-log10 p of every feature x variable test: Fisher (median split) and the continuous tests."""
    fig = new_figure(1.0 + 0.75 * len(variables) * 2, 0.9 + 0.42 * len(features))
    axes = fig.subplots(1, 2, sharey=True)
    panels = []
    for name, table in (
        ("Fisher exact, median split", _fisher(tests)),
        ("Kruskal-Wallis / Spearman", _continuous(tests)),
    ):
        grid = np.full((len(features), len(variables)), np.nan)
        labels: dict[tuple[int, int], str] = {}
        for i, feature in enumerate(features):
            for j, variable in enumerate(variables):
                row = table.get((feature, variable))
                if row is not None and np.isfinite(row["p"]):
                    grid[i, j] = -math.log10(max(row["p"], 1e-12))
                    bonferroni, fdr = _adjusted(row, "p_bonferroni") < ALPHA, _adjusted(row, "p_fdr") < ALPHA
                    labels[i, j] = _p(row["p"]) + ("**" if bonferroni else "*" if fdr else "")
        panels.append((name, grid, labels))
    finite = [float(np.nanmax(g)) for _, g, _ in panels if np.isfinite(g).any()]
    top = max([3.0, *finite])  # one colour scale for both panels
    for ax, (name, grid, labels) in zip(axes, panels, strict=True):
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=top, aspect="auto")
        for (i, j), text in labels.items():  # dark text on the bright (small p) end of viridis, light elsewhere
            colour = "black" if grid[i, j] > 0.6 * top else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=colour)
        ax.set_xticks(range(len(variables)), variables, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(features)), [FEATURE_LABELS.get(f, f) for f in features], fontsize=7)
        ax.set_title(f"{name}\n(* FDR < {ALPHA}, ** Bonferroni < {ALPHA}, within family)", fontsize=8)
    fig.colorbar(image, ax=axes, label="-log10 p", shrink=0.8)
    return figure_png(fig)


def _adjusted(row: dict, key: str) -> float:
    value = row.get(key, "")
    return float(value) if value != "" else float("nan")


def agreement_figure(rows: Sequence[dict], reference: Sequence[dict], features: Sequence[str], label: str) -> bytes:
    """Per feature: masks against reference (identity line) and the Bland-Altman plot."""
    by_patient = {r["patient"]: r for r in reference}
    fig = new_figure(3.0 * len(features), 5.6)
    axes = fig.subplots(2, len(features), squeeze=False)
    for j, feature in enumerate(features):
        pairs = [
            (float(by_patient[r["patient"]][feature]), float(r[feature])) for r in rows if r["patient"] in by_patient
        ]
        pairs = np.array([p for p in pairs if np.isfinite(p).all()]).reshape(-1, 2)
        ref, auto = pairs[:, 0], pairs[:, 1]
        top, bottom = axes[0][j], axes[1][j]
        top.scatter(ref, auto, s=10, alpha=0.7, color="#4C72B0")
        if len(pairs):
            lo, hi = float(pairs.min()), float(pairs.max())
            top.plot([lo, hi], [lo, hi], color="#C44E52", linewidth=1)
        top.set_title(FEATURE_LABELS.get(feature, feature), fontsize=9)
        top.set_xlabel("reference masks", fontsize=8)
        top.set_ylabel("masks", fontsize=8)
        mean, diff = (ref + auto) / 2, auto - ref
        bottom.scatter(mean, diff, s=10, alpha=0.7, color="#4C72B0")
        if len(diff) >= 3:
            bias, sd = diff.mean(), diff.std(ddof=1)
            for level, style in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
                bottom.axhline(level, color="#C44E52", linestyle=style, linewidth=1)
        bottom.set_xlabel("mean of the two", fontsize=8)
        bottom.set_ylabel("masks − reference", fontsize=8)
        for ax in (top, bottom):
            ax.tick_params(labelsize=7)
    fig.suptitle(
        f"Masks: {label}\nTop: against the reference masks (red: identity); "
        "bottom: Bland–Altman (bias and 95 % limits of agreement)",
        fontsize=9,
    )
    return figure_png(fig)


def pvalue_comparison_figure(tests: Sequence[dict], reference_tests: Sequence[dict], label: str) -> bytes:
    """-log10 p of each test on the masks against the same test on the reference masks."""
    ref = {(r["feature"], r["variable"], r["test"].split(" ")[0]): r for r in reference_tests}
    fig = new_figure(5.2, 4.8)
    ax = fig.subplots()
    for family, colour in (("exploratory", "#8C8C8C"), ("primary", "#C44E52")):
        pts = []
        for r in tests:
            other = ref.get((r["feature"], r["variable"], r["test"].split(" ")[0]))
            if r["family"] == family and other is not None and np.isfinite(r["p"]) and np.isfinite(other["p"]):
                pts.append((-math.log10(max(other["p"], 1e-12)), -math.log10(max(r["p"], 1e-12))))
        if pts:
            pts = np.array(pts)
            ax.scatter(pts[:, 0], pts[:, 1], s=12, alpha=0.7, color=colour, label=f"{family} ({len(pts)} tests)")
    top = ax.get_xlim()[1], ax.get_ylim()[1]
    ax.plot([0, max(top)], [0, max(top)], color="black", linewidth=0.8)
    ax.axhline(-math.log10(ALPHA), color="#55A868", linestyle=":", linewidth=1)
    ax.axvline(-math.log10(ALPHA), color="#55A868", linestyle=":", linewidth=1)
    ax.set_xlabel("-log10 p, reference masks")
    ax.set_ylabel("-log10 p, masks")
    ax.set_title(textwrap.fill(f"Same test on both mask sets (dotted: p = 0.05); masks: {label}", 70), fontsize=8)
    ax.legend(fontsize=8)
    return figure_png(fig)


# ------------------------------------------------------------------------------------------ tables


def primary_table(tests: Sequence[dict], reference_tests: Sequence[dict] | None) -> tuple[list[str], list[list[str]]]:
    ref = _fisher(reference_tests) if reference_tests else {}
    header = ["feature", "variable", "n", "p", "Bonferroni p", "FDR p", "Cramér's V", "low/high per category"]
    if reference_tests:
        header += ["reference p", "reference Bonferroni p"]
    out = []
    for r in tests:
        if r["family"] != "primary":
            continue
        line = [
            FEATURE_LABELS.get(r["feature"], r["feature"]),
            r["variable"],
            str(r["n"]),
            _p(r["p"]),
            _p(r["p_bonferroni"]),
            _p(r["p_fdr"]),
            _num(r["effect"], 2),
            r["groups"].replace("low/high per category: ", "") or r["note"],
        ]
        if reference_tests:
            other = ref.get((r["feature"], r["variable"]))
            line += [_p(other["p"]) if other else "–", _p(other["p_bonferroni"]) if other else "–"]
        out.append(line)
    return header, out


def smallest_table(tests: Sequence[dict], count: int = 12) -> tuple[list[str], list[list[str]]]:
    header = ["feature", "variable", "family", "test", "n", "p", "Bonferroni p", "FDR p", "effect"]
    ranked = sorted((r for r in tests if np.isfinite(r["p"])), key=lambda r: r["p"])[:count]
    rows = [
        [
            FEATURE_LABELS.get(r["feature"], r["feature"]),
            r["variable"],
            r["family"],
            r["test"],
            str(r["n"]),
            _p(r["p"]),
            _p(r["p_bonferroni"]),
            _p(r["p_fdr"]),
            f"{r['effect_name']} {_num(r['effect'], 2)}",
        ]
        for r in ranked
    ]
    return header, rows


def agreement_table(agree: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = [
        "feature",
        "n",
        "ICC(A,1)",
        "Spearman ρ",
        "mean reference",
        "mean masks",
        "bias",
        "95 % limits",
        "same median side",
    ]
    rows = [
        [
            FEATURE_LABELS.get(a["feature"], a["feature"]),
            str(a["n"]),
            _num(a.get("icc"), 3),
            _num(a.get("spearman_rho"), 3),
            _num(a.get("mean_reference"), 4),
            _num(a.get("mean_masks"), 4),
            _num(a.get("bias"), 3),
            f"{_num(a.get('loa_low'), 3)} … {_num(a.get('loa_high'), 3)}",
            _num(a.get("same_median_side"), 3),
        ]
        for a in agree
    ]
    return header, rows


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows])


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(summary: dict) -> list[str]:
    counts = summary["counts"]
    facts = [
        f"Masks: {summary['masks_label']} ({summary['masks']}); clinical table: {summary['clinical']}.",
        f"{counts['patients_with_masks']} patients with masks, "
        f"{counts['patients_with_clinical_row']} of them in the clinical table"
        + (
            f" (no row: {', '.join(counts['patients_without_clinical_row'])})"
            if counts["patients_without_clinical_row"]
            else ""
        )
        + (
            f"; empty masks (shape features not measurable): {', '.join(summary['empty_masks'])}"
            if summary["empty_masks"]
            else ""
        )
        + ".",
        "Blank cells per variable (excluded per test): "
        + ", ".join(f"{v} {n}" for v, n in counts["blank_cells_per_variable"].items())
        + ".",
        f"Tests with a p-value: {summary['tests']['primary']} primary (the paper's features × genomic clusterings, "
        f"Fisher), {summary['tests']['exploratory']} exploratory; Bonferroni and Benjamini–Hochberg FDR are applied "
        "within each family.",
        f"Voxel spacing: {summary['spacing_note']} "
        f"({'×'.join(f'{s:g}' for s in summary['slice_spacing_mm'])} mm here); "
        "the Kaggle TIFFs store none, so mm values of converted Kaggle data are in voxel units (1 mm assumed).",
    ]
    if summary.get("default_variables_absent"):
        facts.append(f"Default variables not in the table: {', '.join(summary['default_variables_absent'])}.")
    if summary.get("reference"):
        dice = summary["dice_vs_reference"]
        facts.append(
            f"Reference masks: {summary['reference']}; {summary['paired_patients']} patients in both; "
            "3D Dice of the masks "
            f"against the reference: mean {_num(dice['mean'], 3)}, median {_num(dice['median'], 3)}."
        )
    facts.append("Definitions, tests and their choices: docs/radiogenomics.md.")
    return facts


CAPTIONS = {
    "distributions": "The paper's features per genomic subtype",
    "pvalue_heatmap": "p-values of every test",
    "agreement": "Agreement of the features with the reference masks",
    "pvalue_comparison": "Does the science change with the masks?",
}


def write_report(
    folder: Path,
    summary: dict,
    rows: Sequence[dict],
    tests: Sequence[dict],
    clinical: Mapping,
    title: str | None = None,
    reference_rows: Sequence[dict] | None = None,
    reference_tests: Sequence[dict] | None = None,
    agree: Sequence[dict] | None = None,
) -> None:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``folder``."""
    title = title or "Radiogenomic analysis: tumour shape vs genomic subtypes"
    figures = {
        "distributions": distributions_figure(
            rows, clinical, tests, summary["primary_variables"] or summary["variables"]
        ),
        "pvalue_heatmap": heatmap_figure(tests, TESTED_FEATURES, summary["variables"]),
    }
    sections: list[tuple[str, tuple[list[str], list[list[str]]] | None, str]] = [
        (
            "Primary family: the paper's three features × genomic clusterings (Fisher exact test, median split)",
            primary_table(tests, reference_tests),
            "",
        ),
        ("Smallest p-values, all tests", smallest_table(tests), ""),
    ]
    if reference_rows is not None and agree is not None and reference_tests is not None:
        label = summary["masks_label"]
        figures["agreement"] = agreement_figure(rows, reference_rows, [*PAPER_FEATURES, "volume_mm3"], label)
        figures["pvalue_comparison"] = pvalue_comparison_figure(tests, reference_tests, label)
        sections.append(("Agreement with the reference masks", agreement_table(agree), ""))
        sections.append(("Smallest p-values on the reference masks", smallest_table(reference_tests), ""))
    (folder / "figures").mkdir(exist_ok=True)
    for name, png in figures.items():
        (folder / "figures" / f"{name}.png").write_bytes(png)

    md = [f"# {title}", "\n".join(f"- {line}" for line in _facts(summary))]
    page = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in _facts(summary))
        + "</ul>",
    ]
    for heading, table, _ in sections:
        md += [f"## {heading}", _md_table(*table)]
        page += [f"<h2>{html.escape(heading)}</h2>", _html_table(*table)]
    for name, png in figures.items():
        md.append(f"## {CAPTIONS[name]}\n\n![{name}](figures/{name}.png)")
        data = base64.b64encode(png).decode()
        page.append(f"<h2>{html.escape(CAPTIONS[name])}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    page.append("</body></html>")
    (folder / "report.md").write_text("\n\n".join(md) + "\n")
    (folder / "report.html").write_text("\n".join(page))

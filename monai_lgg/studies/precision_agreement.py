"""Do bf16 masks agree with fp32? Segment real patients with both precisions and compare.

``monai-lgg predict --precision auto`` (the default) runs bf16 on CPUs with native bfloat16; this measures
what that costs in agreement, with the bundle's shipped weights and every other default (TTA, post-processing)::

    python tools/precision_agreement.py ../shared/data/lgg/kaggle_3m --cases 6

``SOURCE`` is a folder of Kaggle patient folders (or of NIfTI volumes): every ``len // cases``-th case in sorted
order is taken. Prints a Markdown table: per case the Dice between the two masks (two empty masks count as 1)
and the largest absolute difference of the tumour probabilities. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

from monai_lgg.errors import LGGInputError
from monai_lgg.inference.predict import predict


def _read(path: Path) -> np.ndarray:
    return tifffile.imread(path) if path.suffix == ".tif" else np.asarray(nib.load(path).dataobj)


def _outputs(case: Path, bundle: str, precision: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The case's masks and probabilities from ``predict`` at ``precision``, stacked over its files."""
    predict(case, folder, bundle=bundle, precision=precision, probabilities=True, progress=False)
    masks = sorted(folder.rglob("*_mask.*"))
    probabilities = sorted(folder.rglob("*_prob.*"))
    if not masks or len(masks) != len(probabilities):
        raise LGGInputError(case, f"predict wrote {len(masks)} masks and {len(probabilities)} probability maps")
    return (np.stack([_read(p) > 0 for p in masks]), np.stack([_read(p).astype(np.float32) for p in probabilities]))


def compare(source: str, cases: int = 6, bundle: str = "unet") -> list[dict]:
    """Compare bf16 and fp32 ``predict`` outputs on ``cases`` patients of ``source``; print and return the rows."""
    root = Path(source)
    entries = root.iterdir() if root.is_dir() else []
    found = sorted(p for p in entries if p.is_dir() or p.name.endswith((".nii", ".nii.gz")))
    if not found:
        raise LGGInputError(root, "holds no patient folders or NIfTI volumes")
    chosen = found[:: max(1, len(found) // int(cases))][: int(cases)]
    rows = []
    print("| case | mask Dice bf16 vs fp32 | max probability difference |\n|---|---:|---:|")
    for case in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            (m16, p16), (m32, p32) = (_outputs(case, bundle, prec, Path(tmp) / prec) for prec in ("bf16", "fp32"))
        total = m16.sum() + m32.sum()
        dice = 1.0 if total == 0 else float(2 * (m16 & m32).sum() / total)
        rows.append({"case": case.name, "dice": dice, "max_prob_diff": float(np.abs(p16 - p32).max())})
        print(f"| {case.name} | {dice:.5f} | {rows[-1]['max_prob_diff']:.4f} |", flush=True)
    print(
        f"\nlowest mask Dice {min(r['dice'] for r in rows):.5f}, largest probability difference "
        f"{max(r['max_prob_diff'] for r in rows):.4f} ({len(rows)} cases, bundle {bundle}; {' '.join(sys.argv)})"
    )
    return rows


def main(source: str, cases: int = 6, bundle: str = "unet") -> None:
    """Command line: :func:`compare`, printing its table only."""
    compare(source, cases, bundle)

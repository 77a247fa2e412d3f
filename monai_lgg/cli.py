"""``monai-lgg`` command line (fire). Each command is a thin wrapper over a ``monai_lgg`` function.

Bad input ends with one line ``monai-lgg: error: <file>: <problem>`` and exit code 2, never a
library traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import fire

from monai_lgg.errors import LGGInputError

__all__ = ["Commands", "main"]


class Commands:
    """Segment lower-grade gliomas in 2D brain MRI slices with MONAI.

    Run ``monai-lgg COMMAND --help`` for a command's arguments.
    """

    def convert(
        self,
        source: str,
        output: str,
        clinical_csv: str | None = None,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        num_folds: int = 5,
        seed: int = 0,
        skip_bad: bool = False,
        binarize: bool = False,
        overwrite: bool = False,
        workers: int | None = None,
        progress: bool = True,
    ) -> None:
        """Convert Kaggle kaggle_3m slices into per-patient NIfTI volumes, dataset.json and folds.

        Args:
            source: the kaggle_3m folder, or the root of the unpacked Kaggle zip (its duplicate copy is ignored).
            output: output folder (imagesTr/, labelsTr/, dataset.json, datalist.json, conversion_report.json).
            clinical_csv: data.csv to attach clinical fields (default: data.csv beside the patient folders).
            spacing: voxel size (row, column, slice) in mm; the TIFFs store none.
            num_folds: patient-level folds, stratified by institution and tumour burden.
            seed: seed of the fold assignment.
            skip_bad: convert the valid patients and list the skipped ones instead of stopping.
            binarize: threshold masks whose values are not {0, 255} at 128 (warning) instead of stopping.
            overwrite: replace an existing output folder that is not a previous conversion.
            workers: parallel processes (default: CPU count, at most 4).
            progress: show a progress bar.
        """
        from monai_lgg.data.kaggle import convert_kaggle

        result = convert_kaggle(
            source, output, clinical_csv, tuple(spacing), num_folds, seed, skip_bad, binarize, overwrite, workers, progress
        )
        report = result.report
        for problem in report["errors"] + report["warnings"]:
            print(f"{problem['severity']}: {problem['file']}: {problem['problem']}", file=sys.stderr)
        if not result.ok:
            raise LGGInputError(
                report["source"], f"{len(report['errors'])} error(s) found; nothing was written (--skip_bad converts the rest)"
            )
        print(
            f"converted {report['patients']} patients, {report['slices']} slices "
            f"({report['positive_slices']} with tumour) into {result.output}"
        )
        if report["skipped_cases"]:
            print(f"skipped {len(report['skipped_cases'])} case(s): {', '.join(report['skipped_cases'])}")

    def synth(self, output: str, num_patients: int = 8, num_slices: int = 24, size: int = 256, seed: int = 0) -> None:
        """Write a small synthetic data set in the Kaggle kaggle_3m layout (the embedded default data).

        Args:
            output: folder to write (replaced if it exists).
            num_patients: patients.
            num_slices: slices per patient (about).
            size: slice rows = columns.
            seed: seed; the same arguments give the same pixels.
        """
        from monai_lgg.data.synthetic import generate_synthetic_kaggle

        generate_synthetic_kaggle(output, num_patients, num_slices, size, seed)
        print(f"wrote {num_patients} synthetic patients into {output}")


    def stats(self, dataset: str, fold: int = 0) -> None:
        """Load a converted data set through the training pipeline and print what each split holds.

        Args:
            dataset: a folder written by ``monai-lgg convert`` (with datalist.json).
            fold: the test fold of the nested split (validation = the next fold, train = the rest).
        """
        from pathlib import Path

        from monai.data import DataLoader

        from monai_lgg.data.datalist import check_disjoint, load_fold
        from monai_lgg.data.datasets import VolumeSliceDataset

        parts = {s: load_fold(Path(dataset) / "datalist.json", fold, s) for s in ("train", "validation", "test")}
        check_disjoint(**parts)
        for name, items in parts.items():
            slices, positive = sum(i["num_slices"] for i in items), sum(i["positive_slices"] for i in items)
            print(f"{name:>10}: {len(items):3d} patients, {slices:5d} slices, {positive:5d} with tumour")
        train = VolumeSliceDataset(parts["train"], progress=False)
        batch = next(iter(DataLoader(train, batch_size=4, shuffle=True)))
        print(f"train batch: image {tuple(batch['image'].shape)}, label {tuple(batch['label'].shape)}, "
              f"image mean {batch['image'].mean():.3f}, tumour pixels {int(batch['label'].sum())}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``monai-lgg`` console script and ``python -m monai_lgg``."""
    try:
        fire.Fire(Commands(), command=list(argv) if argv is not None else None, name="monai-lgg")
    except LGGInputError as err:
        print(f"monai-lgg: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("monai-lgg: interrupted", file=sys.stderr)
        sys.exit(130)

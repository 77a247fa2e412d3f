"""``monai-lgg`` command line (fire). Each command is a thin wrapper over a ``monai_lgg`` function.

Bad input ends with one line ``monai-lgg: error: <file>: <problem>`` and exit code 2, never a
library traceback. The command line is checked before any work (:mod:`monai_lgg.cli_args`): an unknown
flag or bundle config key and a missing input stop at once, not after the command has run.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Callable, Sequence

import fire

from monai_lgg import __version__
from monai_lgg.cli_args import ALIASES, check_command_line
from monai_lgg.errors import LGGInputError, as_flag, as_list, debug_enabled, error_line, input_error_in

__all__ = ["Commands", "main"]


def _run_bundle(bundle: str, configs: Sequence[str], overrides: dict) -> None:
    """Run a bundle workflow in this process, as ``python -m monai.bundle run --config_file ...`` does."""
    from monai.bundle import run

    from monai_lgg.inference.loading import resolve_bundle

    root = resolve_bundle(bundle)
    files = [root / "configs" / name for name in configs]
    for file in files:
        if not file.is_file():
            raise LGGInputError(file, "bundle config not found")
    run(config_file=[str(f) for f in files] if len(files) > 1 else str(files[0]), **overrides)


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
            source,
            output,
            clinical_csv,
            tuple(spacing),
            num_folds,
            seed,
            as_flag(skip_bad, "skip_bad"),
            as_flag(binarize, "binarize"),
            as_flag(overwrite, "overwrite"),
            workers,
            as_flag(progress, "progress"),
        )
        report = result.report
        for problem in report["errors"] + report["warnings"]:
            print(f"{problem['severity']}: {problem['file']}: {problem['problem']}", file=sys.stderr)
        if not result.ok:
            raise LGGInputError(
                report["source"],
                f"{len(report['errors'])} error(s) found; nothing was written (--skip_bad converts the rest)",
            )
        print(
            f"converted {report['patients']} patients, {report['slices']} slices "
            f"({report['positive_slices']} with tumour) into {result.output}"
        )
        if report["skipped_cases"]:
            print(f"skipped {len(report['skipped_cases'])} case(s): {', '.join(report['skipped_cases'])}")

    def convert_folders(
        self,
        source: str,
        output: str,
        images: str = "images",
        masks: str = "masks",
        mask_mode: str = "binary",
        mapping: str | dict | None = None,
        class_names: str | Sequence[str] | None = None,
        num_classes: int | None = None,
        test_cases: str | Sequence[str] | None = None,
        num_folds: int = 5,
        seed: int = 0,
        spacing: Sequence[float] = (1.0, 1.0),
        mask_suffix: str = "",
        name: str | None = None,
        overwrite: bool = False,
        progress: bool = True,
    ) -> None:
        """Convert images/ + masks/ folders of PNG/TIFF (matching names) into NIfTI, dataset.json and folds.

        Each image becomes a one-slice volume in the format of the convert command, so every bundle trains
        on it (--in_channels 1 for grey images, --spatial_size for the training patch). Details and the ISBI
        2012 example: docs/generic_data.md.

        Args:
            source: folder holding the image and mask folders.
            output: output folder (imagesTr/, labelsTr/, dataset.json, datalist.json, conversion_report.json).
            images: image folder inside source (grey or RGB, any size).
            masks: mask folder inside source (same names as the images, plus mask_suffix).
            mask_mode: binary ({0,255} or {0,1}), labels (integer classes 0..K-1) or palette (RGB colours,
                needs mapping).
            mapping: value -> class, "{0: 1, 255: 0}" (grey) or "{'255,0,0': 1, '0,0,0': 0}" (palette colours).
            class_names: names of classes 0..K-1, comma-separated (written into dataset.json labels).
            num_classes: K for labels mode (default: from class_names, the mapping, or the largest label + 1).
            test_cases: image names forming a fixed test set (fold 0), comma-separated; train and evaluate
                with --fold 0 then.
            num_folds: folds, stratified by foreground size (with test_cases: the test fold + num_folds - 1 others).
            seed: seed of the fold assignment.
            spacing: pixel size "[row,column]" in mm.
            mask_suffix: what mask names add to the image name, e.g. _mask.
            name: data set name in dataset.json (default: the source folder's name).
            overwrite: replace an existing output folder that is not a previous conversion.
            progress: show a progress bar.
        """
        from monai_lgg.data.folders import convert_folders

        result = convert_folders(
            source,
            output,
            images,
            masks,
            mask_mode,
            mapping,
            [str(n) for n in as_list(class_names)] or None,
            num_classes,
            [str(c) for c in as_list(test_cases)] or None,
            num_folds,
            seed,
            tuple(spacing),
            mask_suffix,
            name,
            as_flag(overwrite, "overwrite"),
            as_flag(progress, "progress"),
        )
        for problem in result.report["warnings"]:
            print(f"{problem['severity']}: {problem['file']}: {problem['problem']}", file=sys.stderr)
        report = result.report
        images, positive = report["patients"], report["positive_slices"]
        print(f"converted {images} images ({positive} with foreground) into {result.output}")

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
        if not parts["train"]:
            print(f"no training patients in fold {fold}: too few patients to train on (see the conversion warning)")
            return
        files = parts["train"][0]["image"]
        channels = len(files) if isinstance(files, list) else None  # one file per channel (grey images: 1)
        train = VolumeSliceDataset(parts["train"], progress=False, image_channels=channels)
        batch = next(iter(DataLoader(train, batch_size=4, shuffle=True)))
        print(
            f"train batch: image {tuple(batch['image'].shape)}, label {tuple(batch['label'].shape)}, "
            f"image mean {batch['image'].mean():.3f}, tumour pixels {int(batch['label'].sum())}"
        )

    def predict(
        self,
        input: str | None = None,
        output: str | None = None,
        bundle: str = "unet",
        checkpoint: str | None = None,
        ensemble: str | Sequence[str] | None = None,
        device: str = "auto",
        batch_size: int = 8,
        threshold: float | None = None,
        tta: bool | None = None,
        largest_component: bool = False,
        probabilities: bool = False,
        overlays: bool = False,
        spatial_size: Sequence[int] | None = None,
        spacing: Sequence[float] | None = None,
        precision: str = "auto",
        channels_last: bool | None = None,
        overwrite: bool = False,
        progress: bool = True,
        min_component_fraction: float | None = None,
        uncertainty: bool = False,
        resume: bool = False,
        fail_fast: bool = False,
        wait: bool = False,
        num_parts: int | None = None,
        part_id: int | None = None,
        flair: str | None = None,
        t1: str | None = None,
        t1c: str | None = None,
        dicom_seg: bool = False,
    ) -> None:
        """Segment tumour in slices or volumes; write masks, tumour tables and optional maps/overlays.

        Outputs mirror the input: slice masks <name>_mask.tif (or .png) {0,255} in the input's folder
        structure; volumes <case>.nii.gz uint8 {0,1} with the input's affine and header. Always
        <case>_tumour.csv (area per slice, volume in voxels and mm3) and tumour_summary.csv.

        Args:
            input: a slice image (.tif/.png, 3 channels), a folder of slices (Kaggle layout, one or many
                patients), a NIfTI volume (3-channel, or one of the <case>_000x modality files), a folder of
                volumes, or a converted data set (datalist.json); or a folder of DICOM files (one case per study,
                docs/inputs.md).
            output: output folder.
            bundle: bundle folder, bundle .zip, or a project bundle name (unet, unetplusplus, transunet, unetr,
                attentionunet, unext).
            checkpoint: weights of the bundle (default <bundle>/models/model.pt; .ts for TorchScript).
            ensemble: more bundles or checkpoint files, comma-separated; probabilities are averaged.
            device: auto (CUDA if present), cpu, cuda, cuda:1.
            batch_size: 2D windows per forward pass.
            threshold: probability threshold (default: the bundle's inference.json, 0.4 for the shipped UNet).
            tta: test-time augmentation: average with the left-right flipped image (default: the bundle's
                inference.json; on for the shipped UNet; --tta false turns it off).
            largest_component: keep only the largest 3D connected component per case (can delete a small true
                tumour next to a larger false positive; min_component_fraction is the safer filter).
            min_component_fraction: drop 3D components smaller than this fraction of the largest (default: the
                bundle's inference.json, chosen on training-side validation; 0 keeps every component).
            probabilities: also write probability maps (float32 TIFF / NIfTI).
            overlays: also write overlay PNGs of the slices with predicted tumour.
            spatial_size: the bundle's training patch size if not its default (needed for UNETR/TransUNet).
            spacing: voxel size "[row,column,slice]" mm for slice inputs (default 1 mm; NIfTI uses its header).
            precision: auto (bf16 on CUDA and on CPUs with native bfloat16, else fp32), fp32 or bf16; bf16 is about
                2x faster and its masks agreed with fp32 to a Dice of 0.9995 or more on real patients.
            channels_last: channels-last memory format (default: with bf16).
            overwrite: replace existing output files.
            progress: show a progress bar.
            uncertainty: also write per-voxel uncertainty (predictive entropy, bits in [0,1]) as
                <name>_uncertainty.tif / <case>_uncertainty.nii.gz, its mean inside the predicted tumour and within
                3 px of its border (plus the mutual information over ensemble members x flips) in the tumour
                tables, and overlays/<case>_uncertainty.png; masks are unchanged (docs/uncertainty.md).
            resume: --continue (or --resume): finish an interrupted run into output: cases it committed are
                skipped, the others are done again.
            fail_fast: stop at the first case that fails (default: list it in failed.csv and go on; exit code 1).
            wait: wait for another run that writes into output instead of refusing.
            num_parts: split the cases into this many parts and segment only --part_id (SLURM arrays, Kubernetes
                indexed jobs); under torchrun the parts are the ranks. Parts may share output; a final
                --continue run without parts writes tumour_summary.csv of all cases (docs/cli.md).
            part_id: which part, 0 to num_parts - 1.
            flair: a case's FLAIR as its own NIfTI file; then the only argument is OUTPUT
                (monai-lgg predict --flair F.nii.gz --t1 PRE.nii.gz --t1c POST.nii.gz OUT/). A folder of
                <case>_flair.nii.gz, <case>_t1.nii.gz, <case>_t1c.nii.gz files is given as INPUT (docs/inputs.md).
            t1: the pre-contrast T1 file (optional; needs --flair; resampled onto the FLAIR grid; missing: FLAIR).
            t1c: the post-contrast T1 file (optional; needs --flair; resampled onto the FLAIR grid; missing: FLAIR).
            dicom_seg: also write a DICOM Segmentation <case>_seg.dcm of each DICOM case, referencing its FLAIR
                series (DICOM input only; docs/inputs.md).
        """
        from monai_lgg.cli_args import predict_paths
        from monai_lgg.inference.predict import predict

        input, output, sequences = predict_paths(input, output, {"flair": flair, "t1": t1, "t1c": t1c})
        rows = predict(
            sequences or input,
            output,
            bundle,
            checkpoint,
            as_list(ensemble),
            device,
            batch_size,
            threshold,
            None if tta is None else as_flag(tta, "tta"),
            as_flag(largest_component, "largest_component"),
            as_flag(probabilities, "probabilities"),
            as_flag(overlays, "overlays"),
            spatial_size,
            spacing,
            precision=precision,
            channels_last=None if channels_last is None else as_flag(channels_last, "channels_last"),
            overwrite=as_flag(overwrite, "overwrite"),
            progress=as_flag(progress, "progress"),
            min_component_fraction=min_component_fraction,
            uncertainty=as_flag(uncertainty, "uncertainty"),
            resume=as_flag(resume, "continue"),
            fail_fast=as_flag(fail_fast, "fail_fast"),
            wait=as_flag(wait, "wait"),
            num_parts=num_parts,
            part_id=part_id,
            dicom_seg=as_flag(dicom_seg, "dicom_seg"),
        )
        tumour = sum(1 for r in rows if r["tumour_voxels"])
        flagged = sum(1 for r in rows if r.get("needs_review") == "yes")
        review = f", {flagged} flagged needs_review" if any("needs_review" in r for r in rows) else ""
        print(f"segmented {len(rows)} case(s), {tumour} with tumour{review}, into {output}")

    def export(
        self,
        bundle: str = "unet",
        output_dir: str | None = None,
        checkpoint: str | None = None,
        formats: str | Sequence[str] = "torchscript,onnx",
        spatial_size: Sequence[int] | None = None,
        atol: float = 1e-4,
        overwrite: bool = False,
    ) -> None:
        """Export a trained bundle network to TorchScript and ONNX, checked against PyTorch.

        Each export is reloaded (torch.jit.load / onnxruntime) and run on random inputs; its probabilities
        (what predict thresholds and writes) must be within atol of PyTorch's, or no file is written.

        Args:
            bundle: bundle folder, bundle .zip, or a project bundle name.
            output_dir: where model.ts / model.onnx go (default <bundle>/models; for a bundle of an installed
                monai-lgg ./<bundle>_outputs/models).
            checkpoint: weights (default <bundle>/models/model.pt).
            formats: torchscript, onnx, or both (comma-separated).
            spatial_size: input size "[rows,columns]" (default the bundle's patch size).
            atol: largest accepted difference of a probability (docs/cli.md explains the default).
            overwrite: replace existing exports.
        """
        from monai_lgg.inference.export import export_model

        results = export_model(
            bundle, output_dir, checkpoint, as_list(formats), spatial_size, atol, as_flag(overwrite, "overwrite")
        )
        for fmt, result in results.items():
            print(
                f"{fmt}: {result['path']} (probabilities within {result['max_abs_diff']:.1e} of PyTorch, "
                f"{result['mask_pixels_differing']} mask pixels differ)"
            )

    def export_bundle(
        self,
        bundle: str,
        output: str,
        name: str | None = None,
        weights_url: str | None = None,
        overwrite: bool = False,
        device: str = "cpu",
    ) -> None:
        """Write a trained bundle in the MONAI Model Zoo's form, checked with the zoo's rules.

        Writes OUTPUT/<name>/ (real files, large_files.yml instead of weights, data licence, measured
        eval_metrics), OUTPUT/<name>_v<version>_model.pt (the weights to upload) and
        OUTPUT/<name>_v<version>.zip (the whole bundle, for monai.bundle.download / load). A bundle
        without trained weights is refused: the zoo requires models/model.pt for every bundle.

        Args:
            bundle: bundle folder or project bundle name (unet).
            output: a zoo-style models/ folder (e.g. model-zoo/models, or any new folder).
            name: zoo bundle name (default lgg_mri_<bundle>_segmentation).
            weights_url: public URL of the uploaded weights (default: a file:// URL, valid on this machine only).
            overwrite: replace an earlier export of this name and version.
            device: where the network checks run.
        """
        from monai_lgg.bundle_export import export_bundle

        result = export_bundle(bundle, output, name, weights_url, as_flag(overwrite, "overwrite"), device)
        for check in result.checks:
            print(f"passed: {check}")
        print(f"bundle folder (for the zoo's models/): {result.bundle}")
        print(f"weights to upload: {result.weights} (sha256 {result.sha256})")
        print(f"complete bundle zip: {result.archive}")
        if result.weights_url.startswith("file:"):
            print(
                "to publish: upload the weights file, then run export_bundle again with --weights_url <its public URL> "
                "--overwrite (large_files.yml now points to this machine)"
            )

    def report(
        self,
        eval_dir: str,
        output: str | None = None,
        logs: str | None = None,
        format: str = "html",
        num_patients: int = 3,
        title: str | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write an HTML (or Markdown + PNG) report of an evaluation output.

        Per-patient Dice bar chart with mean/median, score box plots, training curves, overlays of the
        best and worst patients, metrics table and per-patient table.

        Args:
            eval_dir: evaluation output folder (per_patient.csv, summary.json, overlays/), e.g. bundles/unet/eval.
            output: html: the report file (default <eval_dir>/report.html); md: a folder (default <eval_dir>/report).
            logs: TensorBoard log folder for the training curves (default <eval_dir>/../logs if present).
            format: html (one self-contained file) or md (report.md + PNG files).
            num_patients: best and worst patients in the overlay grid.
            title: report title.
            overwrite: replace an existing report.
        """
        from monai_lgg.report import make_report

        written = make_report(eval_dir, output, logs, format, num_patients, title, as_flag(overwrite, "overwrite"))
        print(f"wrote {written}")

    def radiogenomics(
        self,
        masks: str | Sequence[str],
        output: str,
        clinical: str | None = None,
        reference: str | Sequence[str] | None = None,
        variables: str | Sequence[str] | None = None,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        label: str = "masks",
        folds: str | None = None,
        title: str | None = None,
        overwrite: bool = False,
        progress: bool = True,
    ) -> None:
        """Tumour shape features of every patient's mask tested against genomic subtypes (Buda et al. 2019).

        Writes OUTPUT/shape_features.csv, associations.csv, summary.json, report.md, report.html and
        figures/; with --reference also reference/, agreement.csv. Definitions: docs/radiogenomics.md.

        Args:
            masks: a converted set (labelsTr/), a folder of <case>.nii.gz masks or of <case>_<n>_mask.tif
                slices; several folders separated by commas.
            output: output folder.
            clinical: data.csv (default: the converted set's dataset.json or a data.csv beside the masks).
            reference: reference masks (same forms), e.g. the manual labels: their features, associations
                and the agreement of each feature.
            variables: clinical columns to test, comma-separated (default: 7 genomic clusterings, histology,
                grade, sex, age, death01).
            spacing: voxel size "[row,column,slice]" in mm for slice masks (NIfTI masks use their header).
            label: what the masks are, for the report (e.g. "cross-validated UNet masks").
            folds: a datalist.json: MASKS are then one folder per fold model (fold 0 first) and each
                patient's mask comes from its own fold's folder (out-of-fold masks).
            title: report title.
            overwrite: replace an existing output folder.
            progress: show progress bars.
        """
        from monai_lgg.errors import as_flag
        from monai_lgg.radiogenomics import run_radiogenomics

        summary = run_radiogenomics(
            as_list(masks),
            output,
            clinical,
            as_list(reference) or None,
            as_list(variables) or None,
            tuple(spacing),
            title,
            label,
            as_flag(overwrite, "overwrite"),
            progress=as_flag(progress, "progress"),
            folds=folds,
        )
        primary = summary["tests"]["primary"]
        print(
            f"{summary['counts']['patients_with_masks']} patients, {primary} primary and "
            f"{summary['tests']['exploratory']} exploratory tests: wrote {output}/report.html"
        )

    def train(self, bundle: str = "unet", dataset_dir: str = "synthetic", **overrides) -> None:
        """Train a bundle (its configs/train.json) in this process, with config overrides.

        Same as python -m monai.bundle run --config_file <bundle>/configs/train.json. Writes into the run
        folder <bundle>/runs/<data set>_fold<k>/ (models/model.pt, last.ckpt, logs/), never into the
        bundle's published models/ unless asked (--ckpt_dir <bundle>/models). Re-running the same command
        resumes that run from last.ckpt (and says so); --resume false starts afresh, --run_dir DIR trains
        into another folder. Any other option overrides the config key of that name, e.g. --epochs 50
        --spatial_size "[128,128]" --fold 1 --learning_rate 1e-3.

        Args:
            bundle: bundle folder or project bundle name.
            dataset_dir: converted data set, kaggle_3m folder, or "synthetic" (the built-in demo data).
            overrides: config keys to override (--key value).
        """
        _run_bundle(bundle, ["train.json"], {"dataset_dir": dataset_dir, **overrides})

    def new_bundle(
        self, name: str, network: str = "unet", directory: str | None = None, template: str = "unet"
    ) -> None:
        """Make a new bundle: the template's workflow configs with its own configs/model.json.

        In a source checkout the bundle goes to bundles/NAME (its configs link to bundles/_shared, and the bundle
        tests find it); train and predict with --bundle NAME, and edit configs/model.json and configs/metadata.json.

        Args:
            name: the bundle's folder name (lower case letters, digits and _).
            network: a project bundle whose network to start from (unet, unetr, ...) or a registered network class
                (BasicUNet, AttentionUnet, ...) with its default arguments.
            directory: where to make it (default: the project's bundles folder).
            template: the project bundle whose workflow configs and metadata are copied.
        """
        from monai_lgg.bundle.scaffold import new_bundle

        print(f"made {new_bundle(name, network, directory, template)}")

    def evaluate(self, bundle: str = "unet", dataset_dir: str = "synthetic", **overrides) -> None:
        """Evaluate a trained bundle per patient (train.json + evaluate.json) with config overrides.

        With the options of the training run it evaluates that run's model (<run folder>/models/model.pt)
        and writes per_patient.csv, summary.json and overlays/ into <run folder>/eval (override --ckpt_path,
        --output_dir); turn them into a report with monai-lgg report. Other options override config keys,
        e.g. --fold 1 --eval_split test --ckpt_path bundles/unet/models/model.pt.

        Args:
            bundle: bundle folder or project bundle name.
            dataset_dir: converted data set, kaggle_3m folder, or "synthetic".
            overrides: config keys to override (--key value).
        """
        _run_bundle(bundle, ["train.json", "evaluate.json"], {"dataset_dir": dataset_dir, **overrides})

    def benchmark(
        self,
        bundle: str = "unet",
        checkpoint: str | None = None,
        num_slices: int = 40,
        size: int = 256,
        threads: int = 2,
        repeats: int = 5,
        batch_size: int | Sequence[int] = 8,
        json: str | None = None,
        device: str = "auto",
        review: bool = False,
    ) -> None:
        """Print inference latency per slice and per volume, CPU and CUDA (if present), with and without TTA.

        The same timer as tools/benchmark.py and tools/gpu_suite.py (monai_lgg.inference.benchmark).

        Args:
            bundle: bundle folder, bundle .zip, or a project bundle name.
            checkpoint: weights (default <bundle>/models/model.pt).
            num_slices: slices of the benchmark volume.
            size: rows = columns of a slice.
            threads: CPU threads.
            repeats: timed runs per number (median reported, best run in brackets).
            batch_size: 2D windows per forward pass; several with commas (8,40).
            json: also write the results to this JSON file.
            device: auto (CPU, and CUDA when present), cpu or cuda.
            review: also time each setting with the needs_review score that predict adds for the shipped ensemble.
        """
        import torch

        from monai_lgg.inference.benchmark import benchmark, format_table

        sizes = [int(b) for b in ([batch_size] if isinstance(batch_size, int) else as_list(batch_size))]
        devices = None if device == "auto" else as_list(device)
        if devices and any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
            raise LGGInputError(None, "--device cuda: CUDA is not available on this machine")
        rows = benchmark(
            bundle,
            checkpoint,
            num_slices,
            size,
            threads,
            repeats,
            sizes[0],
            devices,
            json_path=json,
            batch_sizes=sizes,
            review=(False, True) if as_flag(review, "review") else (False,),
        )
        print(format_table(rows))

    def synth_cells(self, output: str, num_images: int = 24, size: int = 128, seed: int = 0, channels: int = 3) -> None:
        """Write the 3-class synthetic cell set (background 0, cell body 1, nucleus 2) and convert it.

        Writes <output>/folders (images/ + masks/ PNGs, masks holding the class indices) and
        <output>/converted (train with --dataset_dir <output>/converted --out_channels 3 --spatial_size "[128,128]").

        Args:
            output: parent folder of both outputs (replaced if they exist).
            num_images: images (cases).
            size: rows = columns.
            seed: seed; the same arguments give the same pixels and folds.
            channels: 3 (RGB) or 1 (grey; then train with --in_channels 1).
        """
        from monai_lgg.data.synthetic_cells import synthetic_cells_dataset

        converted = synthetic_cells_dataset(output, num_images, size, seed, channels)
        print(f"wrote {num_images} synthetic cell images into {output}/folders and the converted set into {converted}")


def _help_request(args: list[str]) -> list[str] | None:
    """``COMMAND -- --help`` when ``args`` ask for help (``-h`` / ``--help`` before any ``--``), else None.

    Fire hands ``--help`` to a command that takes ``**overrides`` (train, evaluate) as one more override,
    so ``monai-lgg train --help`` would run the training. Help is therefore asked of Fire in the form it
    never passes on, with the command's other arguments dropped so that nothing runs.
    """
    options = args[: args.index("--")] if "--" in args else args
    if not any(a in ("-h", "--help") for a in options):
        return None
    command = [a for a in options[:1] if not a.startswith("-")]
    return [*command, "--", "--help"]


def _command_names() -> list[str]:
    return sorted(name for name, _ in inspect.getmembers(Commands, inspect.isfunction) if not name.startswith("_"))


def _check(args: list[str]) -> None:
    """Refuse an unknown command, flag or override key, or a missing input, before any work (one line, exit 2).

    Nothing heavy is imported here (no torch, no MONAI), so a mistake is reported at once instead of after
    the start-up of the deep-learning stack, and never after the command did its work.
    """
    if not args or args[0].startswith("-"):
        if args and args[0] not in ("--", "-h", "--help"):
            raise LGGInputError(None, f"unknown option {args[0]} (give a command first: monai-lgg --help)")
        return
    commands = _command_names()
    name = args[0].replace("-", "_")
    if name not in commands:
        close = difflib.get_close_matches(name, commands, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"commands: {', '.join(commands)}"
        raise LGGInputError(None, f"unknown command {args[0]!r} ({hint})")
    check_command_line(name, getattr(Commands, name), args[1:])


def command(name: str) -> Callable[[Sequence[str]], None]:
    """``monai-lgg <name>`` as a function of the rest of the command line, for the ``tools/`` launchers."""

    def run(argv: Sequence[str]) -> None:
        main([name, *argv])

    return run


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``monai-lgg`` console script and ``python -m monai_lgg``.

    ``monai-lgg --version`` prints the package version. A user error, including an unknown flag and a
    missing input, ends with one line ``monai-lgg: error: <file>: <problem>`` and exit code 2 before any
    work is done; ``MONAI_LGG_DEBUG=1`` shows its full traceback instead.
    """
    args = [ALIASES.get(a, a) for a in (list(argv) if argv is not None else sys.argv[1:])]
    if args[:1] in (["--version"], ["-V"]):
        print(f"monai-lgg {__version__}")
        return
    try:
        help_args = _help_request(args)
        if help_args is None:
            _check(args)
        fire.Fire(Commands(), command=help_args or args, name="monai-lgg")
    except KeyboardInterrupt:
        print("monai-lgg: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        cause = input_error_in(err)
        if cause is None or debug_enabled():
            raise
        print(error_line(cause), file=sys.stderr)
        sys.exit(getattr(cause, "exit_code", 2))  # 1: predict wrote the other cases; 2: nothing was done

"""Generic ``images/`` + ``masks/`` folders of 2D PNG/TIFF files: scan, validate and convert to NIfTI.

Layout: ``<source>/images/<name>.png|.tif|.tiff`` and ``<source>/masks/<name><mask_suffix>.png|.tif|.tiff``
with matching names; grey or RGB images of any size (sizes may differ between images). Masks are read
in one of three modes:

- ``binary``: values {0, 255} or {0, 1} -> labels {0, 1};
- ``labels``: integer class labels 0..K-1, stored as they are;
- ``palette``: RGB colours -> classes through a user ``mapping`` (``{"255,0,0": 1, ...}``).

A ``mapping`` of grey values (``{0: 1, 255: 0}``) may replace the defaults of ``binary`` and ``labels``
(e.g. the ISBI 2012 EM labels, where 0 is the membrane, the foreground). A value or colour outside the
mode or the mapping stops the conversion with an error naming the mask.

The output has the format of :func:`monai_lgg.data.kaggle.convert_kaggle` (and is written by the same
helpers): each image becomes a one-slice volume ``imagesTr/<name>_000c.nii.gz`` per channel plus
``labelsTr/<name>.nii.gz`` (uint8 0..K-1), so ``VolumeSliceDataset`` and every bundle train on it
unchanged. Voxel ``[i, j, 0]`` is pixel ``[row i, column j]``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_lgg.data.datalist import assign_folds, fit_num_folds
from monai_lgg.data.kaggle import (
    ConversionResult,
    check_output_folder,
    conversion_report,
    kaggle_affine,
    save_nifti,
    write_conversion,
)
from monai_lgg.data.naming import channel_file_name
from monai_lgg.data.readers import read_slice_image
from monai_lgg.errors import DataProblem, LGGInputError
from monai_lgg.io import atomic_dir, safe_child

__all__ = [
    "MASK_MODES",
    "IMAGE_SUFFIXES",
    "FolderPair",
    "parse_mapping",
    "scan_folders",
    "read_pair",
    "fixed_test_folds",
    "convert_folders",
]

MASK_MODES = ("binary", "labels", "palette")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
OUTPUT_MARKER = "monai_lgg.data.folders.convert_folders"
MAX_LABEL = 254  # label volumes are uint8; 255 in a labels-mode mask is almost always a {0, 255} binary mask
GROUP = "unknown"  # each image is its own case; the fold stratification then uses the foreground size only


@dataclass
class FolderPair:
    """An image and its mask; ``case`` is the image's name without suffix."""

    case: str
    image: Path
    mask: Path


def parse_mapping(mapping: Mapping | str | None, palette: bool = False) -> dict | None:
    """A user mapping ``{value or colour: class}`` with normalised keys.

    Args:
        mapping: a dict, or its JSON / Python text (the CLI gives either). Grey keys are integers
            (``0``, ``"255"``); colour keys are ``"r,g,b"``, ``"#rrggbb"`` or a 3-sequence.
        palette: keys are colours (``palette`` mode) instead of grey values.

    Returns:
        ``{int: int}`` (grey) or ``{(r, g, b): int}`` (palette), or None.

    Raises:
        LGGInputError: the mapping cannot be read, or a key or class is not valid.
    """
    if mapping is None:
        return None
    if isinstance(mapping, str):
        import ast

        try:
            mapping = ast.literal_eval(mapping.strip())
        except (ValueError, SyntaxError):
            raise LGGInputError(None, f"mapping {mapping!r} is not a dict such as '{{0: 1, 255: 0}}'") from None
    if not isinstance(mapping, Mapping) or not mapping:
        raise LGGInputError(None, f"mapping must be a non-empty dict {{value: class}}, got {mapping!r}")
    parsed: dict = {}
    for key, value in mapping.items():
        try:
            cls = int(value)
            parsed[_colour(key) if palette else _grey(key)] = cls
        except (TypeError, ValueError):
            what = "an RGB colour ('r,g,b' or '#rrggbb')" if palette else "an integer grey value"
            raise LGGInputError(None, f"mapping entry {key!r}: {value!r} needs {what} -> an integer class") from None
        if not 0 <= cls <= MAX_LABEL:
            raise LGGInputError(None, f"mapping entry {key!r}: class {cls} must be in 0..{MAX_LABEL}")
    return parsed


def _grey(key: object) -> int:
    number = float(key)  # "255" and 255.0 alike
    if number != int(number):
        raise ValueError(key)
    return int(number)


def _colour(key: object) -> tuple[int, int, int]:
    if isinstance(key, str):
        text = key.strip()
        if text.startswith("#") and len(text) == 7:
            return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        key = [k for k in text.strip("()[] ").split(",")]
    parts = tuple(int(str(k).strip()) for k in key)  # type: ignore[union-attr]
    if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(key)
    return parts  # type: ignore[return-value]


def _image_files(folder: Path) -> tuple[dict[str, Path], list[DataProblem]]:
    """``{name without suffix: file}`` of the PNG/TIFF files in ``folder``; other files are reported, not read."""
    files: dict[str, Path] = {}
    warnings = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            warnings.append(DataProblem(path, "ignored: not a .png/.tif/.tiff file", fatal=False))
            continue
        if path.stem in files:
            raise DataProblem(path, f"has the same name as {files[path.stem].name} (names must be unique)")
        files[path.stem] = path
    return files, warnings


def scan_folders(
    source: str | Path, images: str = "images", masks: str = "masks", mask_suffix: str = ""
) -> tuple[list[FolderPair], list[DataProblem]]:
    """Pair every image with its mask by name, without reading pixels.

    Args:
        source: the folder holding the image and mask folders.
        images: the image folder, relative to ``source``.
        masks: the mask folder, relative to ``source``.
        mask_suffix: what mask names add to the image name (``"_mask"``: ``a.png`` <-> ``a_mask.png``).

    Returns:
        the pairs sorted by name, and warnings (ignored files).

    Raises:
        LGGInputError: a folder is missing or holds no images, an image has no mask or a mask no image,
            two files share a name.
    """
    source = Path(source)
    if not source.is_dir():
        raise LGGInputError(source, "does not exist" if not source.exists() else "is a file, expected a folder")
    folders = []
    for name, what in ((images, "images"), (masks, "masks")):
        folder = source / name
        if not folder.is_dir():
            raise LGGInputError(folder, f"{what} folder not found (expected {source}/{images} and {source}/{masks})")
        folders.append(folder)
    image_files, warnings = _image_files(folders[0])
    mask_files, mask_warnings = _image_files(folders[1])
    if not image_files:
        raise LGGInputError(folders[0], "holds no .png/.tif/.tiff images")
    pairs = []
    for case, image in image_files.items():
        mask = mask_files.pop(case + mask_suffix, None)
        if mask is None:
            raise DataProblem(image, f"has no mask {folders[1] / (case + mask_suffix)}.png/.tif")
        pairs.append(FolderPair(case, image, mask))
    if mask_files:
        mask = next(iter(mask_files.values()))
        raise DataProblem(mask, f"has no matching image in {folders[0]}")
    return pairs, warnings + mask_warnings


def _drop_alpha(path: Path, array: np.ndarray) -> np.ndarray:
    """(rows, columns, channels) with an opaque alpha channel removed; a real transparency is refused."""
    if array.ndim == 3 and array.shape[2] in (2, 4):
        alpha = array[..., -1]
        if alpha.min() != alpha.max():
            raise DataProblem(path, "has a transparency (alpha) channel; save it without one")
        array = array[..., :-1]
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] not in (1, 3):
        raise DataProblem(path, f"has {array.shape[2]} channels, expected grey (1) or RGB (3)")
    return array


def _integral(path: Path, values: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
        raise DataProblem(path, f"mask holds non-integer values {values[values != np.round(values)][:4].tolist()}")
    return values.astype(np.int64)


def read_pair(
    pair: FolderPair, mask_mode: str = "binary", mapping: dict | None = None, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate an image and its mask.

    Args:
        pair: the files.
        mask_mode: ``binary``, ``labels`` or ``palette`` (see the module docstring).
        mapping: from :func:`parse_mapping` (required for ``palette``).
        num_classes: classes of ``labels`` mode without a mapping (``None``: any label up to 254).

    Returns:
        ``image`` (rows, columns, 1 or 3) in the stored dtype, ``label`` (rows, columns) uint8.

    Raises:
        DataProblem: naming the file: unreadable, a channel count or a size that does not fit, a mask
            value (or colour) outside the mode or the mapping.
    """
    if mask_mode not in MASK_MODES:
        raise LGGInputError(None, f"mask_mode must be one of {', '.join(MASK_MODES)}; got {mask_mode!r}")
    image = _drop_alpha(pair.image, read_slice_image(pair.image))
    raw = _drop_alpha(pair.mask, read_slice_image(pair.mask))
    if raw.shape[:2] != image.shape[:2]:
        raise DataProblem(
            pair.mask, f"mask size {raw.shape[:2]} differs from the size {image.shape[:2]} of {pair.image.name}"
        )
    if mask_mode == "palette":
        return image, _palette_label(pair.mask, raw, mapping)
    if raw.shape[2] == 3:
        if not (np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2])):
            raise DataProblem(pair.mask, "is a colour mask; use mask_mode='palette' with a colour mapping")
    values, inverse = np.unique(raw[..., 0], return_inverse=True)
    values = _integral(pair.mask, values)
    if mapping is not None:
        unknown = [v for v in values.tolist() if v not in mapping]
        if unknown:
            raise DataProblem(pair.mask, f"mask values {unknown[:8]} are not in the mapping {sorted(mapping)}")
        classes = np.array([mapping[v] for v in values.tolist()], dtype=np.int64)
    elif mask_mode == "binary":
        if set(values.tolist()) <= {0, 255}:
            classes = values // 255
        elif set(values.tolist()) <= {0, 1}:
            classes = values
        else:
            raise DataProblem(
                pair.mask,
                f"mask values {values.tolist()[:8]} are not binary ({{0, 255}} or {{0, 1}}); "
                "use mask_mode='labels' or a mapping",
            )
    else:
        limit = MAX_LABEL if num_classes is None else num_classes - 1
        if values.min() < 0 or values.max() > limit:
            bad = values[(values < 0) | (values > limit)].tolist()
            hint = " (a {0, 255} mask is mask_mode='binary')" if 255 in bad else ""
            raise DataProblem(pair.mask, f"mask values {bad[:8]} are not class labels 0..{limit}{hint}")
        classes = values
    return image, classes[inverse].reshape(raw.shape[:2]).astype(np.uint8)


def _palette_label(path: Path, raw: np.ndarray, mapping: dict | None) -> np.ndarray:
    if mapping is None:
        raise LGGInputError(None, "mask_mode='palette' needs a mapping of colours to classes, e.g. {'255,0,0': 1}")
    if raw.shape[2] != 3:
        raise DataProblem(path, "is a grey mask; mask_mode='palette' needs RGB masks (or use binary / labels)")
    colours, inverse = np.unique(raw.reshape(-1, 3), axis=0, return_inverse=True)
    unknown = [tuple(c) for c in colours.tolist() if tuple(c) not in mapping]
    if unknown:
        raise DataProblem(path, f"mask colours {unknown[:4]} are not in the mapping")
    classes = np.array([mapping[tuple(c)] for c in colours.tolist()], dtype=np.uint8)
    return classes[inverse.reshape(-1)].reshape(raw.shape[:2])


def fixed_test_folds(
    summaries: Sequence[dict], test_cases: Sequence[str], num_folds: int, seed: int, burden_key: str
) -> dict[str, int]:
    """Folds with a fixed test list: ``test_cases`` form fold 0, the other cases folds 1..num_folds-1.

    The others are spread by :func:`~monai_lgg.data.datalist.assign_folds`, so with ``fold = 0`` the
    nested split tests on exactly ``test_cases``, selects the model on fold 1 and trains on the rest.

    Raises:
        LGGInputError: a test case does not exist, or too few cases are left for the other folds.
    """
    names = {s["case"] for s in summaries}
    missing = [c for c in test_cases if c not in names]
    if missing:
        raise LGGInputError(None, f"test_cases {missing[:5]} are not image names of the data set")
    if num_folds < 3:
        raise LGGInputError(None, f"a fixed test list needs num_folds >= 3 (test, validation, train), got {num_folds}")
    rest = [s for s in summaries if s["case"] not in set(test_cases)]
    folds = {case: fold + 1 for case, fold in assign_folds(rest, num_folds - 1, seed, burden_key).items()}
    return {**folds, **{case: 0 for case in test_cases}}


def _class_names(
    mask_mode: str, mapping: dict | None, class_names: Sequence[str] | None, num_classes: int | None, seen: int
) -> list[str]:
    """Names of classes 0..K-1 (K from the names, ``num_classes``, the mapping or the labels seen)."""
    if mask_mode == "binary":
        count = 2
    elif class_names:
        count = len(class_names)
    elif num_classes is not None:
        count = num_classes
    else:
        count = max(mapping.values()) + 1 if mapping else seen
    count = max(count, 2)
    if class_names is None:
        return ["background", "foreground"] if count == 2 else ["background"] + [f"class_{k}" for k in range(1, count)]
    names = [str(n) for n in class_names]
    if len(names) != count or len(set(names)) != count:
        raise LGGInputError(None, f"class_names {names} must be {count} distinct names (classes 0..{count - 1})")
    return names


def _check_classes(names: list[str], seen: int, mapping: dict | None) -> None:
    """Refuse labels beyond the named classes (e.g. a mapping to class 3 with two class names)."""
    if seen > len(names):
        source = "the mapping gives" if mapping else "the masks hold"
        raise LGGInputError(None, f"{source} class {seen - 1}, but only {len(names)} classes are named: {names}")


def convert_folders(
    source: str | Path,
    output: str | Path,
    images: str = "images",
    masks: str = "masks",
    mask_mode: str = "binary",
    mapping: Mapping | str | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    test_cases: Sequence[str] | None = None,
    num_folds: int = 5,
    seed: int = 0,
    spacing: Sequence[float] = (1.0, 1.0),
    mask_suffix: str = "",
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert an ``images/`` + ``masks/`` folder pair into one-slice NIfTI volumes, ``dataset.json`` and folds.

    Output (written under a temporary name, then renamed into ``output``; nothing is left on error)::

        imagesTr/<name>_0000.nii.gz   channel 0 (grey, or red), stored dtype, rows x columns x 1
        imagesTr/<name>_0001.nii.gz   green, _0002 blue (RGB images only)
        labelsTr/<name>.nii.gz        class labels uint8 0..K-1
        dataset.json                  channels, labels {name: value}, mask mode and mapping, per-case counts
        datalist.json                 MONAI datalist ("training"), each case with its "fold" (as convert_kaggle)
        conversion_report.json        counts and warnings

    Args:
        source: folder holding ``images`` and ``masks``.
        output: folder to create; a previous conversion output there is replaced, any other folder
            needs ``overwrite``.
        images: image folder relative to ``source``.
        masks: mask folder relative to ``source``.
        mask_mode: ``binary``, ``labels`` or ``palette``.
        mapping: grey value -> class (``binary`` / ``labels``) or colour -> class (``palette``, required).
        class_names: names of classes 0..K-1, written into dataset.json ``labels``
            (default ``background``, ``foreground`` / ``class_k``).
        num_classes: K for ``labels`` mode (default: from ``class_names``, the mapping, or the largest label + 1).
        test_cases: image names forming a fixed test set (fold 0; train and evaluate with ``fold = 0``).
        num_folds: folds, stratified by foreground size (with ``test_cases``: fold 0 + ``num_folds - 1`` others).
        seed: seed of the fold assignment.
        spacing: (row, column) pixel size in mm written into the affine.
        mask_suffix: what mask names add to the image name (``"_mask"``).
        name: data set name in dataset.json (default: the source folder's name).
        overwrite: replace an existing ``output`` that is not a previous conversion.
        progress: show a progress bar.

    Returns:
        the result (``result.output``, ``result.report``).

    Raises:
        LGGInputError: bad options or input (a :class:`DataProblem` names the file); nothing is written.
        OutputError: writing failed; nothing is left behind.
    """
    from tqdm import tqdm

    if mask_mode not in MASK_MODES:
        raise LGGInputError(None, f"mask_mode must be one of {', '.join(MASK_MODES)}; got {mask_mode!r}")
    if len(spacing) != 2 or any(float(s) <= 0 for s in spacing):
        raise LGGInputError(None, f"spacing must be two positive numbers (row, column), got {spacing}")
    parsed = parse_mapping(mapping, palette=mask_mode == "palette")
    if mask_mode == "binary" and parsed and not set(parsed.values()) <= {0, 1}:
        raise LGGInputError(None, f"a binary mapping must give classes 0 or 1, got {sorted(set(parsed.values()))}")
    label_limit = len(class_names) if class_names and mask_mode == "labels" and not parsed else num_classes
    test_cases = [str(c) for c in test_cases] if test_cases else None  # names, also when given as numbers
    source, output = Path(source), Path(output)
    pairs, problems = scan_folders(source, images, masks, mask_suffix)
    check_output_folder(output, source, overwrite)
    summaries: list[dict] = []
    channels: int | None = None
    with atomic_dir(output) as tmp:
        images_dir, labels_dir = tmp / "imagesTr", tmp / "labelsTr"
        images_dir.mkdir()
        labels_dir.mkdir()
        for pair in tqdm(pairs, desc="convert", unit="image", disable=not progress, file=sys.stderr):
            image, label = read_pair(pair, mask_mode, parsed, label_limit)
            if channels is not None and image.shape[2] != channels:
                raise DataProblem(pair.image, f"has {image.shape[2]} channel(s), the other images have {channels}")
            channels = image.shape[2]
            affine = kaggle_affine((*label.shape, 1), (*spacing, 1.0))
            for c in range(channels):
                save_nifti(
                    np.ascontiguousarray(image[..., c : c + 1]),
                    affine,
                    safe_child(images_dir, channel_file_name(pair.case, c)),
                )
            save_nifti(label[..., None], affine, safe_child(labels_dir, f"{pair.case}.nii.gz"))
            summaries.append(
                {
                    "case": pair.case,
                    "institution": GROUP,
                    "shape": [*label.shape, 1],
                    "num_slices": 1,
                    "positive_slices": int(label.any()),
                    "foreground_voxels": int(np.count_nonzero(label)),
                    "class_voxels": np.bincount(label.reshape(-1)).tolist(),
                    "source": {
                        "image": str(pair.image.relative_to(source)),
                        "mask": str(pair.mask.relative_to(source)),
                    },
                }
            )
        summaries.sort(key=lambda s: s["case"])
        seen = max(len(s["class_voxels"]) for s in summaries)
        names = _class_names(mask_mode, parsed, class_names, num_classes, seen)
        _check_classes(names, seen, parsed)
        for summary in summaries:
            counts = summary["class_voxels"] + [0] * (len(names) - len(summary["class_voxels"]))
            summary["class_voxels"] = dict(zip(names, counts, strict=True))
        if test_cases:
            folds = fixed_test_folds(summaries, test_cases, num_folds, seed, "foreground_voxels")
        else:
            num_folds, too_few = fit_num_folds(len(summaries), num_folds, "images")
            if too_few:
                problems.append(DataProblem(source, too_few, fatal=False))
            folds = assign_folds(summaries, num_folds, seed, "foreground_voxels")
        report = conversion_report(source, summaries, problems, [], False)
        dataset = _dataset_json(
            name or source.name, channels or 1, names, mask_mode, parsed, spacing, summaries, report, test_cases
        )
        extra = {"test_fold": 0, "test_cases": sorted(test_cases)} if test_cases else None
        write_conversion(tmp, dataset, summaries, folds, num_folds, seed, channels or 1, report, extra)
    return ConversionResult(output, report)


def _dataset_json(
    name: str,
    channels: int,
    names: list[str],
    mask_mode: str,
    mapping: dict | None,
    spacing: Sequence[float],
    summaries: list[dict],
    report: dict,
    test_cases: Sequence[str] | None,
) -> dict:
    channel_names = ["grey"] if channels == 1 else ["red", "green", "blue"]
    return {
        "name": name,
        "description": "images/ + masks/ folders converted by monai-lgg (one-slice volume per image)",
        "converter": OUTPUT_MARKER,
        "channel_names": {str(i): n for i, n in enumerate(channel_names)},
        "labels": {n: i for i, n in enumerate(names)},
        "mask_mode": mask_mode,
        "mapping": None
        if mapping is None
        else {",".join(map(str, k)) if isinstance(k, tuple) else str(k): v for k, v in mapping.items()},
        "numTraining": len(summaries),
        "numSlices": report["slices"],
        "numPositiveSlices": report["positive_slices"],
        "fixed_test_cases": sorted(test_cases) if test_cases else None,
        "file_ending": ".nii.gz",
        "spacing_mm": {"row": float(spacing[0]), "column": float(spacing[1]), "slice": 1.0},
        "orientation": "voxel [i, j, 0] = image pixel [row i, column j]",
        "cases": {s["case"]: {k: v for k, v in s.items() if k != "case"} for s in summaries},
    }

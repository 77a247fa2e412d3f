"""One registry of the input forms ``monai-lgg predict`` reads, each one class.

A form (:class:`InputFormat` subclass) says how to find its cases in a file or folder, how to load a case into the
model's canonical frame (``(C, H, W, D)``, axial slices on the last axis, per-slice normalised), how its outputs
are named, and how results are written back in the input's own frame. :data:`FORMATS` lists them in the order they
are tried; adding a form is one subclass and one entry there.

* :class:`SliceImages`: a Kaggle slice or patient folder, any 2D TIFF/PNG slices (``<case>_<n>.tif`` stacked);
* :class:`NiftiChannels`: ``<case>_000k.nii.gz`` files, one per channel (nnU-Net/MSD naming);
* :class:`NiftiVolume`: one NIfTI file per case (3-channel ``rows x columns x slices x 3``);
* :class:`SequenceFiles`: one NIfTI file per MRI sequence, ``<case>_flair`` / ``<case>_t1`` / ``<case>_t1c``, each
  on its own grid (``monai-lgg predict --flair F --t1 T1 --t1c T1C OUT/``, :mod:`monai_lgg.inference.sequences`).
* :class:`DicomSeries`: a folder of DICOM files, one case per study: one series read as FLAIR, or the study's
  FLAIR / pre- / post-contrast T1 series recognised by their descriptions (:mod:`monai_lgg.inference.dicom`).

A folder of NIfTI files, or a converted data set (``datalist.json``), is read by the NIfTI forms together.
``<case>_000k`` names are parsed in one place, :func:`split_channel` (with :func:`case_name`,
:func:`is_image_channel` and the writers' :func:`channel_file_name`: the name rules of
:mod:`monai_lgg.data.naming`, which readers that must not import torch use directly).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from monai_lgg.data.naming import (
    CHANNEL_FILE,
    SEQUENCE_FILE,
    case_name,
    channel_file_name,
    is_image_channel,
    is_nifti_name,
    split_channel,
    split_sequence,
)
from monai_lgg.errors import LGGInputError
from monai_lgg.inference.inputs import (
    NIFTI_SUFFIXES,
    OTHER_VOLUME_SUFFIXES,
    SLICE_NUMBER,
    SLICE_SUFFIXES,
    Case,
    VolumeReference,
    _is_nifti,
    _is_slice,
    _load_slices,
    _load_volume,
    _stem,
    _suffix,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "find_cases",
    "load_case",
    "format_of",
    "CHANNEL_FILE",
    "split_channel",
    "channel_file_name",
    "case_name",
    "is_image_channel",
    "is_nifti_name",
    "InputFormat",
    "SliceImages",
    "NiftiVolume",
    "NiftiChannels",
    "DicomSeries",
    "recognise_sequence",
    "SEQUENCE_FILE",
    "split_sequence",
    "SequenceCase",
    "SequenceReference",
    "SequenceFiles",
    "FORMATS",
    "format_of",
    "find_cases",
]


class InputFormat:
    """One input form. Subclasses set :attr:`name` and :attr:`form` and implement finding and writing.

    ``form`` is the geometry family: ``"slices"`` (2D files stacked along the last axis) or ``"volume"`` (NIfTI,
    reoriented to the model's frame, :mod:`monai_lgg.inference.orientation`).
    """

    name: ClassVar[str] = ""
    form: ClassVar[str] = ""

    # finding cases
    def claims_file(self, path: Path) -> bool:
        """``path`` (an existing file) is an input of this form."""
        raise NotImplementedError

    def cases_of_file(self, path: Path) -> list[Case]:
        """The case(s) a single input file of this form stands for."""
        raise NotImplementedError

    def cases_of_folder(self, folder: Path) -> list[Case]:
        """The cases of this form in ``folder`` (none: the folder is offered to the next form)."""
        return []

    # loading
    def load(self, case: Case, in_channels: int, normalization: str):
        """``(image, reference)``: the case as ``(C, H, W, D)`` float32 in the model's frame, and what the writers
        need to map results back onto the input (``None`` for slices)."""
        raise NotImplementedError

    # naming and writing outputs (paths relative to the output root)
    def mask_files(self, case: Case) -> list[Path]:
        raise NotImplementedError

    def map_files(self, case: Case, kind: str) -> list[Path]:
        """Files of a float map (``kind``: ``"prob"`` or ``"uncertainty"``)."""
        raise NotImplementedError

    def slice_labels(self, case: Case, depth: int) -> list[int | str]:
        """The ``slice`` column of the per-slice tumour table (one per model slice)."""
        raise NotImplementedError

    def overlay_name(self, case: Case, label: int | str) -> str:
        raise NotImplementedError

    def overlay_title(self, case: Case, label: int | str, position: str) -> str:
        return f"{case.name}  {position}"

    def input_name(self, case: Case) -> str:
        """The ``input`` column of ``tumour_summary.csv``."""
        return str(case.files[0])

    def table_columns(self, case: Case, reference) -> dict[str, str]:
        """Columns this form adds to every row of the case's tumour tables (``<case>_tumour.csv`` and
        ``tumour_summary.csv``), from what :meth:`load` returned as ``reference``."""
        return {}

    def output_name(self, root: Path, case: Case) -> str:
        """The ``output`` column of ``tumour_summary.csv``: the mask file, or a pattern of the masks."""
        return str(root / self.mask_files(case)[0])

    def write_mask(self, paths: Sequence[Path], mask: np.ndarray, reference, label_map: bool) -> None:
        """Write ``mask`` (model frame, ``(H, W, D)``) to ``paths`` (:meth:`mask_files`, staged)."""
        raise NotImplementedError

    def write_map(self, paths: Sequence[Path], values: np.ndarray, reference, channels_first: bool) -> None:
        """Write a float32 map (model frame, ``(H, W, D)`` or ``(K, H, W, D)`` with ``channels_first``)."""
        raise NotImplementedError


class SliceImages(InputFormat):
    """2D slice images (TIFF/PNG, 3 channels like the Kaggle slices): one file, or the ``<case>_<n>`` slices of
    a folder stacked in numeric order; outputs beside each slice name (``<name>_mask.tif``), in the input's
    folder structure."""

    name = "slices"
    form = "slices"

    def claims_file(self, path: Path) -> bool:
        return _suffix(path) in SLICE_SUFFIXES

    def cases_of_file(self, path: Path) -> list[Case]:
        if _stem(path).lower().endswith("_mask"):
            raise LGGInputError(path, "is a mask, not an image slice")
        return [Case(_stem(path), self.form, [path], format_name=self.name)]

    def cases_of_folder(self, folder: Path) -> list[Case]:
        """Slices grouped by folder and ``<case>_<n>`` prefix; numbers sort numerically (2 before 10)."""
        files = sorted(
            p
            for p in folder.rglob("*")
            if _is_slice(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        groups: dict[tuple[Path, str], list[tuple[int, Path]]] = {}
        for path in files:
            match = SLICE_NUMBER.match(_stem(path))
            case, number = (match["case"], int(match["number"])) if match else (_stem(path), 0)
            groups.setdefault((path.parent, case), []).append((number, path))
        cases = []
        for (parent, case), members in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            members.sort(key=lambda m: m[0])
            cases.append(Case(case, self.form, [p for _, p in members], parent.relative_to(folder), self.name))
        return cases

    def load(self, case: Case, in_channels: int, normalization: str):
        from monai_lgg.transforms.presets import slice_transforms

        transform = slice_transforms(label_key=None, image_channels=in_channels, normalization=normalization)
        return _load_slices(case, in_channels, transform), None

    @staticmethod
    def _mask_name(path: Path) -> str:
        suffix = path.suffix.lower() if path.suffix.lower() in (".tif", ".tiff", ".png") else ".png"
        return f"{_stem(path)}_mask{suffix}"

    def mask_files(self, case: Case) -> list[Path]:
        return [case.out_dir / self._mask_name(f) for f in case.files]

    def map_files(self, case: Case, kind: str) -> list[Path]:
        return [case.out_dir / f"{_stem(f)}_{kind}.tif" for f in case.files]

    def slice_labels(self, case: Case, depth: int) -> list[int | str]:
        return [_stem(f) for f in case.files]

    def overlay_name(self, case: Case, label: int | str) -> str:
        return f"{label}.png"

    def overlay_title(self, case: Case, label: int | str, position: str) -> str:
        return f"{label}  ({position})"

    def input_name(self, case: Case) -> str:
        return str(case.files[0].parent if len(case.files) > 1 else case.files[0])

    def output_name(self, root: Path, case: Case) -> str:
        masks = [self._mask_name(f) for f in case.files]
        if len(masks) == 1:
            return str(root / case.out_dir / masks[0])
        suffixes = {Path(m).suffix for m in masks}
        numbered = all(_stem(f).startswith(f"{case.name}_") for f in case.files)  # <case>_<n>: Kaggle naming
        pattern = f"{case.name}_*_mask{suffixes.pop()}" if numbered and len(suffixes) == 1 else "*_mask.*"
        return str(root / case.out_dir / pattern)

    def write_mask(self, paths: Sequence[Path], mask: np.ndarray, reference, label_map: bool) -> None:
        from monai_lgg.inference.writers import write_slice_mask

        for k, path in enumerate(paths):
            write_slice_mask(path, mask[..., k], label_map=label_map)

    def write_map(self, paths: Sequence[Path], values: np.ndarray, reference, channels_first: bool) -> None:
        from monai_lgg.inference.writers import write_probability_slice

        for k, path in enumerate(paths):
            write_probability_slice(path, values[..., k])


class NiftiVolume(InputFormat):
    """One NIfTI volume per case (3 channels in one ``rows x columns x slices x 3`` file, or one channel),
    in any stored orientation; outputs ``<case>.nii.gz`` on the input's grid (shape, affine, header)."""

    name = "nifti"
    form = "volume"

    def claims_file(self, path: Path) -> bool:
        return _suffix(path) in NIFTI_SUFFIXES

    def cases_of_file(self, path: Path) -> list[Case]:
        return [Case(_stem(path), self.form, [path], format_name=self.name)]

    def cases_of_folder(self, folder: Path) -> list[Case]:
        """A folder holding NIfTI files (both NIfTI forms: ``<case>_000k`` files are grouped) or a converted data
        set (``datalist.json``)."""
        if not ((folder / "datalist.json").is_file() or any(_is_nifti(p) for p in folder.iterdir())):
            return []
        from monai_lgg.data.sources import inference_items

        cases = []
        for item in inference_items(folder):
            files = [Path(f) for f in np.atleast_1d(item["image"])]
            channels = len(files) > 1 or split_channel(_stem(files[0]))[1] is not None
            name = (NiftiChannels if channels else NiftiVolume).name
            cases.append(Case(item["case"], self.form, files, format_name=name))
        return cases

    def load(self, case: Case, in_channels: int, normalization: str):
        return _load_volume(case, in_channels, normalization)

    def mask_files(self, case: Case) -> list[Path]:
        return [case.out_dir / f"{case.name}.nii.gz"]

    def map_files(self, case: Case, kind: str) -> list[Path]:
        return [case.out_dir / f"{case.name}_{kind}.nii.gz"]

    def slice_labels(self, case: Case, depth: int) -> list[int | str]:
        return list(range(1, depth + 1))  # the model's axial slices, 1 the most inferior

    def overlay_name(self, case: Case, label: int | str) -> str:
        return f"{case.name}_{int(label):03d}.png"

    def write_mask(self, paths: Sequence[Path], mask: np.ndarray, reference, label_map: bool) -> None:
        from monai_lgg.inference.writers import write_nifti

        write_nifti(paths[0], mask, reference, np.uint8)

    def write_map(self, paths: Sequence[Path], values: np.ndarray, reference, channels_first: bool) -> None:
        from monai_lgg.inference.writers import write_nifti

        write_nifti(paths[0], np.moveaxis(values, 0, -1) if channels_first else values, reference, np.float32)


class NiftiChannels(NiftiVolume):
    """``<case>_000k.nii.gz``: one NIfTI per channel, stacked in channel order (a given file brings its siblings)."""

    name = "nifti_channels"

    def claims_file(self, path: Path) -> bool:
        return super().claims_file(path) and split_channel(_stem(path))[1] is not None

    def cases_of_file(self, path: Path) -> list[Case]:
        case = split_channel(_stem(path))[0]
        siblings = sorted((p for p in path.parent.iterdir() if _is_nifti(p) and self._case(p) == case), key=_stem)
        return [Case(case, self.form, siblings, format_name=self.name)]

    def _case(self, path: Path) -> str | None:
        case, channel = split_channel(_stem(path))
        return None if channel is None else case


@dataclass
class SequenceCase(Case):
    """A case given as one file per sequence. ``sequences``: sequence name -> file (``"flair"`` required);
    ``files`` lists the same files, FLAIR first (the file named in errors and in the ``input`` column)."""

    sequences: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class SequenceReference(VolumeReference):
    """The FLAIR file's grid (every output keeps it) and the sequences that were given (not replaced by FLAIR)."""

    sequences: tuple[str, ...] = ()


class SequenceFiles(NiftiVolume):
    """One NIfTI per MRI sequence: ``<case>_flair.nii.gz`` (required), ``<case>_t1.nii.gz`` (pre-contrast) and
    ``<case>_t1c.nii.gz`` (post-contrast), each on its own grid, or the same files given by ``--flair``/``--t1``/
    ``--t1c`` under any names. The sequences are resampled onto the FLAIR grid and a missing one is replaced by
    FLAIR (:func:`~monai_lgg.inference.sequences.assemble_sequences`); outputs are ``<case>.nii.gz`` on the FLAIR
    file's grid, and the tumour tables say which sequences were given (``sequences``: e.g. ``t1+flair``)."""

    name = "sequences"

    def claims_file(self, path: Path) -> bool:
        """A ``<case>_flair/_t1/_t1c`` NIfTI with its ``<case>_flair`` beside it (or itself)."""
        if not super().claims_file(path):
            return False
        case, sequence = split_sequence(_stem(path))
        return sequence is not None and self._flair_beside(path.parent, case)

    def _flair_beside(self, folder: Path, case: str) -> bool:
        return any(split_sequence(_stem(p)) == (case, "flair") for p in folder.iterdir() if _is_nifti(p))

    def cases_of_file(self, path: Path) -> list[Case]:
        """The file's case with its sibling sequences (other files of the folder are not looked at)."""
        case = split_sequence(_stem(path))[0]
        return self._group(path.parent, case)

    def cases_of_folder(self, folder: Path) -> list[Case]:
        """The cases of a folder holding ``<case>_flair`` files (not a converted data set)."""
        if (folder / "datalist.json").is_file() or not any(
            split_sequence(_stem(p))[1] == "flair" for p in folder.iterdir() if _is_nifti(p)
        ):
            return []
        return self._group(folder)

    def _group(self, folder: Path, only: str | None = None) -> list[Case]:
        """Every NIfTI of ``folder`` (``only``: of that case) grouped by case; one that does not follow the naming,
        a second file for the same sequence, or a case without FLAIR is refused (it would be silently left out)."""
        groups: dict[str, dict[str, Path]] = {}
        for path in sorted(p for p in folder.iterdir() if _is_nifti(p) and not p.name.startswith(".")):
            case, sequence = split_sequence(_stem(path))
            if only is not None and case != only:
                continue
            if sequence is None:
                raise LGGInputError(
                    path,
                    "does not follow the sequence naming of this folder (<case>_flair.nii.gz, <case>_t1.nii.gz, "
                    "<case>_t1c.nii.gz); rename it or move it out",
                )
            if sequence in groups.setdefault(case, {}):
                raise LGGInputError(path, f"a second {sequence} file of case {case} ({groups[case][sequence].name})")
            groups[case][sequence] = path
        cases = []
        for case, files in sorted(groups.items()):
            if "flair" not in files:
                raise LGGInputError(
                    next(iter(files.values())),
                    f"no {case}_flair.nii.gz beside it: FLAIR is required (pre- and post-contrast T1 are optional)",
                )
            cases.append(self._case(case, files))
        return cases

    def _case(self, name: str, files: Mapping[str, Path]) -> SequenceCase:
        from monai_lgg.inference.sequences import SEQUENCES

        ordered = [files["flair"]] + [files[s] for s in SEQUENCES if s != "flair" and s in files]
        return SequenceCase(name, self.form, ordered, format_name=self.name, sequences=dict(files))

    def cases_of_sequences(self, files: Mapping[str, str | Path | None]) -> list[Case]:
        """The one case of sequence files given by name (``--flair``, ``--t1``, ``--t1c``); its name is the FLAIR
        file's without ``_flair``.

        Raises:
            LGGInputError: no FLAIR, an unknown sequence, or a file that does not exist.
        """
        from monai_lgg.inference.sequences import SEQUENCES

        given = {k: Path(v).expanduser() for k, v in files.items() if v not in (None, "")}
        unknown = sorted(set(given) - set(SEQUENCES))
        if unknown:
            raise LGGInputError(None, f"unknown sequence(s) {', '.join(unknown)}: expected {', '.join(SEQUENCES)}")
        if "flair" not in given:
            flags = ", ".join(f"--{k}" for k in given)
            raise LGGInputError(
                None,
                f"{flags or 'no sequence'} given without --flair: FLAIR is required (pre- and "
                "post-contrast T1 are optional)",
            )
        for path in given.values():
            if not path.exists():
                raise LGGInputError(path, "does not exist")
        case, _ = split_sequence(_stem(given["flair"]))
        return [self._case(case, given)]

    def load(self, case: Case, in_channels: int, normalization: str):
        from monai_lgg.inference.inputs import volume_in_model_frame
        from monai_lgg.inference.sequences import SEQUENCES, assemble_sequences, read_sequence

        files = getattr(case, "sequences", None) or {"flair": case.files[0]}
        flair = Path(files["flair"])
        if in_channels != len(SEQUENCES):
            raise LGGInputError(
                flair,
                f"the model takes {in_channels} channel(s); separate sequence files make the "
                f"{len(SEQUENCES)} of the LGG models (pre-contrast, FLAIR, post-contrast)",
            )
        images = {name: read_sequence(Path(path)) for name, path in files.items()}
        assembled, real = assemble_sequences(images, flair)
        array = np.moveaxis(np.asanyarray(assembled.dataobj), -1, 0).astype(np.float32)
        image, reference = volume_in_model_frame(flair, array, images["flair"], normalization)
        return image, SequenceReference(reference.image, reference.reorientation, real)

    def table_columns(self, case: Case, reference) -> dict[str, str]:
        return {"sequences": "+".join(getattr(reference, "sequences", ()))}


_T1 = re.compile(r"\bt1|mprage|mp rage|spgr|bravo|\btfe\b|\bvibe\b")
_POST = re.compile(r"post|\+ ?c\b|\bc ?\+|\bgd|gad|contrast|\bce\b|enhanc")
_PRE = re.compile(r"\bpre|native|\bnon ?contrast|without")


def recognise_sequence(description: str) -> str | None:
    """The model sequence a DICOM ``SeriesDescription`` names: ``"flair"``, ``"t1"`` (pre-contrast), ``"t1c"``
    (post-contrast) or ``None`` (another sequence: T2, diffusion, localiser...).

    Rules, on the lower-cased description with punctuation made spaces (``+`` kept): FLAIR when it says ``flair``
    (or ``dark fluid``) and not ``t1`` (a "T1 FLAIR" is T1-weighted); T1 when it names a T1-weighted sequence
    (``t1``, ``mprage``, ``spgr``, ``bravo``, ``tfe``, ``vibe``), post-contrast when it also says ``post``, ``+c``,
    ``c+``, ``gd``, ``gad``, ``contrast``, ``ce`` or ``enhanced`` without ``pre``/``native``/``non contrast``/
    ``without``, else pre-contrast.
    """
    text = " " + re.sub(r"[^a-z0-9+]+", " ", description.lower()) + " "
    t1 = _T1.search(text) is not None
    if ("flair" in text or "dark fluid" in text) and not t1:
        return "flair"
    if not t1:
        return None
    return "t1c" if _POST.search(text) and not _PRE.search(text) else "t1"


@dataclass
class DicomCase(Case):
    """A DICOM study: ``files`` its DICOM files, ``folder`` the folder holding them all (named in errors)."""

    folder: Path = field(default_factory=Path)


@dataclass(frozen=True)
class DicomReference(SequenceReference):
    """The FLAIR series' grid (every output keeps it), the sequences that were real series (not replaced by FLAIR)
    and the FLAIR series itself (the SEG references it)."""

    series: object = None


SEQUENCE_FLAGS = "--flair DIR --t1 DIR --t1c DIR"


class DicomSeries(NiftiVolume):
    """A folder of DICOM files (any names, sub-folders included): one case per ``StudyInstanceUID``.

    A study of one series is read as FLAIR; a study of several has its series told apart by ``SeriesInstanceUID``
    and recognised by ``SeriesDescription`` (:func:`recognise_sequence`; series of other sequences are left out),
    a missing pre- or post-contrast T1 replaced by FLAIR
    (:func:`~monai_lgg.inference.sequences.assemble_sequences`). The case is named after the folder holding the
    study's files. Outputs are those of a NIfTI volume on the FLAIR series' grid (``<case>.nii.gz``...), and with
    ``dicom_seg`` a DICOM Segmentation ``<case>_seg.dcm`` referencing the FLAIR series.
    """

    name = "dicom"

    def claims_file(self, path: Path) -> bool:
        from monai_lgg.inference.dicom import DICOM_SUFFIXES, is_dicom_file

        return _suffix(path) in DICOM_SUFFIXES or is_dicom_file(path)

    def cases_of_file(self, path: Path) -> list[Case]:
        from monai_lgg.inference.dicom import is_dicom_file

        if not is_dicom_file(path):
            raise LGGInputError(path, "is not a DICOM file (no DICM marker after the 128-byte preamble)")
        raise LGGInputError(path, "is one DICOM file: give the folder holding its series (or the study's series)")

    def cases_of_folder(self, folder: Path) -> list[Case]:
        """One case per study under ``folder``. A folder holding one study is one case named after it; with several
        studies, each is named after the highest sub-folder that holds its files and no other study's (its outputs
        go to that sub-folder's parent, relative to the output folder), and studies whose files share a folder get
        their ``PatientID`` (or the end of their study UID) added to that folder's name."""
        from monai_lgg.inference.dicom import dicom_files, study_of

        studies: dict[str, list[Path]] = {}
        patients: dict[str, str] = {}
        for path in dicom_files(folder):
            study, patient = study_of(path)
            if study is not None:
                studies.setdefault(study, []).append(path)
                patients.setdefault(study, patient)
        if len(studies) == 1:
            uid, members = next(iter(studies.items()))
            return [DicomCase(folder.resolve().name, self.form, members, Path(), self.name, folder=folder)]
        ancestors = {uid: {a for p in members for a in p.parents} for uid, members in studies.items()}
        cases: list[Case] = []
        for uid, members in studies.items():
            others = set().union(*(a for other, a in ancestors.items() if other != uid))
            home = Path(os.path.commonpath([str(p.parent) for p in members]))
            name = home.name if home != folder else folder.resolve().name
            if home in others:  # its files share a folder with another study's
                name = f"{name}_{re.sub(r'[^A-Za-z0-9._-]+', '_', patients[uid]).strip('_') or uid[-8:]}"
            else:
                while home.parent != folder and home.parent not in others:
                    home = home.parent
                name = home.name
            out_dir = home.parent.relative_to(folder) if home != folder else Path()
            cases.append(DicomCase(name, self.form, members, out_dir, self.name, folder=home))
        return sorted(cases, key=lambda c: (str(c.out_dir), c.name))

    def load(self, case: Case, in_channels: int, normalization: str):
        from monai_lgg.inference.dicom import describe, read_series_files, series_of
        from monai_lgg.inference.inputs import check_nifti_geometry, volume_in_model_frame

        folder = getattr(case, "folder", case.files[0].parent)
        groups = series_of(case.files)
        if not groups:
            raise LGGInputError(folder, "holds no DICOM image")
        picked = self._sequences(groups, folder, describe)
        series = {name: read_series_files([p for p, _ in groups[uid]], folder) for name, uid in picked.items()}
        flair = series["flair"]
        check_nifti_geometry(flair.files[0], flair.image)
        if in_channels == 1:
            array, real = np.asarray(flair.image.dataobj, dtype=np.float32)[None], ("flair",)
        else:
            assembled, real = _assemble({name: s.image for name, s in series.items()}, folder)
            array = np.moveaxis(np.asarray(assembled.dataobj, dtype=np.float32), -1, 0)
        if array.shape[0] != in_channels:
            raise LGGInputError(folder, f"gives {array.shape[0]} channel(s), the model needs {in_channels}")
        image, reference = volume_in_model_frame(folder, array, flair.image, normalization)
        return image, DicomReference(reference.image, reference.reorientation, real, flair)

    @staticmethod
    def _sequences(groups: dict, folder: Path, describe) -> dict[str, str]:
        """Sequence name -> ``SeriesInstanceUID`` of the series to read.

        Raises:
            LGGInputError: a lone series described as T1, no FLAIR among several series, or two series for one
                sequence (naming the descriptions and the flags that give each series explicitly).
        """
        descriptions = {uid: str(members[0][1].get("SeriesDescription", "") or "") for uid, members in groups.items()}
        if len(groups) == 1:
            uid, description = next(iter(descriptions.items()))
            if recognise_sequence(description) in ("t1", "t1c"):
                raise LGGInputError(
                    folder,
                    f"holds one series, {description!r}, which is a T1 series, not FLAIR (the model needs "
                    f"FLAIR); give the study's FLAIR series (or the series with {SEQUENCE_FLAGS})",
                )
            return {"flair": uid}
        found: dict[str, list[str]] = {}
        for uid, description in descriptions.items():
            sequence = recognise_sequence(description)
            if sequence is not None:
                found.setdefault(sequence, []).append(uid)
        doubled = {name: uids for name, uids in found.items() if len(uids) > 1}
        if "flair" not in found or doubled:
            problem = (
                f"several series look like {', '.join(sorted(doubled))}"
                if doubled
                else "none of its series is recognised as FLAIR"
            )
            raise LGGInputError(
                folder,
                f"holds {len(groups)} DICOM series ({describe(groups)}) and {problem}; give the series "
                f"folders one by one with {SEQUENCE_FLAGS} (docs/inputs.md)",
            )
        return {name: uids[0] for name, uids in found.items()}

    def input_name(self, case: Case) -> str:
        return str(getattr(case, "folder", case.files[0].parent))

    def table_columns(self, case: Case, reference) -> dict[str, str]:
        return {"sequences": "+".join(getattr(reference, "sequences", ()))}

    def seg_files(self, case: Case) -> list[Path]:
        """The DICOM Segmentation of a case (with ``dicom_seg``)."""
        return [case.out_dir / f"{case.name}_seg.dcm"]

    def write_seg(self, paths: Sequence[Path], mask: np.ndarray, reference, algorithm: tuple[str, str]) -> None:
        """Write ``mask`` (model frame) as a DICOM Segmentation of the FLAIR series, on its stored grid."""
        from monai_lgg.inference.dicom import write_seg

        write_seg(paths[0], reference.reorientation.array_to_input(mask), reference.series, algorithm)


def _assemble(images: dict, source: Path):
    """The 3-channel image on the FLAIR grid (:func:`~monai_lgg.inference.sequences.assemble_sequences`)."""
    from monai_lgg.inference.sequences import assemble_sequences

    return assemble_sequences(images, source)


FORMATS: list[InputFormat] = [SequenceFiles(), NiftiChannels(), NiftiVolume(), DicomSeries(), SliceImages()]
"""The input forms, in the order a file or folder is offered to them (the first that claims a file, or finds cases
in a folder, reads it)."""


def format_of(case: Case) -> InputFormat:
    """The form that found ``case``."""
    for fmt in FORMATS:
        if fmt.name == case.format_name:
            return fmt
    return next(f for f in FORMATS if f.form == case.form)


def find_cases(source: str | Path | Mapping[str, str | Path | None]) -> list[Case]:
    """The cases of an input (file or folder) of any registered form, or of sequence files given by name
    (``{"flair": ..., "t1": ..., "t1c": ...}``: one :class:`SequenceFiles` case).

    Raises:
        LGGInputError: missing input, unsupported file type, or a folder with nothing to predict.
    """
    if isinstance(source, Mapping):  # sequences given one by one (--flair, --t1, --t1c)
        return SequenceFiles().cases_of_sequences(source)
    source = Path(source).expanduser()
    if not source.exists():
        raise LGGInputError(source, "does not exist")
    if source.is_file():
        for fmt in FORMATS:
            if fmt.claims_file(source):
                return fmt.cases_of_file(source)
        suffix = _suffix(source)
        if suffix in OTHER_VOLUME_SUFFIXES:
            raise LGGInputError(source, "is not a NIfTI volume (.nii / .nii.gz); convert it to NIfTI first")
        raise LGGInputError(
            source,
            f"unsupported input type {suffix or '(no extension)'!r}: give a .tif/.png slice, "
            "a .nii.gz volume or a folder",
        )
    for fmt in FORMATS:
        cases = fmt.cases_of_folder(source)
        if cases:
            return cases
    raise LGGInputError(source, "folder holds no slice images (.tif/.png) and no NIfTI volumes")


def load_case(
    case: Case, in_channels: int = 3, normalization: str = "zscore"
) -> tuple[torch.Tensor, VolumeReference | None]:
    """Load and preprocess a case into ``(C, H, W, D)`` float32 (per-slice normalised) in the model's frame.

    A NIfTI volume in any stored orientation is reoriented losslessly to the model's frame (axial slices on the
    last axis, rows posterior, columns patient left: :mod:`monai_lgg.inference.orientation`) before the per-slice
    normalisation. ``normalization="none"`` keeps the stored intensities (the ``brain`` geometry normalises per
    volume itself).

    Returns:
        the image and, for NIfTI volumes, the :class:`VolumeReference` that maps outputs back onto the input's
        grid (its shape, affine and header).

    Raises:
        LGGInputError: unreadable file, wrong channel count, mixed slice sizes, or a volume whose slices are not
            close to axial.
    """
    return format_of(case).load(case, in_channels, normalization)

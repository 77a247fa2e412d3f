"""Where a bundle's data comes from: the default synthetic set, converted data sets, their splits and cases.

Bundle configs call these through :mod:`monai_lgg.engines` (``lgg.prepare_dataset``, ``lgg.load_split``...).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monai_lgg.data.datalist import check_disjoint, load_fold
from monai_lgg.errors import LGGInputError

__all__ = [
    "SYNTHETIC",
    "cache_root",
    "prepare_dataset",
    "default_geometry",
    "load_split",
    "inference_items",
]

SYNTHETIC = "synthetic"


def cache_root() -> Path:
    """Where prepared data sets live: ``$MONAI_LGG_CACHE`` or ``~/.cache/monai_lgg``."""
    return Path(os.environ.get("MONAI_LGG_CACHE", Path.home() / ".cache" / "monai_lgg"))


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise data preparation between processes (e.g. the ranks of a torchrun job)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare_dataset(dataset_dir: str | os.PathLike = SYNTHETIC) -> str:
    """Return the ``datalist.json`` of a converted data set, converting or generating it when needed.

    Args:
        dataset_dir: ``"synthetic"`` (the embedded default: 8 generated patients, prepared once in
            :func:`cache_root`), a folder written by ``monai-lgg convert``, its ``datalist.json``, or a
            Kaggle ``kaggle_3m`` folder (converted once into the cache, keyed by its absolute path).
    """
    from monai_lgg.data.kaggle import convert_kaggle
    from monai_lgg.data.synthetic import generate_synthetic_kaggle

    if str(dataset_dir) == SYNTHETIC:
        target = cache_root() / "synthetic"
        with _locked(cache_root()):
            if not (target / "lgg" / "datalist.json").is_file():
                generate_synthetic_kaggle(target / "kaggle_3m")
                _checked(convert_kaggle(target / "kaggle_3m", target / "lgg", progress=False))
        return str(target / "lgg" / "datalist.json")
    path = Path(dataset_dir).expanduser()
    if path.is_file() and path.suffix == ".json":
        return str(path.resolve())
    if (path / "datalist.json").is_file():
        return str((path / "datalist.json").resolve())
    if not path.is_dir():
        raise LGGInputError(
            path, "dataset_dir does not exist (give a converted folder, a kaggle_3m folder or 'synthetic')"
        )
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    target = cache_root() / f"converted-{path.name}-{key}"
    with _locked(cache_root()):
        if not (target / "datalist.json").is_file():
            _checked(convert_kaggle(path, target))
    return str(target / "datalist.json")


def _checked(result) -> None:
    if not result.ok:
        first = result.report["errors"][0]
        more = len(result.report["errors"]) - 1
        problem = f"{first['problem']} (and {more} more; run monai-lgg convert for the report)"
        raise LGGInputError(first["file"], problem)


def default_geometry(datalist: str | os.PathLike | None = None) -> str:
    """``brain`` for a data set converted from the Kaggle LGG layout, else ``patch``.

    The ``brain`` geometry (:mod:`monai_lgg.transforms.brain`: whole brain slices, resized) needs brain MRI
    with the LGG channels (pre-contrast, FLAIR, post-contrast), recognised from the ``channel_names`` of the
    ``dataset.json`` beside ``datalist``; other images (``convert_folders`` data, e.g. EM or cells) keep their
    resolution (``patch``: random patches in training, sliding windows at inference).
    """
    import json

    from monai_lgg.data.kaggle import CHANNEL_NAMES

    if datalist is None:
        return "patch"
    meta = Path(datalist).parent / "dataset.json"
    try:
        names = json.loads(meta.read_text()).get("channel_names", {}) if meta.is_file() else {}
    except (OSError, ValueError):
        return "patch"
    named = isinstance(names, dict) and tuple(names.get(str(i)) for i in range(3)) == CHANNEL_NAMES
    return "brain" if named else "patch"


def load_split(datalist: str | os.PathLike, fold: int = 0, split: str = "train") -> list[dict]:
    """Items of one split of the nested fold (see :func:`monai_lgg.data.datalist.split_fold`).

    ``split`` may also be ``trainval`` (train + validation: every patient but the test fold's, for a fixed
    schedule that selects nothing on validation patients) or the path of another datalist (``.json``): all
    its items (a test list).

    The three splits are checked to be patient-disjoint every time, so a broken datalist cannot leak.
    A data set converted with a fixed test list (``test_fold`` in its datalist) accepts only that fold,
    since any other fold would train on the fixed test cases.
    """
    if str(split).endswith(".json"):  # an explicit test list: every item of another datalist
        return load_fold(split, split="all")
    pinned = _fixed_test_fold(datalist)
    if pinned is not None and int(fold) != pinned:
        raise LGGInputError(
            datalist, f"has a fixed test list (fold {pinned}): train and evaluate with --fold {pinned}, not {fold}"
        )
    parts = {s: load_fold(datalist, fold, s) for s in ("train", "validation", "test")}
    check_disjoint(**parts)
    if split == "all":
        return [item for part in parts.values() for item in part]
    if split == "trainval":  # a fixed schedule needs no validation patients: they train too, the test fold stays out
        return parts["train"] + parts["validation"]
    if split not in parts:
        raise LGGInputError(None, f"split must be train, validation, test, trainval or all; got {split!r}")
    if not parts[split]:
        from monai_lgg.data.datalist import MIN_TRAINING_FOLDS

        num_folds = len({item["fold"] for part in parts.values() for item in part})
        hint = (
            f": its {num_folds} fold(s) are too few to train (a nested split needs {MIN_TRAINING_FOLDS}; "
            "convert more patients)"
            if num_folds < MIN_TRAINING_FOLDS
            else ""
        )
        raise LGGInputError(datalist, f"fold {fold} has an empty {split} split{hint}")
    return parts[split]


def _fixed_test_fold(datalist: str | os.PathLike) -> int | None:
    """The ``test_fold`` a converter pinned in ``datalist`` (``convert_folders(test_cases=...)``), if any."""
    import json

    try:
        value = json.loads(Path(datalist).read_text()).get("test_fold")
    except (OSError, ValueError, AttributeError):
        return None  # load_fold reports an unreadable datalist with its own message
    return None if value is None else int(value)


def inference_items(dataset_dir: str | os.PathLike = SYNTHETIC) -> list[dict]:
    """Volumes to segment: every case of a data set, without labels.

    Args:
        dataset_dir: anything :func:`prepare_dataset` takes (all its cases), or a folder of NIfTI
            volumes: ``<case>_0000/_0001/_0002.nii.gz`` modality files (grouped by case) or one
            multi-channel ``<case>.nii.gz`` per case.
    """
    path = Path(dataset_dir).expanduser()
    if str(dataset_dir) != SYNTHETIC and path.is_dir() and not (path / "datalist.json").is_file():
        from monai_lgg.data.naming import case_name, is_nifti_name  # the input forms' name rules

        volumes = sorted(p for p in path.iterdir() if p.is_file() and is_nifti_name(p))
        if volumes:
            cases: dict[str, list[str]] = {}
            for volume in volumes:
                cases.setdefault(case_name(volume), []).append(str(volume))
            return [{"image": files if len(files) > 1 else files[0], "case": case} for case, files in cases.items()]
    items = load_fold(prepare_dataset(dataset_dir), split="all")
    return [{"image": item["image"], "case": item["case"]} for item in items]

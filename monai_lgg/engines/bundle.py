"""Where a bundle runs: its root folder, its device, its data (preparing the default synthetic set)."""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from monai_lgg.bundle_paths import BUNDLES_DIR, bundle_names, installed_bundle, output_root
from monai_lgg.data.datalist import check_disjoint, load_fold
from monai_lgg.errors import LGGInputError, one_line_errors_in_bundle_runs

__all__ = [
    "BUNDLES_DIR",
    "bundle_names",
    "installed_bundle",
    "output_root",
    "run_dir",
    "dataset_tag",
    "default_geometry",
    "bundle_root",
    "default_device",
    "cache_root",
    "prepare_dataset",
    "load_split",
    "inference_items",
    "bundle_setting",
    "bundle_network",
    "SYNTHETIC",
]

SYNTHETIC = "synthetic"
RUNS = "runs"

# Bundle configs import this module ("$import monai_lgg.engines as lgg"): from then on, a user error under
# `python -m monai.bundle run` ends with our one-line message instead of MONAI's wrapped traceback.
one_line_errors_in_bundle_runs()


def bundle_root(default: str = ".") -> str:
    """The folder of the bundle being run (the parent of its ``configs/``).

    MONAI's ``ConfigWorkflow`` knows the config folder but exposes no config key for it, and model-zoo
    bundles use ``"bundle_root": "."`` (so they only work when started inside the bundle). Here the
    running workflow is found on the call stack, so ``python -m monai.bundle run --config_file
    bundles/unet/configs/train.json`` works from any folder. Programs that parse configs themselves
    (MONAI Label, tests) pass ``bundle_root`` as an override, as the model zoo does.
    """
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    while frame is not None:
        workflow = frame.f_locals.get("self")
        if isinstance(workflow, ConfigWorkflow) and getattr(workflow, "config_root_path", None) is not None:
            path = Path(workflow.config_root_path).resolve()
            return str(path.parent if path.name == "configs" else path)
        frame = frame.f_back
    return str(Path(default).resolve())


def dataset_tag(dataset_dir: str | os.PathLike = SYNTHETIC) -> str:
    """A short name of a data set for run folders: ``synthetic``, or the data set folder's name.

    A ``datalist.json`` is named by its folder; another datalist file adds its stem (``lgg-small``).
    """
    if str(dataset_dir) == SYNTHETIC:
        return SYNTHETIC
    path = Path(dataset_dir).expanduser().resolve()
    name = path.name
    if path.suffix == ".json":
        name = path.parent.name if path.stem == "datalist" else f"{path.parent.name}-{path.stem}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "data"


def run_dir(
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike = SYNTHETIC,
    fold: int = 0,
    train_split: str = "train",
) -> str:
    """The folder a training run writes into by default: ``<bundle_root>/runs/<data set>_fold<k>``.

    For a bundle of an installed monai-lgg: ``./<bundle name>_outputs/runs/<data set>_fold<k>`` (see
    :func:`output_root`).

    Its ``models/`` (``model.pt``, ``last.ckpt`` and their JSON records), ``logs/`` and ``eval/`` belong to
    this run only. The bundle's own ``models/model.pt`` is the published model that ``inference.json``
    and ``monai-lgg predict`` load, so training never writes there unless asked (``--ckpt_dir
    <bundle>/models``); re-running the same command finds the same folder, which is what lets a killed
    run resume. A run on every patient (``--train_split all``, ``configs/final.json``) is
    ``<data set>_all``; other training splits add their name (``<data set>_fold0_trainval``).

    Args:
        bundle_root: the bundle folder.
        dataset_dir: the ``dataset_dir`` of the run (see :func:`dataset_tag`).
        fold: the test fold of the nested split.
        train_split: the patients trained on (``train``, ``trainval``, ``all``, ...).
    """
    tag = dataset_tag(dataset_dir)
    split = str(train_split)
    name = f"{tag}_all" if split == "all" else f"{tag}_fold{int(fold)}" + ("" if split == "train" else f"_{split}")
    return str(output_root(bundle_root) / RUNS / re.sub(r"[^A-Za-z0-9._-]+", "_", name))


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        from monai_lgg.inference.formats import case_name, is_nifti_name  # the registry's name rules

        volumes = sorted(p for p in path.iterdir() if p.is_file() and is_nifti_name(p))
        if volumes:
            cases: dict[str, list[str]] = {}
            for volume in volumes:
                cases.setdefault(case_name(volume), []).append(str(volume))
            return [{"image": files if len(files) > 1 else files[0], "case": case} for case, files in cases.items()]
    items = load_fold(prepare_dataset(dataset_dir), split="all")
    return [{"image": item["image"], "case": item["case"]} for item in items]


MODEL_FILE = "model.json"
MAX_MEMBERS = 64
"""The most networks a trained-model record may ask to build (the shipped UNet has 5)."""


def _model_config(bundle_root: str | os.PathLike) -> dict:
    path = Path(bundle_root) / "configs" / MODEL_FILE
    if not path.is_file():
        raise LGGInputError(path, f"not found: every monai-lgg bundle states its network in configs/{MODEL_FILE}")
    from monai.bundle import ConfigParser

    return ConfigParser.load_config_file(path)


def bundle_setting(bundle_root: str | os.PathLike, key: str, default: object = None) -> object:
    """A bundle-specific setting from ``<bundle_root>/configs/model.json`` (e.g. its learning rate).

    The configs shared by all bundles (``bundles/_shared/configs``) read what differs per model
    from this file, so each bundle states only its differences. A command-line override of the same
    key (``--learning_rate 1e-4``) replaces the lookup.
    """
    return _model_config(bundle_root).get(key, default)


def bundle_network(
    bundle_root: str | os.PathLike, network_args: dict | None = None, **context: object
) -> torch.nn.Module:
    """Instantiate ``network_def`` of ``<bundle_root>/configs/model.json``.

    Args:
        bundle_root: the bundle folder.
        network_args: constructor arguments replacing those in ``model.json``
            (``--network_args#hidden_size 768`` on the command line).
        context: values that ``model.json`` refers to (``@in_channels``, ``@spatial_size``, ...), taken
            from the running config so they follow its overrides; ``members=N > 1`` builds a
            :class:`~monai_lgg.networks.ensemble.ProbabilityEnsemble` of ``N`` copies (an ensemble checkpoint).
    """
    from monai.bundle import ConfigParser

    config = _model_config(bundle_root)
    if "network_def" not in config:
        raise LGGInputError(Path(bundle_root) / "configs" / MODEL_FILE, "has no 'network_def'")
    config["network_def"].update(network_args or {})
    members = int(context.pop("members", 1) or 1)
    parser = ConfigParser({**config, **context})
    if members == 1:
        return parser.get_parsed_content("network_def")
    from monai_lgg.networks.ensemble import ProbabilityEnsemble

    return ProbabilityEnsemble(
        [parser.get_parsed_content("network_def", instantiate=True, lazy=False) for _ in range(members)]
    )


# MONAI's config parser gives these meaning: "$" runs an expression, "@" refers to another key, "%" reads another file
_CONFIG_SYNTAX = ("$", "@", "%")


def _plain_json(value: object, sidecar: Path, where: str) -> None:
    """Refuse anything in recorded ``network_args`` that MONAI's config parser would interpret: a string starting with
    ``$``, ``@`` or ``%``, a key that is not a plain argument name (``_target_``, ``_mode_``, ``_requires_``...,
    or ``a#b``), and values that are not JSON scalars, lists or mappings."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not (isinstance(key, str) and key.isidentifier() and not key.startswith("_")):
                raise LGGInputError(sidecar, f"network_args{where} has the key {str(key)[:40]!r}, not an argument "
                                    "name: refused (a trained-model record is data; only network_args._target_ may "
                                    "name a registered network)")
            _plain_json(item, sidecar, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _plain_json(item, sidecar, f"{where}[{index}]")
    elif isinstance(value, str):
        if value.startswith(_CONFIG_SYNTAX):
            raise LGGInputError(sidecar, f"network_args{where} holds {value[:40]!r}, an expression or reference: "
                                "refused (a sidecar is data, not code; pass it with --network_args if you trust it)")
    elif not (value is None or isinstance(value, (bool, int, float))):
        raise LGGInputError(sidecar, f"network_args{where} holds a {type(value).__name__}, not a JSON value")


def trained_network_args(checkpoint: str | os.PathLike) -> dict:
    """The ``--network_args`` a checkpoint was trained with (its sidecar's ``network_args``; ``{}`` without one),
    checked to be plain data.

    The sidecar travels with downloaded weights, and these arguments go through MONAI's config parser, which would
    run an expression, follow a reference or instantiate any ``_target_``. So the values must be plain JSON
    (:func:`_plain_json`), and a ``_target_`` (the network class, when training replaced the bundle's) must be
    exactly one of the names in :data:`monai_lgg.networks.registry.NETWORKS`: it is looked up in that table and
    replaced by the registered class's own path, never imported or resolved from the record's text.

    Raises:
        LGGInputError: the recorded arguments are not a mapping, hold something other than plain values, or name
            a network that is not registered.
    """
    from monai_lgg.networks.registry import NETWORKS, canonical_network_name

    sidecar = Path(checkpoint).with_suffix(".json")
    value = trained_setting(checkpoint, "network_args", {})
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        raise LGGInputError(sidecar, f"network_args must be a mapping of constructor arguments, got {value!r}"[:300])
    args = dict(value)
    chosen = "_target_" in args
    target = args.pop("_target_", None)
    _plain_json(args, sidecar, "")
    if not chosen:
        return args
    canonical = canonical_network_name(target)
    if canonical is None:
        known = ", ".join(sorted({name for name in NETWORKS if "." not in name}))
        raise LGGInputError(sidecar, f"network_args names {str(target)[:80]!r} as _target_, not a registered network "
                            f"class: refused (a sidecar is data; it may only choose one of {known})")
    return {"_target_": canonical, **args}


def trained_setting(checkpoint: str | os.PathLike, key: str, default: object = None) -> object:
    """A setting training recorded in a checkpoint's sidecar (``model.json``: ``geometry``, ``spatial_size``...),
    or ``default`` when there is no sidecar or no such key: ``inference.json`` and ``monai-lgg predict`` then
    preprocess as the network was trained."""
    import json

    sidecar = Path(checkpoint).with_suffix(".json")
    try:
        record = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    except (OSError, ValueError):
        return default
    return record.get(key, default) if isinstance(record, dict) else default


def trained_members(checkpoint: str | os.PathLike) -> int:
    """How many networks a checkpoint holds: ``members`` of its sidecar (``model.json``), 1 without one.

    The shipped UNet is the ensemble of its cross-validation's fold models (:class:`~monai_lgg.networks.ensemble.
    ProbabilityEnsemble`); a model trained by the user is one network.
    """
    import json

    sidecar = Path(checkpoint).with_suffix(".json")
    try:
        record = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    except (OSError, ValueError):
        return 1
    value = record.get("members", 1) if isinstance(record, dict) else 1
    if isinstance(value, int) and value > MAX_MEMBERS:  # each member is a whole network built before loading
        raise LGGInputError(
            sidecar, f"members is {value}: more than {MAX_MEMBERS} networks in one checkpoint is refused"
        )
    return value if isinstance(value, int) and value >= 1 else 1

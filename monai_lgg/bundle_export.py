"""Export a monai-lgg bundle in the form the MONAI Model Zoo accepts (``monai-lgg export_bundle``).

The repository's bundles share their workflow configs (symbolic links into ``bundles/_shared``) and
keep their weights in git, so that ``monai-lgg predict`` works offline. The Model Zoo holds real files
only, takes weights through ``large_files.yml`` (its pre-commit hook refuses files over 1 MB), pip-installs
every version pinned in ``metadata.json`` on its CI's Python (3.10), and requires ``models/model.pt`` for
every bundle. :func:`export_bundle` writes that form::

    OUTPUT/<name>/                        the folder to add to the zoo's models/ (no weights in it)
        LICENSE  large_files.yml  configs/{inference,train,evaluate,...}.json  configs/logging.conf
        docs/README.md (model card + generated "published weights" section)  docs/data_license.txt
    OUTPUT/<name>_v<version>_model.pt     the weights: upload them where large_files.yml's url points
    OUTPUT/<name>_v<version>.zip          the complete bundle, weights included: monai.bundle.download(url=...)
                                          and monai.bundle.load read it from a local path

What goes into ``metadata.json`` is read at export time, never fixed here: the bundle's version pins
(checked against monai-lgg's own requirements and, where the release is the installed one, against the
zoo's Python), ``monai-lgg`` at this package's version, and ``eval_metrics`` read from the measured
results that ``docs/eval_metrics.json`` names. Everything is checked with
:func:`monai_lgg.bundle_checks.verify_zoo_bundle` before anything is written.

Bundle configs execute Python expressions when parsed (``$...`` values, ``_target_`` imports): export
and publish only bundles from a trusted source.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from monai_lgg import __version__
from monai_lgg.bundle.record import read_record
from monai_lgg.bundle.settings import installed_bundle
from monai_lgg.bundle_checks import WEIGHTS_FILE, ZOO_NAME_PATTERN, verify_zoo_bundle, zoo_json_text
from monai_lgg.errors import LGGInputError
from monai_lgg.io import atomic_dir, atomic_path

__all__ = [
    "ZOO_PYTHON",
    "DIST_NAME",
    "EVAL_METRICS_FILE",
    "ExportResult",
    "MeasuredMetrics",
    "zoo_bundle_name",
    "measured_eval_metrics",
    "check_zoo_pins",
    "zoo_metadata",
    "export_bundle",
]

ZOO_PYTHON = "3.10"
"""The Python of the Model Zoo's CI, which pip-installs every version a bundle's metadata pins."""

DIST_NAME = "monai-lgg"
"""This package's distribution name, as a bundle's ``required_packages_version`` names it."""

EVAL_METRICS_FILE = "docs/eval_metrics.json"
"""Per bundle: where its measured accuracy comes from (see :func:`measured_eval_metrics`)."""

_VERSION_KEYS = {"monai_version": "monai", "pytorch_version": "torch", "numpy_version": "numpy"}
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed member times: the same export gives the same zip
_TEXT_SUFFIXES = (".json", ".md", ".txt", ".conf", ".yml", ".yaml", "")
_REFUSED_UNTRAINED = (
    "has no trained weights (models/model.pt). The MONAI Model Zoo requires models/model.pt (or a large_files.yml "
    "that provides it) for every bundle, so it cannot be published yet. Train it first, e.g. "
    "`monai-lgg train --bundle {name} --dataset_dir data/lgg --epochs 100 --ckpt_dir bundles/{name}/models`, "
    "measure it (`monai-lgg evaluate --bundle {name} ...` or `python tools/experiment_grid.py ...`), point "
    "bundles/{name}/" + EVAL_METRICS_FILE + " at the measured results, then export again"
)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_bundle` wrote.

    Attributes:
        bundle: ``OUTPUT/<name>``, the folder for the zoo's ``models/``.
        weights: the weights file to upload (``OUTPUT/<name>_v<version>_model.pt``).
        archive: the complete bundle zip (``OUTPUT/<name>_v<version>.zip``).
        name: the zoo bundle name.
        version: the bundle version.
        weights_url: the ``url`` written in ``large_files.yml``.
        sha256: the weights' SHA-256, also in ``large_files.yml``.
        checks: the zoo checks the export passed.
    """

    bundle: Path
    weights: Path
    archive: Path
    name: str
    version: str
    weights_url: str
    sha256: str
    checks: tuple[str, ...]


@dataclass(frozen=True)
class MeasuredMetrics:
    """Accuracy measured for a bundle's weights, read from a results file.

    Attributes:
        values: metric name -> value, as they go into ``eval_metrics``.
        protocol: how they were measured (one paragraph, for the model card).
        source: the results file they were read from.
        entry: the ``#``-path of the summary inside it.
        record: the results file's top-level description (command, date, machine), when it has one.
    """

    values: dict[str, float]
    protocol: str
    source: Path
    entry: str
    record: dict[str, Any]


def zoo_bundle_name(bundle_root: str | Path) -> str:
    """The zoo name of a project bundle: task and data type first, as the zoo suggests.

    For example ``lgg_mri_unet_segmentation``.
    """
    folder = "".join(c if c.isalnum() else "_" for c in Path(bundle_root).name).strip("_") or "bundle"
    return f"lgg_mri_{folder}_segmentation"


def _select(content: Any, path: str, where: Path) -> Any:
    """``content`` followed along ``a#b#c``; in a list, a part picks the element of that ``name`` or index."""
    for part in [p for p in path.split("#") if p]:
        if isinstance(content, Mapping) and part in content:
            content = content[part]
        elif isinstance(content, list):
            named = [item for item in content if isinstance(item, Mapping) and str(item.get("name")) == part]
            if named:
                content = named[0]
            elif part.isdigit() and int(part) < len(content):
                content = content[int(part)]
            else:
                raise LGGInputError(where, f"has no list element named or numbered {part!r} (path {path!r})")
        else:
            raise LGGInputError(where, f"has no key {part!r} (path {path!r})")
    return content


def measured_eval_metrics(bundle_root: str | Path) -> MeasuredMetrics:
    """The measured accuracy of a bundle's weights, as named by its ``docs/eval_metrics.json``.

    That file states where the numbers were measured, never the numbers themselves::

        {
            "protocol": "5-fold patient-level cross-validation ...",
            "source": "../../docs/results/cv_unet/results.json",   (relative to the bundle folder)
            "entry": "results#unet-dicece-adamw#summary",          (a #-path in it; '' for the top)
            "metrics": {"mean_dice_per_patient": "per_patient#dice#mean", ...}
        }

    so new weights are described by pointing ``source``/``entry`` at their new results
    (``experiment_grid.py``'s ``results.json`` or an evaluation's ``summary.json``).

    Raises:
        LGGInputError: the file, the results or a metric is missing, or a value is not a finite number.
    """
    root = Path(bundle_root)
    spec_file = root / EVAL_METRICS_FILE
    if not spec_file.is_file():
        raise LGGInputError(
            spec_file,
            "not found: a published bundle needs measured accuracy; write it with 'source' (a results file such as "
            "docs/results/<name>/results.json or eval/summary.json), 'entry' and 'metrics' (see "
            "monai_lgg.bundle_export.measured_eval_metrics)",
        )
    try:
        spec = json.loads(spec_file.read_text())
    except (OSError, ValueError) as err:
        raise LGGInputError(spec_file, f"is not readable JSON ({err})") from None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("metrics"), Mapping) or not spec["metrics"]:
        raise LGGInputError(spec_file, "needs 'source', 'protocol' and a non-empty 'metrics' mapping")
    if not isinstance(spec.get("source"), str) or not isinstance(spec.get("protocol"), str):
        raise LGGInputError(spec_file, "needs 'source' (a path) and 'protocol' (how the numbers were measured)")
    source = (root / spec["source"]).resolve()
    if not source.is_file() and installed_bundle(root):
        raise LGGInputError(
            root,
            f"export_bundle publishes from a source checkout: the measured results its {EVAL_METRICS_FILE} "
            f"names ({spec['source']}) are not part of the installed package",
        )
    try:
        results = json.loads(source.read_text())
    except (OSError, ValueError) as err:
        raise LGGInputError(source, f"measured results named by {spec_file} cannot be read ({err})") from None
    entry = str(spec.get("entry", ""))
    summary = _select(results, entry, source)
    values: dict[str, float] = {}
    for name, path in spec["metrics"].items():
        value = _select(summary, str(path), source)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise LGGInputError(source, f"{entry}#{path} is {value!r}, not a measured number (metric {name!r})")
        values[str(name)] = round(float(value), 4)
    record = {
        k: results[k]
        for k in ("name", "command", "date", "machine", "budget")
        if isinstance(results, Mapping) and k in results
    }
    return MeasuredMetrics(values, spec["protocol"], source, entry, record)


def _own_requirements(python: str) -> dict[str, Any]:
    """monai-lgg's installed requirements for ``python`` (no extras): canonical name -> SpecifierSet."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        lines = importlib.metadata.requires(DIST_NAME) or []
    except importlib.metadata.PackageNotFoundError:
        raise LGGInputError(
            None, f"{DIST_NAME} is not installed as a package (pip install -e . or the wheel)"
        ) from None
    requirements = {}
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate({"python_version": python, "extra": ""}):
            continue
        requirements[canonicalize_name(requirement.name)] = requirement.specifier
    return requirements


def check_zoo_pins(pins: Mapping[str, str], where: str | Path, python: str = ZOO_PYTHON) -> None:
    """Refuse version pins the Model Zoo's CI could not install together.

    The zoo runs ``pip install <name>==<version>`` for each pin on Python ``python``. Offline, this
    checks what can be known without an index: each pin is a public release version (``2.13.0``, not
    ``2.13.0+cpu``), satisfies monai-lgg's own requirement on that package, and, where it is the release
    installed here, that release's ``Requires-Python`` admits ``python``. (Whether an index has the
    release is checked by the tests with ``pip download --python-version``.)

    Args:
        pins: distribution name -> version.
        where: the metadata file the pins come from (named in the message).
        python: the zoo CI's Python version.

    Raises:
        LGGInputError: one message listing every pin that cannot work.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    own = _own_requirements(python)
    problems = []
    for name, version in pins.items():
        try:
            release = Version(str(version))
        except InvalidVersion:
            problems.append(f"{name} {version!r} is not a version pip can install")
            continue
        if release.local:
            problems.append(f"{name} {version} is a local build; pin the public release {release.public}")
        required = own.get(canonicalize_name(name))
        if required is not None and not required.contains(release, prereleases=True):
            problems.append(f"{name}=={version} conflicts with {DIST_NAME}'s requirement {name}{required}")
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(installed.version).public != release.public:
            continue
        requires_python = installed.metadata.get("Requires-Python")
        if requires_python and not SpecifierSet(requires_python).contains(python):
            problems.append(
                f"{name} {version} requires Python {requires_python}, but the Model Zoo's CI installs it on Python "
                f"{python}: pin a release that supports {python}"
            )
    if problems:
        raise LGGInputError(where, "; ".join(problems))


def zoo_metadata(source: Mapping[str, Any], metrics: MeasuredMetrics, where: str | Path) -> dict[str, Any]:
    """The exported ``metadata.json``: the bundle's, with ``monai-lgg`` at this version and measured ``eval_metrics``.

    Key order is kept (``eval_metrics`` goes where it was, else after ``pred_classes``).

    Raises:
        LGGInputError: a pin cannot be installed by the zoo (:func:`check_zoo_pins`), or a version key is missing.
    """
    missing = [key for key in (*_VERSION_KEYS, "version", "changelog") if key not in source]
    if missing:
        raise LGGInputError(where, f"has no {', '.join(missing)}")
    packages = {DIST_NAME: __version__}
    packages.update(
        {k: str(v) for k, v in dict(source.get("required_packages_version") or {}).items() if k != DIST_NAME}
    )
    pins = {dist: str(source[key]) for key, dist in _VERSION_KEYS.items()}
    check_zoo_pins({**pins, **{k: v for k, v in packages.items() if k != DIST_NAME}}, where)
    metadata: dict[str, Any] = {}
    for key, value in source.items():
        if key == "eval_metrics":
            continue
        metadata[key] = packages if key == "required_packages_version" else value
        if key == "pred_classes" or (key == "label_classes" and "pred_classes" not in source):
            metadata["eval_metrics"] = dict(metrics.values)
    metadata.setdefault("required_packages_version", packages)
    metadata.setdefault("eval_metrics", dict(metrics.values))
    return metadata


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _normalised_text(text: str) -> str:
    """Text as the zoo's hooks leave it: LF line ends, no trailing whitespace, exactly one final newline."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).rstrip("\n") + "\n"


def _copy_file(source: Path, target: Path) -> None:
    """Copy a (possibly linked) file as a plain, non-executable file; JSON in the zoo's format, text normalised."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".json":
        try:
            target.write_text(zoo_json_text(json.loads(source.read_text())))
        except ValueError as err:
            raise LGGInputError(source, f"is not valid JSON ({err})") from None
    elif source.suffix in _TEXT_SUFFIXES:
        try:
            target.write_text(_normalised_text(source.read_text(encoding="utf-8")), encoding="utf-8")
        except UnicodeDecodeError:
            shutil.copyfile(source, target)
    else:
        shutil.copyfile(source, target)
    target.chmod(0o644)


def _large_files_yaml(url: str, sha256: str) -> str:
    """``large_files.yml`` in the zoo's form; values are JSON strings, which YAML reads as they are."""
    return (
        "large_files:\n"
        f"  - path: {json.dumps(WEIGHTS_FILE)}\n"
        f"    url: {json.dumps(url)}\n"
        f"    hash_val: {json.dumps(sha256)}\n"
        '    hash_type: "sha256"\n'
    )


def _published_section(
    metadata: Mapping[str, Any], metrics: MeasuredMetrics, record: Mapping[str, Any], sha256: str, size: int, root: Path
) -> str:
    """The model card section describing the published weights, generated from their records (never typed)."""
    lines = [
        "",
        "## Published weights and measured accuracy",
        "",
        f"Generated by `monai-lgg export_bundle` (monai-lgg {__version__}) for version {metadata['version']} "
        "of this bundle.",
        "",
        f"- Weights: `{WEIGHTS_FILE}`, {size / 1e6:.1f} MB, SHA-256 `{sha256}`; `large_files.yml` says where to "
        "download them.",
    ]
    if record:
        training, validation = record.get("training_cases") or [], record.get("validation_cases") or []
        trained = f"{len(training)} training patients"
        if record.get("selection") and "fixed" in str(record["selection"]):
            trained += f", {record['selection']}"
        elif validation:
            trained += f", epoch chosen on {len(validation)} validation patients"
        if record.get("epoch") is not None:
            trained += f", epoch {record['epoch']}"
        lines.append(f"- Training record (`models/model.json` of the source bundle): {trained}.")
    else:
        lines.append("- The source bundle has no training record (`models/model.json`) for these weights.")
    try:
        source = os.path.relpath(metrics.source, root.parent.parent)
    except ValueError:
        source = str(metrics.source)
    lines += [
        f"- Accuracy: {metrics.protocol}",
        f"- Numbers read from `{source}`"
        + (f" (`{metrics.entry}`)" if metrics.entry else "")
        + " of the monai-lgg repository"
        + (f", measured {metrics.record['date']}" if metrics.record.get("date") else "")
        + ".",
        "",
        "| metric (`eval_metrics`) | value |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value:.4f} |" for name, value in metrics.values.items()]
    return "\n".join(lines) + "\n"


def _data_license(root: Path) -> str:
    own = root / "docs" / "data_license.txt"
    if own.is_file():
        return own.read_text(encoding="utf-8")
    return files("monai_lgg").joinpath("templates", "data_license.txt").read_text(encoding="utf-8")


def _write_bundle(
    staged: Path,
    root: Path,
    metadata: dict[str, Any],
    metrics: MeasuredMetrics,
    record: dict,
    url: str,
    sha256: str,
    size: int,
) -> None:
    """The zoo folder, without weights, into ``staged``."""
    license_file = root / "LICENSE"
    if not license_file.is_file():
        raise LGGInputError(license_file, "missing: the Model Zoo requires a LICENSE in every bundle")
    _copy_file(license_file, staged / "LICENSE")
    for config in sorted((root / "configs").iterdir()):
        if config.name != "metadata.json" and config.is_file():
            _copy_file(config, staged / "configs" / config.name)
    (staged / "configs" / "metadata.json").write_text(zoo_json_text(metadata))
    docs = root / "docs"
    for doc in sorted(docs.rglob("*")) if docs.is_dir() else []:
        relative = doc.relative_to(docs).as_posix()
        if doc.is_file() and relative not in ("README.md", "eval_metrics.json", "data_license.txt"):
            _copy_file(doc, staged / "docs" / relative)
    card = docs / "README.md"
    if not card.is_file():
        raise LGGInputError(card, "missing: the exported bundle needs a model card")
    (staged / "docs").mkdir(exist_ok=True)
    text = _normalised_text(card.read_text(encoding="utf-8")) + _published_section(
        metadata, metrics, record, sha256, size, root
    )
    (staged / "docs" / "README.md").write_text(text, encoding="utf-8")
    (staged / "docs" / "data_license.txt").write_text(_normalised_text(_data_license(root)), encoding="utf-8")
    (staged / "large_files.yml").write_text(_large_files_yaml(url, sha256))
    if record:  # the weights' record, small: the configs read channels and ensemble members from it
        (staged / "models").mkdir()
        (staged / "models" / "model.json").write_text(zoo_json_text(record))
    for path in staged.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_zip(staged: Path, weights: Path, name: str, archive: Path) -> None:
    """``<name>/...`` plus ``<name>/models/model.pt``, members sorted and dated alike (reproducible)."""
    members = [(p, f"{name}/{p.relative_to(staged).as_posix()}") for p in sorted(staged.rglob("*")) if p.is_file()]
    members.append((weights, f"{name}/{WEIGHTS_FILE}"))
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, arcname in sorted(members, key=lambda m: m[1]):
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _training_record(weights: Path) -> dict[str, Any]:
    return dict(read_record(weights).raw)


def export_bundle(
    bundle: str | Path,
    output: str | Path,
    name: str | None = None,
    weights_url: str | None = None,
    overwrite: bool = False,
    device: str = "cpu",
) -> ExportResult:
    """Write a project bundle in the MONAI Model Zoo's form, checked with the zoo's rules first.

    Args:
        bundle: a bundle folder, or the name of one under ``bundles/`` (``unet``).
        output: a zoo-style ``models/`` folder (created if needed); its ``model_info.json``, if any, is
            read to refuse a version already released.
        name: the zoo bundle name (default :func:`zoo_bundle_name`).
        weights_url: where the weights will be downloaded from (``large_files.yml``'s ``url``); default
            the ``file://`` URL of the weights file written beside the folder, which works on this
            machine only: upload the file and export again with its public URL before submitting.
        overwrite: replace an earlier export of the same name and version.
        device: where the network checks run.

    Returns:
        What was written (:class:`ExportResult`).

    Raises:
        LGGInputError: the bundle has no trained weights or no measured metrics, a pin cannot be
            installed by the zoo, the name is not a zoo name, an output exists, or a zoo check fails.
            Nothing is written then.
    """
    from monai_lgg.bundle.record import trained_channels
    from monai_lgg.inference.loading import load_network, resolve_bundle

    root = resolve_bundle(bundle)
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise LGGInputError(root, _REFUSED_UNTRAINED.format(name=root.name))
    load_network(root, weights)  # refuses weights that do not fit the bundle's network, with weights_only=True
    meta_file = root / "configs" / "metadata.json"
    try:
        source_meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as err:
        raise LGGInputError(meta_file, f"cannot be read ({err})") from None
    image = source_meta.get("network_data_format", {}).get("inputs", {}).get("image", {})
    trained = trained_channels(weights)
    if "in_channels" in trained and trained["in_channels"] != image.get("num_channels"):
        raise LGGInputError(
            weights,
            f"was trained on {trained['in_channels']} channels but metadata.json describes {image.get('num_channels')}",
        )
    metrics = measured_eval_metrics(root)
    metadata = zoo_metadata(source_meta, metrics, meta_file)
    name = name or zoo_bundle_name(root)
    if not ZOO_NAME_PATTERN.match(name):
        raise LGGInputError(
            None, f"--name {name!r} is not a Model Zoo bundle name (a letter, then letters, digits, underscores)"
        )
    version = str(metadata["version"])
    output = Path(output)
    target = output / name
    weights_out = output / f"{name}_v{version}_model.pt"
    archive = output / f"{name}_v{version}.zip"
    if not overwrite:
        for path in (target, weights_out, archive):
            if path.exists():
                raise LGGInputError(path, "output already exists (pass --overwrite to replace it)")
    url = weights_url or weights_out.resolve().as_uri()
    sha256, size = _sha256(weights), weights.stat().st_size
    model_info = output / "model_info.json"
    with atomic_dir(target, overwrite=overwrite) as staged:
        _write_bundle(staged, root, metadata, metrics, _training_record(weights), url, sha256, size)
        with tempfile.TemporaryDirectory(prefix="monai-lgg-zoo-check-") as tmp:
            check = Path(tmp) / name
            shutil.copytree(staged, check)
            (check / "models").mkdir(exist_ok=True)
            # the local weights stand where large_files.yml puts them: MONAI's download then checks their hash
            shutil.copyfile(weights, check / WEIGHTS_FILE)
            try:
                checks = verify_zoo_bundle(check, mode="full", model_info=model_info, device=device)
            except ValueError as err:
                raise LGGInputError(target, f"the export would fail the Model Zoo's checks: {err}") from None
        with atomic_path(weights_out) as tmp_weights:
            shutil.copyfile(weights, tmp_weights)
        with atomic_path(archive) as tmp_zip:
            _write_zip(staged, weights, name, tmp_zip)
    target.chmod(0o755)
    return ExportResult(target, weights_out, archive, name, version, url, sha256, tuple(checks))

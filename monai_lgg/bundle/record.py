"""The trained-model record: the ``<checkpoint>.json`` that training writes beside the weights, and its one reader.

The record says how the network was trained (channels, geometry, patch size, normalisation, 2.5D context,
replaced constructor arguments, ensemble members), which patients trained and selected it (provenance, checked
against evaluated patients), and how its output becomes a mask (``postprocessing``: the threshold and component
filter chosen for it by cross-validation, which the shipped UNet's record holds and every other model falls back to,
see :func:`recipe_postprocessing`; ``review``: the ``needs_review`` threshold). ``inference.json`` and
``monai-lgg predict`` follow it, so a model is always preprocessed and post-processed as it was trained.

The record travels with downloaded weights, so it is read as data only: plain JSON, each value checked by its
accessor (a bad value falls back to the bundle's setting), and ``network_args`` refused unless it holds plain values
and, at most, one of :data:`monai_lgg.networks.registry.NETWORKS` as its ``_target_``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_lgg.bundle.settings import BUNDLES_DIR, GEOMETRIES, NORMALIZATIONS, THRESHOLD
from monai_lgg.errors import LGGInputError
from monai_lgg.io import write_json

__all__ = [
    "MAX_MEMBERS",
    "TrainedRecord",
    "sidecar_path",
    "read_record",
    "write_record",
    "trained_channels",
    "trained_setting",
    "trained_network_args",
    "trained_members",
    "SHIPPED_CHECKPOINT",
    "recipe_postprocessing",
    "trained_threshold",
    "trained_min_component_fraction",
]

MAX_MEMBERS = 64
"""The most networks a trained-model record may ask to build (the shipped UNet has 5)."""

# MONAI's config parser gives these meaning: "$" runs an expression, "@" refers to another key, "%" reads another file
_CONFIG_SYNTAX = ("$", "@", "%")


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.json``: the checkpoint's record (provenance, how it was trained, post-processing)."""
    return Path(checkpoint).with_suffix(".json")


def _number(value: object, low: float, high: float) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    return float(value) if ok else None


@dataclass(frozen=True)
class TrainedRecord:
    """A checkpoint's record with typed accessors; each is None where the record has no valid value.

    Attributes:
        path: the record file (it may not exist: then ``raw`` is empty).
        raw: the parsed JSON object (``{}`` when missing, unreadable or not an object).
    """

    path: Path
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int | None:
        return v if isinstance(v := self.raw.get("in_channels"), int) and not isinstance(v, bool) and v >= 1 else None

    @property
    def out_channels(self) -> int | None:
        return v if isinstance(v := self.raw.get("out_channels"), int) and not isinstance(v, bool) and v >= 1 else None

    @property
    def geometry(self) -> str | None:
        return self.raw.get("geometry") if self.raw.get("geometry") in GEOMETRIES else None

    @property
    def normalization(self) -> str | None:
        return self.raw.get("normalization") if self.raw.get("normalization") in NORMALIZATIONS else None

    @property
    def context_slices(self) -> int | None:
        value = self.raw.get("context_slices")
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    @property
    def spatial_size(self) -> tuple[int, int] | None:
        size = self.raw.get("spatial_size")
        ok = isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
        return tuple(size) if ok else None

    @property
    def review_threshold(self) -> float | None:
        """``review.threshold``: the ``review_entropy`` from which cases are flagged ``needs_review``."""
        review = self.raw.get("review")
        return _number(review.get("threshold"), 0.0, 1.0) if isinstance(review, dict) else None

    @property
    def threshold(self) -> float | None:
        """``postprocessing.threshold``: the probability threshold the model was validated or calibrated at."""
        post = self.raw.get("postprocessing")
        return _number(post.get("threshold"), 0.0, 1.0) if isinstance(post, dict) else None

    @property
    def min_component_fraction(self) -> float | None:
        """``postprocessing.min_component_fraction``: 3D components below this fraction of the largest are dropped."""
        post = self.raw.get("postprocessing")
        return _number(post.get("min_component_fraction"), 0.0, 1.0) if isinstance(post, dict) else None

    @property
    def members(self) -> int:
        """How many networks the checkpoint holds (1 without a valid value).

        Raises:
            LGGInputError: more than :data:`MAX_MEMBERS` (each member is a whole network built before loading).
        """
        value = self.raw.get("members", 1)
        if isinstance(value, int) and value > MAX_MEMBERS:
            raise LGGInputError(
                self.path, f"members is {value}: more than {MAX_MEMBERS} networks in one checkpoint is refused"
            )
        return value if isinstance(value, int) and value >= 1 else 1

    @property
    def network_args(self) -> dict:
        """The recorded ``--network_args``, checked to be plain data (see :func:`trained_network_args`)."""
        from monai_lgg.networks.registry import NETWORKS, canonical_network_name

        value = self.raw.get("network_args", {})
        if value in (None, {}):
            return {}
        if not isinstance(value, dict):
            raise LGGInputError(
                self.path, f"network_args must be a mapping of constructor arguments, got {value!r}"[:300]
            )
        args = dict(value)
        chosen = "_target_" in args
        target = args.pop("_target_", None)
        _plain_json(args, self.path, "")
        if not chosen:
            return args
        canonical = canonical_network_name(target)
        if canonical is None:
            known = ", ".join(sorted({name for name in NETWORKS if "." not in name}))
            raise LGGInputError(
                self.path,
                f"network_args names {str(target)[:80]!r} as _target_, not a registered network "
                f"class: refused (a sidecar is data; it may only choose one of {known})",
            )
        return {"_target_": canonical, **args}


def read_record(checkpoint: str | os.PathLike) -> TrainedRecord:
    """The record of ``checkpoint`` (empty when there is none, or it is unreadable or not a JSON object)."""
    path = sidecar_path(checkpoint)
    try:
        raw = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        raw = {}
    return TrainedRecord(path, raw if isinstance(raw, dict) else {})


def write_record(checkpoint: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write the record of ``checkpoint`` (through a temporary file, so a reader never sees half of it)."""
    path = sidecar_path(checkpoint)
    write_json(path, dict(record))
    return path


def _plain_json(value: object, sidecar: Path, where: str) -> None:
    """Refuse anything in recorded ``network_args`` that MONAI's config parser would interpret: a string starting with
    ``$``, ``@`` or ``%``, a key that is not a plain argument name (``_target_``, ``_mode_``, ``_requires_``...,
    or ``a#b``), and values that are not JSON scalars, lists or mappings."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not (isinstance(key, str) and key.isidentifier() and not key.startswith("_")):
                raise LGGInputError(
                    sidecar,
                    f"network_args{where} has the key {str(key)[:40]!r}, not an argument "
                    "name: refused (a trained-model record is data; only network_args._target_ may "
                    "name a registered network)",
                )
            _plain_json(item, sidecar, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _plain_json(item, sidecar, f"{where}[{index}]")
    elif isinstance(value, str):
        if value.startswith(_CONFIG_SYNTAX):
            raise LGGInputError(
                sidecar,
                f"network_args{where} holds {value[:40]!r}, an expression or reference: "
                "refused (a sidecar is data, not code; pass it with --network_args if you trust it)",
            )
    elif not (value is None or isinstance(value, (bool, int, float))):
        raise LGGInputError(sidecar, f"network_args{where} holds a {type(value).__name__}, not a JSON value")


_TYPED = (
    "in_channels",
    "out_channels",
    "geometry",
    "normalization",
    "context_slices",
    "spatial_size",
    "review_threshold",
    "threshold",
    "min_component_fraction",
)


def trained_channels(checkpoint: str | os.PathLike) -> dict[str, object]:
    """What training recorded in the checkpoint's record that inference must follow, as :class:`BundleInfo` fields.

    ``in_channels`` / ``out_channels``: a bundle trained with ``--in_channels 1 --out_channels K`` (grey
    images, K classes) keeps the LGG values in its ``inference.json``; ``geometry`` and ``spatial_size``: how
    slices reached the network; ``normalization`` and ``context_slices``: how their intensities were normalised
    and how many neighbour slices were stacked as channels; ``threshold`` and ``min_component_fraction``: its
    post-processing; ``network_args``: constructor arguments that replaced ``model.json``'s at training
    (``--network_args``), without which the weights do not fit. Absent or invalid values are left out (the
    bundle's values apply).
    """
    record = read_record(checkpoint)
    found: dict[str, object] = {key: value for key in _TYPED if (value := getattr(record, key)) is not None}
    if record.raw.get("network_args"):
        found["network_args"] = record.network_args  # plain values only, or a one-line refusal
    return found


def trained_setting(checkpoint: str | os.PathLike, key: str, default: object = None) -> object:
    """A setting training recorded in a checkpoint's record (``geometry``, ``spatial_size``...), or ``default`` when
    there is no record, no such key, or (for the keys :class:`TrainedRecord` types) an invalid value:
    ``inference.json`` and ``monai-lgg predict`` then preprocess as the network was trained."""
    record = read_record(checkpoint)
    if key in _TYPED and key in record.raw:
        return record.raw[key] if getattr(record, key) is not None else default
    return record.raw.get(key, default)


def trained_network_args(checkpoint: str | os.PathLike) -> dict:
    """The ``--network_args`` a checkpoint was trained with (its record's ``network_args``; ``{}`` without one),
    checked to be plain data.

    The record travels with downloaded weights, and these arguments go through MONAI's config parser, which would
    run an expression, follow a reference or instantiate any ``_target_``. So the values must be plain JSON
    (:func:`_plain_json`), and a ``_target_`` (the network class, when training replaced the bundle's) must be
    exactly one of the names in :data:`monai_lgg.networks.registry.NETWORKS`: it is looked up in that table and
    replaced by the registered class's own path, never imported or resolved from the record's text.

    Raises:
        LGGInputError: the recorded arguments are not a mapping, hold something other than plain values, or name
            a network that is not registered.
    """
    return read_record(checkpoint).network_args


def trained_members(checkpoint: str | os.PathLike) -> int:
    """How many networks a checkpoint holds: ``members`` of its record, 1 without one.

    The shipped UNet is the ensemble of its cross-validation's fold models (:class:`~monai_lgg.networks.ensemble.
    ProbabilityEnsemble`); a model trained by the user is one network.
    """
    return read_record(checkpoint).members


SHIPPED_CHECKPOINT = BUNDLES_DIR / "unet" / "models" / "model.pt"
"""The shipped UNet's weights; its record holds the recipe's mask rule (:func:`recipe_postprocessing`)."""


@functools.lru_cache(maxsize=1)
def recipe_postprocessing() -> tuple[float, float]:
    """The mask rule of the training recipe: ``(threshold, min_component_fraction)`` of the shipped UNet's record.

    Cross-validation of the recipe chose it (probability 0.4, the largest 3D component kept; docs/results) and the
    shipped record is its one copy. A model trained by the user has no rule of its own (training validates at
    :data:`~monai_lgg.bundle.settings.THRESHOLD` with every component, before any rule could be chosen), so its
    masks follow the recipe's, as the shipped model's do. Without the shipped record (a damaged installation):
    ``(THRESHOLD, 0.0)``, every component at the validation threshold.
    """
    shipped = read_record(SHIPPED_CHECKPOINT)
    threshold, fraction = shipped.threshold, shipped.min_component_fraction
    return (THRESHOLD if threshold is None else threshold, 0.0 if fraction is None else fraction)


def trained_threshold(checkpoint: str | os.PathLike) -> float:
    """The probability threshold of a checkpoint's masks: its record's ``postprocessing.threshold``, else the
    recipe's (:func:`recipe_postprocessing`)."""
    value = read_record(checkpoint).threshold
    return recipe_postprocessing()[0] if value is None else value


def trained_min_component_fraction(checkpoint: str | os.PathLike) -> float:
    """The component filter of a checkpoint's masks: its record's ``postprocessing.min_component_fraction``, else
    the recipe's (:func:`recipe_postprocessing`)."""
    value = read_record(checkpoint).min_component_fraction
    return recipe_postprocessing()[1] if value is None else value

"""The model's frame as (invertible) transforms: NIfTI volumes stored in any orientation, reoriented losslessly.

The bundles' configs load volumes with MONAI and segment them in the frame the networks were trained in; a volume
stored in another orientation (RAS, LPS, a sagittal or coronal array of an axial acquisition) would be sliced along
the wrong axis. :class:`ReorientToModeld` applies :func:`monai_lgg.imaging.orientation.plan_reorientation`, the
same plan ``monai-lgg predict`` uses (axis permutation and flips only; oblique or non-axial volumes refused with one
line naming the file), and records it, so ``Invertd`` (the bundles' postprocessing) maps every prediction back onto
the input's stored grid and affine.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TraceKeys, convert_to_tensor

from monai_lgg.imaging.orientation import Reorientation, plan_reorientation

__all__ = ["ReorientToModel", "ReorientToModeld"]


def _plan(image: MetaTensor):
    """The reorientation of a loaded channel-first volume (its affine and file name from its metadata)."""
    affine = np.asarray(image.affine.detach().cpu(), dtype=np.float64)
    return plan_reorientation(str(image.meta.get("filename_or_obj", "image")), affine, tuple(image.shape[1:]))


class ReorientToModel(InvertibleTransform):
    """Reorient a channel-first volume ``(C, ...spatial)`` loaded from NIfTI to the model's frame, invertibly.

    The output's affine is the reoriented one (same world coordinates); ``inverse`` maps an array in the model's
    frame (e.g. a prediction ``(K, H, W, D)``) back onto the stored grid and restores the stored affine.

    Raises:
        LGGInputError: naming the file, for volumes whose slices are not close to axial
            (:func:`~monai_lgg.imaging.orientation.plan_reorientation`).
    """

    backend = [convert_to_tensor.__name__]

    def __call__(self, img: torch.Tensor, plan=None) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=True)
        if not isinstance(img, MetaTensor):
            raise TypeError("ReorientToModel needs a MetaTensor with the volume's affine (load it with LoadImaged)")
        plan = plan or _plan(img)
        stored_affine = np.asarray(img.affine.detach().cpu(), dtype=np.float64)
        array = img.as_tensor()
        if not plan.identity:
            array = torch.from_numpy(plan.array_to_model(array.detach().cpu().numpy(), first_axis=1))
        out = MetaTensor(array, meta=img.meta, applied_operations=list(img.applied_operations))
        out.affine = torch.as_tensor(plan.model_affine, dtype=torch.float64)
        self.push_transform(
            out,
            orig_size=plan.input_shape,
            extra_info={"stored": plan.stored.tolist(), "stored_affine": stored_affine.tolist()},
        )
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:

        transform = self.pop_transform(data)
        info = transform[TraceKeys.EXTRA_INFO]
        stored_affine = np.asarray(info["stored_affine"], dtype=np.float64)
        plan = Reorientation(
            np.asarray(info["stored"]), tuple(int(s) for s in transform[TraceKeys.ORIG_SIZE]), stored_affine
        )
        plain = data.as_tensor() if isinstance(data, MetaTensor) else torch.as_tensor(data)
        if not plan.identity:
            plain = torch.from_numpy(plan.array_to_input(plain.detach().cpu().numpy(), first_axis=1)).to(plain.device)
        if not isinstance(data, MetaTensor):
            return plain
        out = MetaTensor(plain, meta=data.meta, applied_operations=list(data.applied_operations))
        out.affine = torch.as_tensor(stored_affine, dtype=torch.float64)
        return out


class ReorientToModeld(MapTransform, InvertibleTransform):
    """Dictionary :class:`ReorientToModel`: every key reoriented with the plan of ``reference_key`` (the image).

    Args:
        keys: keys of channel-first volumes on one grid (image and label).
        reference_key: the key whose affine and file name give the plan (default: the first key).
        allow_missing_keys: skip absent keys (e.g. no label at inference).
    """

    def __init__(
        self, keys: KeysCollection, reference_key: str | None = None, allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.reference_key = reference_key or self.keys[0]
        self.reorient = ReorientToModel()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        plan = _plan(convert_to_tensor(d[self.reference_key], track_meta=True))
        for key in self.key_iterator(d):
            d[key] = self.reorient(d[key], plan)
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.reorient.inverse(d[key])
        return d

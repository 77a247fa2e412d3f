"""Which segmentations should a person check? The ``needs_review`` flag of ``monai-lgg predict``.

An ensemble's members are the cross-validation's fold models, so every member is a model that never saw a new
patient, exactly as each fold model never saw its test patients. The **review entropy** of a case is therefore
computed per member and then averaged, and the threshold measured on fold models over the cross-validation
applies to it unchanged:

* for each member ``m``: its probability ``p_m`` (mean over the flips of test-time augmentation), its own mask
  (the bundle's threshold and post-processing) and ``e_m``, the mean predictive entropy ``H[p_m]`` (bits,
  :func:`~monai_lgg.inference.uncertainty.entropy`) over that mask's voxels;
* ``review_entropy``: the mean of ``e_m`` over the members that predict tumour.

The ensemble's own entropy (``predict --uncertainty``) is not used for the flag: averaging five members widens the
band of middling probabilities, so its values run higher than one member's and no patient the members trained on
can calibrate it honestly.

``needs_review`` is ``yes`` when ``review_entropy`` reaches the threshold, or when the members disagree on whether
there is a tumour at all (some predict one, some do not); ``no`` otherwise, including when no member predicts a
tumour (then ``review_entropy`` is blank). The threshold is chosen by cross-validation
(:mod:`monai_lgg.studies.review_calibration`, ``docs/results/review``) to flag patients whose Dice is likely below 0.7.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from monai_lgg.inference.uncertainty import entropy

__all__ = ["REVIEW_COLUMNS", "ReviewScore", "review_score", "review_cells"]

REVIEW_COLUMNS = ("review_entropy", "needs_review")
"""Columns an ensemble's ``tumour_summary.csv`` gains by default."""


class ReviewScore(NamedTuple):
    """The review summary of one case.

    Attributes:
        entropy: ``review_entropy`` (bits, ``[0, 1]``), or None when no member predicts tumour.
        members: how many members were scored.
        members_with_tumour: how many of them predict a tumour.
    """

    entropy: float | None
    members: int
    members_with_tumour: int

    @property
    def members_disagree(self) -> bool:
        """Some members predict a tumour and others do not."""
        return 0 < self.members_with_tumour < self.members

    def needs_review(self, threshold: float) -> bool:
        """Flag the case for a person to check (see the module docstring)."""
        return self.members_disagree or (self.entropy is not None and self.entropy >= threshold)


def review_score(
    member_probabilities: Sequence[torch.Tensor], mask: Callable[[torch.Tensor], torch.Tensor]
) -> ReviewScore:
    """Score a case from its members' probabilities (binary, the input's grid).

    Args:
        member_probabilities: each member's tumour probability, e.g. from
            :meth:`~monai_lgg.inference.predictor.Predictor.member_probabilities`.
        mask: the bundle's mask rule (threshold and post-processing), e.g. ``Predictor.mask``.

    Example::

        >>> rule = lambda p: (p >= 0.5).to(torch.uint8)
        >>> review_score([torch.tensor([0.9, 0.6, 0.1]), torch.tensor([0.99, 0.2, 0.0])], rule).members_with_tumour
        2
    """
    values = []
    for probability in member_probabilities:
        tumour = mask(probability) > 0
        if bool(tumour.any()):
            values.append(float(entropy(probability)[tumour].mean()))
    mean = sum(values) / len(values) if values else None
    return ReviewScore(mean, len(member_probabilities), len(values))


def review_cells(score: ReviewScore, threshold: float) -> dict[str, str | float]:
    """The :data:`REVIEW_COLUMNS` cells of a summary row (a blank entropy when no member predicts tumour)."""
    return {
        "review_entropy": "" if score.entropy is None else round(score.entropy, 5),
        "needs_review": "yes" if score.needs_review(threshold) else "no",
    }

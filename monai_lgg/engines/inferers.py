"""Inferers of the bundles' validation, evaluation and inference: test-time flip averaging."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["FlipTTAInferer"]


class FlipTTAInferer(Inferer):
    """Average the sigmoid outputs of another inferer over the input and its left-right mirror.

    The mirror is the flip of the training augmentation (columns, axis 3 of ``(B, C, H, W[, D])``). The
    mean probability is returned as a logit, so the postprocessing (sigmoid, threshold) is the same with
    or without test-time augmentation. Binary (one-channel) outputs only; ``flip=False`` passes through.

    Args:
        inferer: the wrapped inferer (e.g. ``SliceInferer`` for volumes).
        flip: average with the mirrored input.
    """

    def __init__(self, inferer: Inferer, flip: bool = True) -> None:
        super().__init__()
        self.inferer, self.flip = inferer, bool(flip)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        logits = self.inferer(inputs, network, *args, **kwargs)
        if not self.flip or logits.shape[1] != 1:
            return logits
        mirrored = self.inferer(inputs.flip(3), network, *args, **kwargs).flip(3)
        probability = (torch.sigmoid(logits.float()) + torch.sigmoid(mirrored.float())) / 2
        return torch.logit(probability, eps=1e-6)

"""An ensemble of binary segmentation networks as one module: the mean probability, returned as a logit."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["ProbabilityEnsemble"]


class ProbabilityEnsemble(torch.nn.Module):
    """Average the sigmoid outputs of ``members`` and return the mean as a logit.

    The shipped LGG model is the ensemble of the cross-validation's fold models (as nnU-Net ships its
    5-fold ensemble): one module, one state dict (``members.<i>.<parameter>``), so ``inference.json``,
    MONAI Label, TorchScript export and ``monai-lgg predict`` load it like a single network. Returning a
    logit keeps the postprocessing (sigmoid, threshold) unchanged.

    Args:
        members: networks mapping ``(N, C, H, W)`` to one-channel logits ``(N, 1, H, W)``.

    Example::

        >>> nets = [torch.nn.Conv2d(3, 1, 1) for _ in range(3)]
        >>> ProbabilityEnsemble(nets)(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for member in self.members:
            total = total + torch.sigmoid(member(x).float())
        return torch.logit(total / len(self.members), eps=1e-6)

"""An ensemble of binary segmentation networks as one module: the mean probability, returned as a logit."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["ProbabilityEnsemble", "EnsembleWithMembers"]


class ProbabilityEnsemble(torch.nn.Module):
    """Average the sigmoid outputs of ``members`` and return the mean as a logit.

    The shipped LGG model is the ensemble of the cross-validation's fold models (as nnU-Net ships its
    5-fold ensemble): one module, one state dict (``members.<i>.<parameter>``), so ``inference.json``,
    MONAI Label, TorchScript export and ``monai-lgg predict`` load it like a single network. Returning a
    logit keeps the postprocessing (sigmoid, threshold) unchanged.

    A caller that needs each member's output too (``monai-lgg predict --uncertainty`` measures how much the
    members disagree) runs :class:`EnsembleWithMembers`, which averages with the same :meth:`combine`.

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

    def combine(self, probabilities: list[torch.Tensor]) -> torch.Tensor:
        """The ensemble's logit from its members' sigmoid probabilities (float32, one per member, in order)."""
        if len(probabilities) != len(self.members):
            raise ValueError("combine needs one probability map per member")
        total = torch.zeros((), dtype=torch.float32, device=probabilities[0].device)
        for probability in probabilities:
            total = total + probability
        return torch.logit(total / len(probabilities), eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities: list[torch.Tensor] = []
        for member in self.members:
            probabilities.append(torch.sigmoid(member(x).float()))
        return self.combine(probabilities)


class EnsembleWithMembers(torch.nn.Module):
    """A :class:`ProbabilityEnsemble`'s logit followed by each member's logit, as channels ``(N, 1 + M, H, W)``.

    Channel 0 is exactly the ensemble's output (same members, same :meth:`ProbabilityEnsemble.combine`), so an
    inferer run on this module (a sliding window blends each channel alike) gives the ensemble's prediction and
    its members' in one pass, without running the members twice.

    Args:
        ensemble: the ensemble to open up.

    Example::

        >>> ensemble = ProbabilityEnsemble([torch.nn.Conv2d(3, 1, 1) for _ in range(2)])
        >>> x = torch.rand(1, 3, 8, 8)
        >>> out = EnsembleWithMembers(ensemble)(x)
        >>> out.shape, torch.equal(out[:, :1], ensemble(x))
        (torch.Size([1, 3, 8, 8]), True)
    """

    def __init__(self, ensemble: ProbabilityEnsemble) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [member(x).float() for member in self.ensemble.members]
        combined = self.ensemble.combine([torch.sigmoid(logit) for logit in logits])
        return torch.cat([combined, *logits], dim=1)

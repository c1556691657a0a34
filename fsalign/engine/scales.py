"""The scales of the path score (eq. 6): the one home of α, β, the log prior and γ.

Dimension symbols used in this module:
  B: utterances in a batch
  T: frames (the longest utterance)
  C: score-matrix columns

The path score every function of fsalign uses (DESIGN.md): the sum over frames of
``α·log_probs[t, y_t] − β·log_prior[y_t]`` plus ``γ·`` the transition log-prob of every
move between consecutive frames. :meth:`Scales.dense` forms the first two terms (the
dense score matrix); the third lives on the graph arcs and is scaled by the lattice code.
With α = 1, β = 0, γ = 0 and the CTC topology the full sum is the CTC loss (eq. 5).
"""
from dataclasses import dataclass, replace
from typing import Optional

import torch

from fsalign.errors import FsalignError
from fsalign.util import is_finite_number

__all__ = ["Scales"]


@dataclass(frozen=True)
class Scales:
    """α, β (with the log prior it multiplies) and γ of eq. (6).

    Attributes:
      posterior_scale: α, multiplies the log posteriors.
      prior_scale: β, multiplies the log prior that is subtracted.
      log_prior: Tensor of shape (C,) or (B, C), or None (then β must be 0 when the scales
        are applied; a criterion fills it in per batch). Gradients flow into it if it
        requires grad.
      transition_scale: γ, multiplies the topology's transition log-probs.

    Raises:
      FsalignError: a scale that is not a finite number, or a log prior that is not a tensor.
    """

    posterior_scale: float = 1.0
    prior_scale: float = 0.0
    log_prior: Optional[torch.Tensor] = None
    transition_scale: float = 1.0

    def __post_init__(self):
        for name in ("posterior_scale", "prior_scale", "transition_scale"):
            value = getattr(self, name)
            if not is_finite_number(value):
                raise FsalignError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.log_prior is not None and not isinstance(self.log_prior, torch.Tensor):
            raise FsalignError(f"log_prior must be a torch.Tensor, got {type(self.log_prior).__name__}")

    def replace(self, **changes) -> "Scales":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)

    def detach(self) -> "Scales":
        """The same scales with the log prior detached (for alignment, which needs no gradient)."""
        return self if self.log_prior is None else self.replace(log_prior=self.log_prior.detach())

    def dense(self, log_probs: torch.Tensor) -> torch.Tensor:
        """``α·log_probs − β·log_prior``, float32, differentiable in both.

        Args:
          log_probs: Tensor of shape (B, T, C).

        Returns:
          Tensor of shape (B, T, C), float32.

        Raises:
          FsalignError: β != 0 without a log prior, or a log prior of the wrong shape or with
            NaN/inf entries.
        """
        B, T, C = log_probs.shape
        scores = log_probs.float()
        if self.posterior_scale != 1.0:
            scores = scores * self.posterior_scale
        if self.log_prior is None:
            if self.prior_scale != 0.0:
                raise FsalignError(f"prior_scale={self.prior_scale} needs a log_prior of shape (C,) or (B, C)")
            return scores
        if tuple(self.log_prior.shape) not in ((C,), (B, C)):
            raise FsalignError(f"log_prior must have shape ({C},) or ({B}, {C}), got {tuple(self.log_prior.shape)}")
        if not bool(torch.isfinite(self.log_prior).all()):
            raise FsalignError("log_prior contains NaN or inf (a zero prior probability?)")
        if self.prior_scale == 0.0:
            return scores
        prior = self.log_prior.to(scores.device, torch.float32)
        prior = prior[None, None, :] if prior.ndim == 1 else prior[:, None, :]
        return scores - self.prior_scale * prior

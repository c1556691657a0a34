"""The garbage column of transcript-mismatch score matrices (:mod:`fsalign.engine.mismatch`).

Dimension symbols legend:
  B: batch size (number of utterances)
  T: number of frames (padded length of the batch)
  C: columns of the model's output (the base topology's labels); the garbage column is C

A mismatch graph's garbage state emits column C, which the model does not have: the scorer
appends it to the (B, T, C) log posteriors, computed from each frame's posteriors
(:data:`~fsalign.engine.mismatch.GARBAGE_SCORES`):

* ``"max"``: the best token column, ``max_{c token} log p(c | t)`` (a filler model: garbage
  scores as well as the best unit the model hears, so it wins only where the transcript's units
  do not fit, by more than the garbage penalty);
* ``"sum"``: the log of the probability of any token, ``log Σ_{c token} p(c | t)`` (never below
  ``"max"``);
* ``"zero"``: 0, the ``<star>`` column of torchaudio's MMS forced aligner (probability 1).

Token columns are those of the base topology that are not blank / silence
(``non_token_labels``): on silence the garbage column is low and silence stays silence.
"""
from typing import Sequence, Tuple

import torch

from fsalign.engine.mismatch import GARBAGE_SCORES
from fsalign.engine.scales import Scales
from fsalign.errors import FsalignError

__all__ = ["garbage_column", "with_garbage_column"]


def garbage_column(log_probs: torch.Tensor, non_token_labels: Sequence[int], kind: str = "max") -> torch.Tensor:
    """The garbage score of every frame.

    Args:
      log_probs: Tensor of shape (B, T, C), log posteriors.
      non_token_labels: the blank / silence columns (left out of ``"max"`` and ``"sum"``).
      kind: one of :data:`~fsalign.engine.mismatch.GARBAGE_SCORES` (module docstring).

    Returns:
      Tensor of shape (B, T, 1), the dtype of ``log_probs``.

    Raises:
      FsalignError: an unknown ``kind``, or no token column left.
    """
    if kind not in GARBAGE_SCORES:
        raise FsalignError(f"garbage score must be one of {GARBAGE_SCORES}, got {kind!r}")
    if kind == "zero":
        return log_probs.new_zeros(log_probs.shape[:-1] + (1,))
    C = log_probs.shape[-1]
    keep = torch.ones(C, dtype=torch.bool, device=log_probs.device)
    keep[list(non_token_labels)] = False
    if not bool(keep.any()):
        raise FsalignError(f"the garbage column needs a token column, but all {C} columns are blank / silence")
    tokens = log_probs[..., keep]
    if kind == "max":
        return tokens.max(dim=-1, keepdim=True).values
    return tokens.logsumexp(dim=-1, keepdim=True)


def with_garbage_column(log_probs: torch.Tensor, scales: Scales, non_token_labels: Sequence[int],
                        kind: str = "max") -> Tuple[torch.Tensor, Scales]:
    """The log posteriors with the garbage column appended, and scales whose log prior has it too.

    The garbage column gets log prior 0 (β leaves it as it is).

    Args:
      log_probs: Tensor of shape (B, T, C).
      scales: the path-score scales; a log prior of shape (C,) or (B, C).
      non_token_labels: the base topology's blank / silence columns.
      kind: as :func:`garbage_column`.

    Returns:
      ``(Tensor of shape (B, T, C + 1), Scales with a log prior of shape (C + 1,) or (B, C + 1))``.
    """
    scores = torch.cat([log_probs, garbage_column(log_probs, non_token_labels, kind)], dim=-1)
    prior = scales.log_prior
    if prior is not None and prior.shape[-1] == log_probs.shape[-1]:
        scales = scales.replace(log_prior=torch.cat([prior, prior.new_zeros(prior.shape[:-1] + (1,))], dim=-1))
    return scores, scales

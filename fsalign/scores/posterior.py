"""Posterior score matrices: blank separation (eq. 15-17) and the blank penalty (Table 14).

Dimension symbols legend:
  B: batch size (number of sequences)
  T: number of frames (padded length of the batch)
  C: number of score-matrix columns = alignment labels, blank/silence included
"""
import torch

from fsalign.util import check_blank

__all__ = ["blank_separated_log_probs", "apply_blank_penalty"]


def blank_separated_log_probs(logits: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Log-probabilities of the blank-separated CTC output (eq. 15-17, 29).

    The blank gets its own sigmoid and the other labels share a softmax::

        log p'(eps) = log sigmoid(z_eps)
        log p'(y)   = log sigmoid(-z_eps) + log_softmax_{A}(z_A)_y     (y != eps)

    The result is a normalised distribution over all ``C`` columns
    (``logsumexp`` over the last axis is 0), with blank in column ``blank``, so
    it can be used wherever ``log_softmax(logits)`` is.

    Args:
      logits: Tensor of shape (..., C), typically (B, T, C), with C >= 2.
      blank: column of the blank logit (any index; negative counts from the end).

    Returns:
      Tensor of the same shape and dtype as ``logits``.
    """
    num_labels = logits.shape[-1]
    if num_labels < 2:
        raise ValueError(f"blank separation needs at least 2 columns, got logits of shape {tuple(logits.shape)}")
    blank = check_blank(blank, num_labels)
    z_blank = logits[..., blank : blank + 1]
    is_blank = torch.zeros(num_labels, dtype=torch.bool, device=logits.device)
    is_blank[blank] = True
    # Softmax over the non-blank columns: exclude the blank column with -inf.
    # Its softmax weight is exactly 0, so neither the value nor the gradient sees it.
    label_log_probs = logits.masked_fill(is_blank, float("-inf")).log_softmax(dim=-1)
    label_log_probs = label_log_probs + torch.nn.functional.logsigmoid(-z_blank)
    return torch.where(is_blank, torch.nn.functional.logsigmoid(z_blank), label_log_probs)


def apply_blank_penalty(scores: torch.Tensor, blank: int, penalty: float) -> torch.Tensor:
    """Adds ``penalty`` to the blank column and renormalises ("blank logit shift", Table 14).

    Acts on logits or on log-probabilities alike: ``log_softmax`` ignores a
    per-frame constant, so ``log_softmax(log_softmax(z) + penalty * e_blank)``
    equals ``log_softmax(z + penalty * e_blank)``. On blank-separated
    log-probabilities (eq. 29) it equals shifting the sigmoid's logit:
    renormalising gives p'(eps) = sigmoid(z_eps + penalty) and keeps p_A. A
    negative ``penalty`` (e.g. -10 as in Table 14) makes blank less likely.

    Args:
      scores: Tensor of shape (B, T, C): logits or log-probabilities.
      blank: blank/silence column.
      penalty: constant added to the blank column (in log space).

    Returns:
      Tensor of shape (B, T, C): normalised log-probabilities.
    """
    blank = check_blank(blank, scores.shape[-1])
    shift = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
    shift[blank] = penalty
    return (scores + shift).log_softmax(dim=-1)

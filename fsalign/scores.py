"""Dense score matrices: blank separation, priors, blank penalty and scales.

Everything downstream (full-sum, Viterbi, soft alignment) consumes a dense
matrix of per-frame label scores; this module builds those matrices.

Dimension symbols legend:
  B: batch size (number of sequences)
  T: number of frames (padded length of the batch)
  C: number of score-matrix columns = alignment labels, blank/silence included
"""
from typing import Optional

import torch

__all__ = ["blank_separated_log_probs", "valid_frame_mask"]


def valid_frame_mask(lengths: torch.Tensor, num_frames: int, batch_size: Optional[int] = None) -> torch.Tensor:
    """Boolean mask of the valid (non-padding) frames.

    Args:
      lengths: Tensor of shape (B,), integer number of valid frames per sequence.
      num_frames: padded length T.
      batch_size: expected B, checked when given.

    Returns:
      Tensor of shape (B, T), dtype bool, on the device of ``lengths``.
    """
    if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be a 1-D integer tensor, got dtype {lengths.dtype} shape {tuple(lengths.shape)}")
    if batch_size is not None and lengths.shape[0] != batch_size:
        raise ValueError(f"lengths must have {batch_size} entries (one per sequence), got {lengths.shape[0]}")
    if lengths.numel() > 0 and (int(lengths.min()) < 0 or int(lengths.max()) > num_frames):
        raise ValueError(
            f"lengths must be in [0, {num_frames}] (the padded length), got min {int(lengths.min())} "
            f"max {int(lengths.max())}"
        )
    return torch.arange(num_frames, device=lengths.device) < lengths[:, None]


def _check_blank(blank: int, num_labels: int) -> int:
    """Returns ``blank`` as a non-negative column index, or raises ValueError."""
    if not -num_labels <= blank < num_labels:
        raise ValueError(f"blank index must be in [{-num_labels}, {num_labels}), got {blank}")
    return blank % num_labels


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
    blank = _check_blank(blank, num_labels)
    z_blank = logits[..., blank : blank + 1]
    is_blank = torch.zeros(num_labels, dtype=torch.bool, device=logits.device)
    is_blank[blank] = True
    # Softmax over the non-blank columns: exclude the blank column with -inf.
    # Its softmax weight is exactly 0, so neither the value nor the gradient sees it.
    label_log_probs = logits.masked_fill(is_blank, float("-inf")).log_softmax(dim=-1)
    label_log_probs = label_log_probs + torch.nn.functional.logsigmoid(-z_blank)
    return torch.where(is_blank, torch.nn.functional.logsigmoid(z_blank), label_log_probs)

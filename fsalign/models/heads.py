"""CTC output heads: a full softmax and the blank-separated head (sec. 4, App. A.6).

Both heads map encoder states to logits with one ``nn.Linear`` and share one
interface: ``logits`` (forward), ``log_probs``, ``greedy_labels``,
``greedy_with_probs`` and ``framewise_ce``. :class:`BlankSeparatedHead`
implements the fast paths of appendix A.6: it computes the blank logit first
(one row of the weight matrix) and the label logits only for the frames that
need them; the results equal the full computation (values and gradients).

Dimension symbols legend:
  B: batch size
  T: number of frames (padded)
  D: model dimension (``d_model``)
  C: number of output columns (alignment labels, blank included)
  N: number of frames selected for the label softmax
"""
from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from fsalign.results.metrics import check_ref_labels, framewise_nll
from fsalign.scores.posterior import blank_separated_log_probs
from fsalign.util import check_blank, valid_frame_mask

__all__ = ["SoftmaxHead", "BlankSeparatedHead", "PAD_LABEL"]

PAD_LABEL = -1
"""Label that the greedy functions put on padding frames."""


def _check_inputs(h: torch.Tensor, lengths: torch.Tensor, d_model: int) -> torch.Tensor:
    if h.dim() != 3 or h.shape[-1] != d_model:
        raise ValueError(f"h must be a tensor of shape (B, T, {d_model}), got {tuple(h.shape)}")
    return valid_frame_mask(lengths.to(h.device), h.shape[1], batch_size=h.shape[0])


class SoftmaxHead(nn.Module):
    """Linear layer to C logits and a full softmax (eq. 3-4).

    Args:
      d_model: input dimension D.
      num_labels: number of output columns C (blank/silence included).
    """

    def __init__(self, d_model: int, num_labels: int):
        super().__init__()
        self.d_model = d_model
        self.num_labels = num_labels
        self.linear = nn.Linear(d_model, num_labels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Logits z (eq. 3).

        Args:
          h: Tensor of shape (B, T, D).

        Returns:
          Tensor of shape (B, T, C).
        """
        return self.linear(h)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """Normalised log-probabilities, Tensor of shape (B, T, C), from ``h`` of shape (B, T, D)."""
        return self.forward(h).log_softmax(dim=-1)

    def greedy_labels(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Best label per frame (argmax of the logits).

        Args:
          h: Tensor of shape (B, T, D).
          lengths: Tensor of shape (B,), valid frames per sequence.

        Returns:
          LongTensor of shape (B, T); padding frames hold ``PAD_LABEL``.
        """
        mask = _check_inputs(h, lengths, self.d_model)
        return self.forward(h).argmax(dim=-1).masked_fill(~mask, PAD_LABEL)

    def greedy_with_probs(self, h: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Best label per frame and its probability.

        Args:
          h: Tensor of shape (B, T, D).
          lengths: Tensor of shape (B,).

        Returns:
          (labels, probs): LongTensor of shape (B, T) (``PAD_LABEL`` on padding)
          and Tensor of shape (B, T) with p(label | h_t) (0 on padding).
        """
        mask = _check_inputs(h, lengths, self.d_model)
        best_log_prob, labels = self.log_probs(h).max(dim=-1)
        return labels.masked_fill(~mask, PAD_LABEL), best_log_prob.exp().masked_fill(~mask, 0.0)

    def framewise_ce(self, h: torch.Tensor, lengths: torch.Tensor, ref_labels: torch.Tensor) -> torch.Tensor:
        """Framewise cross entropy w.r.t. a reference alignment (eq. 12), summed per sequence.

        Args:
          h: Tensor of shape (B, T, D).
          lengths: Tensor of shape (B,).
          ref_labels: LongTensor of shape (B, T), reference label per frame
            (values on padding frames are ignored).

        Returns:
          Tensor of shape (B,): -sum_t log p(ref_t | h_t) over valid frames.
        """
        _check_inputs(h, lengths, self.d_model)
        return framewise_nll(self.log_probs(h), lengths, ref_labels)


class BlankSeparatedHead(SoftmaxHead):
    """Linear layer to C logits with a sigmoid for blank and a softmax over the rest (eq. 15-17).

    Row ``blank`` of the linear layer gives the blank logit z_eps; the other rows
    give the label logits z_A. ``log_probs`` is :func:`fsalign.scores.priors.blank_separated_log_probs`.

    Args:
      d_model: input dimension D.
      num_labels: number of output columns C (blank included), C >= 2.
      blank: column of blank.
    """

    def __init__(self, d_model: int, num_labels: int, blank: int = 0):
        if num_labels < 2:
            raise ValueError(f"BlankSeparatedHead needs num_labels >= 2, got {num_labels}")
        super().__init__(d_model, num_labels)
        self.blank = check_blank(blank, num_labels)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """Blank-separated log-probabilities (eq. 29), Tensor of shape (B, T, C)."""
        return blank_separated_log_probs(self.forward(h), blank=self.blank)

    def blank_logit(self, h: torch.Tensor) -> torch.Tensor:
        """z_eps computed alone (a one-row matmul). Tensor of shape (B, T) from ``h`` (B, T, D)."""
        row = slice(self.blank, self.blank + 1)
        return F.linear(h, self.linear.weight[row], self.linear.bias[row]).squeeze(-1)

    def _label_log_probs(self, h_sel: torch.Tensor) -> torch.Tensor:
        """Log p_A (eq. 17) of the selected frames, blank column -inf. (N, D) -> (N, C)."""
        logits = self.linear(h_sel)
        logits[:, self.blank] = float("-inf")  # in place on a fresh tensor: O(N), not a copy
        return logits.log_softmax(dim=-1)  # torch's fused kernel; much faster on CPU than logsumexp

    def greedy_with_probs(self, h: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Best label per frame and its probability, computing label logits only where p(eps) <= 0.5.

        A frame with p(eps) > 0.5 is blank (the labels share the remaining
        mass < 0.5). For the other frames the best label (1 - p(eps)) max p_A is
        compared with p(eps). Equals the argmax of ``log_probs`` (ties aside).

        Args:
          h: Tensor of shape (B, T, D).
          lengths: Tensor of shape (B,).

        Returns:
          (labels, probs): LongTensor of shape (B, T) (``PAD_LABEL`` on padding)
          and Tensor of shape (B, T) with p'(label | h_t) (0 on padding).
        """
        return self._greedy(h, lengths, with_probs=True)

    def greedy_labels(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Best label per frame, computing label logits only where p(eps) <= 0.5.

        Args:
          h: Tensor of shape (B, T, D).
          lengths: Tensor of shape (B,).

        Returns:
          LongTensor of shape (B, T); padding frames hold ``PAD_LABEL``.
        """
        return self._greedy(h, lengths, with_probs=False)[0]

    @torch.no_grad()
    def _greedy(self, h: torch.Tensor, lengths: torch.Tensor, with_probs: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        mask = _check_inputs(h, lengths, self.d_model)
        z_blank = self.blank_logit(h)
        labels = torch.full_like(mask, PAD_LABEL, dtype=torch.long).masked_fill(mask, self.blank)
        best_log_prob = F.logsigmoid(z_blank)
        undecided = mask & (z_blank <= 0)  # p(eps) <= 0.5: a label may win
        best_label, arg = self._label_log_probs(h[undecided]).max(dim=-1)
        label_log_prob = F.logsigmoid(-z_blank[undecided]) + best_label
        blank_log_prob = best_log_prob[undecided]
        # torch.argmax returns the first maximum: mimic that on exact ties.
        label_wins = (label_log_prob > blank_log_prob) | ((label_log_prob == blank_log_prob) & (arg < self.blank))
        labels[undecided] = torch.where(label_wins, arg, labels[undecided])
        if not with_probs:
            return labels, best_log_prob
        best_log_prob[undecided] = torch.maximum(label_log_prob, blank_log_prob)
        return labels, best_log_prob.exp().masked_fill(~mask, 0.0)

    def framewise_ce(self, h: torch.Tensor, lengths: torch.Tensor, ref_labels: torch.Tensor) -> torch.Tensor:
        """Framewise cross entropy (eq. 18), label logits only on the reference's non-blank frames.

        Blank frames cost -log sigmoid(z_eps) (one-row matmul); a non-blank frame
        with reference y costs -log sigmoid(-z_eps) - log_softmax_A(z_A)_y, with
        z_A computed only for those frames. Value and gradients equal those of
        ``-log_probs(h)`` gathered at the reference.

        Args:
          h: Tensor of shape (B, T, D).
          lengths: Tensor of shape (B,).
          ref_labels: LongTensor of shape (B, T) (values on padding ignored).

        Returns:
          Tensor of shape (B,): summed framewise CE per sequence.
        """
        mask = _check_inputs(h, lengths, self.d_model)
        ref_labels = check_ref_labels(ref_labels, mask, self.num_labels)
        z_blank = self.blank_logit(h)
        ref_blank = mask & (ref_labels == self.blank)
        ref_label = mask & (ref_labels != self.blank)
        blank_nll = -torch.where(ref_blank, F.logsigmoid(z_blank), torch.zeros_like(z_blank)).sum(dim=1)
        targets = ref_labels[ref_label].unsqueeze(-1)
        label_log_probs = self._label_log_probs(h[ref_label]).gather(-1, targets).squeeze(-1)
        label_ll = F.logsigmoid(-z_blank[ref_label]) + label_log_probs
        seq_index = torch.arange(h.shape[0], device=h.device).unsqueeze(1).expand_as(ref_label)[ref_label]
        return blank_nll.index_add(0, seq_index, -label_ll)

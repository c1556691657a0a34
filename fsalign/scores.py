"""Dense score matrices: blank separation, priors, blank penalty and scales.

Everything downstream (full-sum, Viterbi, soft alignment) consumes a dense
matrix of per-frame label scores; this module builds those matrices:

* ``blank_separated_log_probs``: sigmoid blank + softmax over the labels (eq. 15-17).
* priors p(y) for eq. (6), all returned as log priors of shape (C,) or (B, C)
  to pass as ``full_sum_loss(..., log_prior=..., prior_scale=beta)``: static
  from a reference alignment or from transcriptions, the posterior average of
  the sequence or of the mini-batch (with or without stop-grad), a running
  average across steps, and a corpus average (Tables 8, 10, 14; A.1).
* ``apply_blank_penalty`` (Table 14). The scales of eq. (6) are applied by
  ``fsalign.full_sum_loss`` / ``viterbi_align`` themselves.

Dimension symbols legend:
  B: batch size (number of sequences)
  T: number of frames (padded length of the batch)
  C: number of score-matrix columns = alignment labels, blank/silence included
"""
import math
from typing import Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "blank_separated_log_probs",
    "valid_frame_mask",
    "apply_blank_penalty",
    "sequence_log_prior",
    "batch_log_prior",
    "prior_from_alignment",
    "prior_from_transcripts",
    "RunningPrior",
    "CorpusPrior",
    "estimate_corpus_prior",
]


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
        raise ValueError(
            f"lengths must be a 1-D integer tensor, got dtype {lengths.dtype} shape {tuple(lengths.shape)}"
        )
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
    blank = _check_blank(blank, scores.shape[-1])
    shift = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
    shift[blank] = penalty
    return (scores + shift).log_softmax(dim=-1)


def _log_sum_frames(log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """log sum_t p_t over the valid frames of each sequence. (B, T, C) -> (B, C); -inf if empty."""
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be a tensor of shape (B, T, C), got {tuple(log_probs.shape)}")
    mask = valid_frame_mask(lengths.to(log_probs.device), log_probs.shape[1], batch_size=log_probs.shape[0])
    return log_probs.masked_fill(~mask.unsqueeze(-1), float("-inf")).logsumexp(dim=1)


def sequence_log_prior(log_probs: torch.Tensor, lengths: torch.Tensor, stop_grad: bool = True) -> torch.Tensor:
    """Per-sequence prior: log of the posterior averaged over the sequence's valid frames.

    log p_b(y) = log (1/L_b) sum_{t < L_b} p(y | x_t), computed with logsumexp
    (no underflow). Padding frames never count. A sequence with no frames gets
    the uniform prior (it has no frame to score anyway).

    Args:
      log_probs: Tensor of shape (B, T, C), normalised log-posteriors.
      lengths: Tensor of shape (B,).
      stop_grad: detach the result (``stopgrad``, as in Tables 1 and 10). With
        False the loss also differentiates through the prior.

    Returns:
      Tensor of shape (B, C).
    """
    log_sum = _log_sum_frames(log_probs, lengths)
    lengths = lengths.to(log_probs.device)
    uniform = torch.full_like(log_sum, -math.log(log_probs.shape[-1]))
    prior = torch.where(
        (lengths > 0).unsqueeze(-1), log_sum - lengths.clamp(min=1).to(log_sum.dtype).log().unsqueeze(-1), uniform
    )
    return prior.detach() if stop_grad else prior


def batch_log_prior(log_probs: torch.Tensor, lengths: torch.Tensor, stop_grad: bool = True) -> torch.Tensor:
    """Mini-batch prior: log of the posterior averaged over all valid frames of the batch.

    Args:
      log_probs: Tensor of shape (B, T, C), normalised log-posteriors.
      lengths: Tensor of shape (B,), at least one frame in total.
      stop_grad: detach the result.

    Returns:
      Tensor of shape (C,).
    """
    log_sum = _log_sum_frames(log_probs, lengths).logsumexp(dim=0)
    num_frames = int(lengths.sum())
    if num_frames == 0:
        raise ValueError("batch_log_prior needs at least one valid frame, got lengths that sum to 0")
    prior = log_sum - math.log(num_frames)
    return prior.detach() if stop_grad else prior


def prior_from_alignment(
    labels: torch.Tensor, lengths: torch.Tensor, num_labels: int, smoothing: float = 1.0
) -> torch.Tensor:
    """Static prior from the label counts of a reference alignment (count-based prior, sec. 3).

    p(y) = (count(y) + smoothing) / (num_frames + C * smoothing) over valid frames.

    Args:
      labels: LongTensor of shape (B, T), reference label per frame (padding ignored).
      lengths: Tensor of shape (B,).
      num_labels: C.
      smoothing: added to every count, so unseen labels get a finite log prior.

    Returns:
      Tensor of shape (C,), float32, on the device of ``labels``.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be a tensor of shape (B, T), got {tuple(labels.shape)}")
    mask = valid_frame_mask(lengths.to(labels.device), labels.shape[1], batch_size=labels.shape[0])
    valid = labels[mask].long()
    if valid.numel() > 0 and (int(valid.min()) < 0 or int(valid.max()) >= num_labels):
        raise ValueError(f"labels must be in [0, {num_labels}), got min {int(valid.min())} max {int(valid.max())}")
    counts = torch.bincount(valid, minlength=num_labels).double() + smoothing
    return _log_normalise(counts, "prior_from_alignment")


def prior_from_transcripts(
    transcripts: Sequence[Sequence[Sequence[int]]],
    num_labels: int,
    silence: int = 0,
    silence_ratio: float = 0.2,
    smoothing: float = 1.0,
) -> torch.Tensor:
    """Static prior estimated from transcriptions only (fixed prior of Raissi et al., 2022; Table 8).

    Assumption: every token occurrence lasts the same expected number of
    frames, and blank/silence fills the fraction ``silence_ratio`` of all frames
    (a realistic amount of silence is about 20%, A.4.2; a peaky CTC model puts far
    more on blank). Hence::

        p(silence) = silence_ratio
        p(y)       = (1 - silence_ratio) * (count(y) + smoothing) / sum_y' (count(y') + smoothing)

    Args:
      transcripts: utterance -> words -> token ids (columns other than ``silence``).
      num_labels: C.
      silence: blank/silence column.
      silence_ratio: fraction of frames assumed to be blank/silence, in (0, 1).
      smoothing: added to every token count.

    Returns:
      Tensor of shape (C,), float32.
    """
    if not 0.0 < silence_ratio < 1.0:
        raise ValueError(f"silence_ratio must be in (0, 1), got {silence_ratio}")
    silence = _check_blank(silence, num_labels)
    tokens = [tok for utt in transcripts for word in utt for tok in word]
    bad = [tok for tok in tokens if not 0 <= tok < num_labels or tok == silence]
    if bad:
        raise ValueError(f"token ids must be in [0, {num_labels}) and differ from silence={silence}, got {bad[:5]}")
    counts = torch.bincount(torch.tensor(tokens, dtype=torch.long), minlength=num_labels).double() + smoothing
    counts[silence] = 0.0
    probs = (1.0 - silence_ratio) * counts / counts.sum()
    probs[silence] = silence_ratio
    return probs.log().float()


def _log_normalise(counts: torch.Tensor, who: str) -> torch.Tensor:
    total = counts.sum()
    if not total > 0:
        raise ValueError(f"{who}: no frames to count and smoothing=0; cannot estimate a prior")
    return (counts / total).log().float()


class RunningPrior(nn.Module):
    """Prior as an exponential moving average of the batch posterior average (Zeyer et al., 2017).

    p_k = momentum * p_{k-1} + (1 - momentum) * pbar_batch_k, computed in log
    space; the first update takes the batch average as it is. Updates run without
    autograd, so the prior is a constant for the loss (stop-grad by construction).
    The state is two buffers (``state_dict``/``load_state_dict``, ``.to(device)``);
    the buffer moves to the device of the posteriors it is updated with.

    Args:
      num_labels: C.
      momentum: weight of the old prior per update, in [0, 1).
    """

    def __init__(self, num_labels: int, momentum: float = 0.99):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_labels = num_labels
        self.momentum = momentum
        self.register_buffer("log_probs_avg", torch.full((num_labels,), -math.log(num_labels)))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Folds the batch average posterior into the prior.

        Args:
          log_probs: Tensor of shape (B, T, C).
          lengths: Tensor of shape (B,).

        Returns:
          The updated log prior, Tensor of shape (C,).
        """
        if log_probs.shape[-1] != self.num_labels:
            raise ValueError(f"log_probs must have {self.num_labels} columns, got shape {tuple(log_probs.shape)}")
        batch = batch_log_prior(log_probs.detach(), lengths).to(self.log_probs_avg.dtype)
        old = self.log_probs_avg.to(batch.device)
        if int(self.num_updates) == 0:
            new = batch
        else:
            new = torch.logaddexp(old + math.log(self.momentum), batch + math.log1p(-self.momentum))
        self.log_probs_avg = new
        self.num_updates = self.num_updates.to(batch.device) + 1
        return self.log_prior

    @property
    def log_prior(self) -> torch.Tensor:
        """Current log prior, Tensor of shape (C,) (a detached copy; uniform before any update)."""
        return self.log_probs_avg.detach().clone()


class CorpusPrior(nn.Module):
    """Average posterior over a corpus, accumulated batch by batch (to store with a checkpoint).

    Accumulates log sum_t p(y|x_t) in float64 and the number of valid frames; the
    prior is their ratio. Used at alignment time with a prior scale (Table 14).

    Args:
      num_labels: C.
    """

    def __init__(self, num_labels: int):
        super().__init__()
        self.num_labels = num_labels
        self.register_buffer("log_sum", torch.full((num_labels,), float("-inf"), dtype=torch.float64))
        self.register_buffer("num_frames", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def accumulate(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> None:
        """Adds the valid frames of one batch.

        Args:
          log_probs: Tensor of shape (B, T, C).
          lengths: Tensor of shape (B,).
        """
        if log_probs.shape[-1] != self.num_labels:
            raise ValueError(f"log_probs must have {self.num_labels} columns, got shape {tuple(log_probs.shape)}")
        batch = _log_sum_frames(log_probs.detach().double(), lengths).logsumexp(dim=0)
        self.log_sum = torch.logaddexp(self.log_sum.to(batch.device), batch)
        self.num_frames = self.num_frames.to(batch.device) + lengths.sum().to(batch.device)

    @property
    def log_prior(self) -> torch.Tensor:
        """Log of the average posterior, Tensor of shape (C,), float32."""
        if int(self.num_frames) == 0:
            raise ValueError("CorpusPrior has seen no frames yet; call accumulate() first")
        return (self.log_sum - math.log(int(self.num_frames))).float()


def estimate_corpus_prior(batches: Iterable[Tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Average posterior over a corpus.

    Args:
      batches: iterable of (log_probs, lengths), Tensors of shape (B, T, C) and (B,).

    Returns:
      The log prior, Tensor of shape (C,), float32.
    """
    prior: Optional[CorpusPrior] = None
    for log_probs, lengths in batches:
        if prior is None:
            prior = CorpusPrior(log_probs.shape[-1])
        prior.accumulate(log_probs, lengths)
    if prior is None:
        raise ValueError("estimate_corpus_prior got no batches")
    return prior.log_prior

"""Label priors p(y) for the path score of eq. (6), and the one dispatcher of prior modes.

Every prior is returned as a log prior of shape (C,) or (B, C), to be passed as
``Scales(prior_scale=beta, log_prior=...)`` (or ``full_sum_loss(..., log_prior=...)``):

* static priors: from a reference alignment (count-based, sec. 3) or from transcriptions
  (Raissi et al., 2022; Table 8);
* the posterior average of the sequence or of the mini-batch, with or without stop-grad
  (Tables 1, 8, 10);
* a running average across steps (:class:`RunningPrior`) and a corpus average
  (:class:`CorpusPrior`, used at alignment time with a prior scale, Table 14).

:func:`log_prior_for` is the single place that turns a prior *mode* (:data:`PRIOR_MODES`) into
a log prior; the training recipe and the synthetic laboratory both call it.

Dimension symbols legend:
  B: batch size (number of sequences)
  T: number of frames (padded length of the batch)
  C: number of score-matrix columns = alignment labels, blank/silence included
"""
import math
from typing import Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

from fsalign.util import check_blank, valid_frame_mask

__all__ = [
    "PRIOR_MODES",
    "log_prior_for",
    "sequence_log_prior",
    "batch_log_prior",
    "prior_from_alignment",
    "prior_from_transcripts",
    "RunningPrior",
    "CorpusPrior",
    "estimate_corpus_prior",
]


PRIOR_MODES = ("none", "static", "seq", "batch", "running")
"""Prior modes: no prior; a fixed (static) prior estimated before training; the posterior
average of each sequence or of the mini-batch; a running average across steps."""


def log_prior_for(
    mode: str,
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    stop_grad: bool = True,
    static: Optional[torch.Tensor] = None,
    running: Optional["RunningPrior"] = None,
) -> Optional[torch.Tensor]:
    """The log prior of ``mode`` for a batch of posteriors: the one dispatcher of prior modes.

    Args:
      mode: one of :data:`PRIOR_MODES`: ``none`` -> None; ``static`` -> ``static`` (estimated
        once by the caller, e.g. :func:`prior_from_transcripts` or :func:`prior_from_alignment`);
        ``seq`` -> :func:`sequence_log_prior` (B, C); ``batch`` -> :func:`batch_log_prior` (C,);
        ``running`` -> ``running.update(log_probs, lengths)`` (C,).
      log_probs: Tensor of shape (B, T, C), normalised log-posteriors.
      lengths: Tensor of shape (B,).
      stop_grad: detach the seq/batch priors (a running prior is always a constant).
      static: Tensor of shape (C,) for ``static``.
      running: the :class:`RunningPrior` for ``running``.

    Returns:
      None, or a log prior of shape (C,) or (B, C) on the device of ``log_probs``.

    Raises:
      ValueError: an unknown mode, or ``static``/``running`` missing for its mode.
    """
    if mode not in PRIOR_MODES:
        raise ValueError(f"prior mode must be one of {PRIOR_MODES}, got {mode!r}")
    if mode == "none":
        return None
    if mode == "static":
        if static is None:
            raise ValueError("prior mode 'static' needs the static log prior")
        return static.to(log_probs.device)
    if mode == "seq":
        return sequence_log_prior(log_probs, lengths, stop_grad=stop_grad)
    if mode == "batch":
        return batch_log_prior(log_probs, lengths, stop_grad=stop_grad)
    if running is None:
        raise ValueError("prior mode 'running' needs a RunningPrior")
    return running.update(log_probs, lengths).to(log_probs.device)


def _log_sum_frames(log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Log sum_t p_t over the valid frames of each sequence. (B, T, C) -> (B, C); -inf if empty."""
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
    silence = check_blank(silence, num_labels)
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

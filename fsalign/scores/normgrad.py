"""Training with normalized gradients (sec. 3, eq. 8-11).

The loss value is that of the plain model; only the gradient w.r.t. the
logits is rescaled per class by ``clamp((vbar * C)^-1, v_min, v_max)``, where
``vbar`` is the soft alignment ``v`` (eq. 9) averaged over the valid frames of
the batch or of each sequence (footnote 2). ``v`` is read off the incoming
gradient: for a full-sum loss ``L = -log sum_paths prod_t p(y_t|x_t)^alpha ...``
the gradient w.r.t. the log-probs of frame t is ``-alpha * v_t`` (times any
constant the loss reduction applies), so normalising it per frame gives ``v_t``
whatever alpha and the reduction are. The scale stays in the gradient that is
returned: ``alpha * (p_t - v_t) * factor`` for the softmax (eq. 8, 11).

Caution:
  The incoming gradient must be the true gradient of the loss w.r.t. these
  log-probs (negative, summing to ``-alpha`` per frame up to the reduction), as
  ``fsalign.full_sum_loss`` / k2 give it. ``torch.nn.functional.ctc_loss`` does
  not satisfy this: its backward returns ``p - v`` (the gradient w.r.t. the
  logits of a log_softmax), which sums to 0 per frame; this is detected and
  raises ``FsalignError``. A prior computed from the same log-probs without
  stop-grad adds terms to the gradient, and ``v`` read off it is no longer the
  soft alignment.

Dimension symbols legend:
  B: batch size
  T: number of frames (padded)
  C: number of output columns (alignment labels |Y|, blank/silence included)
"""
from typing import Callable, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from fsalign.errors import FsalignError
from fsalign.util import valid_frame_mask

__all__ = ["normed_grad_log_softmax", "normed_grad_factor", "SCOPES"]

SCOPES = ("batch", "seq")
# A frame whose gradient sums to less than this fraction of its absolute mass
# does not carry a soft alignment (gradient w.r.t. logits instead of log-probs).
_MIN_MASS_RATIO = 1e-3

LogProbsFn = Callable[[torch.Tensor], torch.Tensor]


def normed_grad_factor(soft_alignment: torch.Tensor, frame_mask: torch.Tensor, v_min: float = 0.5,
                       v_max: float = 1.1, scope: str = "batch") -> torch.Tensor:
    """Per-class gradient factor of eq. (11): clamp((vbar * C)^-1, v_min, v_max).

    ``vbar`` (eq. 10) is the mean of ``soft_alignment`` over the frames in
    ``frame_mask``; a class with ``vbar = 0`` (or no frame at all) gets ``v_max``.

    Args:
      soft_alignment: Tensor of shape (B, T, C), v_t per frame.
      frame_mask: bool Tensor of shape (B, T), frames that count.
      v_min: lower clamp (footnote 4: 0.5).
      v_max: upper clamp (footnote 4: 1.1), finite (a class with vbar = 0 gets it).
      scope: ``"batch"`` (one vbar for the mini-batch) or ``"seq"`` (one per sequence).

    Returns:
      Tensor of shape (C,) for ``"batch"``, (B, C) for ``"seq"``.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not 0.0 <= v_min <= v_max < float("inf"):
        raise ValueError(f"need 0 <= v_min <= v_max < inf, got v_min={v_min}, v_max={v_max}")
    num_labels = soft_alignment.shape[-1]
    masked = soft_alignment.masked_fill(~frame_mask.unsqueeze(-1), 0.0)
    if scope == "batch":
        v_sum, count = masked.sum(dim=(0, 1)), frame_mask.sum()
    else:
        v_sum, count = masked.sum(dim=1), frame_mask.sum(dim=1, keepdim=True)
    # v is a probability: a mean that rounding left a hair below 0 is 0 (-> v_max, not v_min)
    v_bar = (v_sum / count.clamp(min=1).to(v_sum.dtype)).clamp(min=0.0)
    # 1 / 0 = inf -> clamped to v_max, as the brief of eq. (11) asks for vbar = 0.
    return torch.reciprocal(v_bar * num_labels).clamp(min=v_min, max=v_max)


def _soft_alignment_from_grad(grad: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """v_t = g_t / sum_j g_tj on frames with gradient; (B, T, C), live-frame mask (B, T)."""
    mass = grad.sum(dim=-1, keepdim=True)
    abs_mass = grad.abs().sum(dim=-1, keepdim=True)
    bad = mask.unsqueeze(-1) & (abs_mass > 0) & (mass.abs() <= _MIN_MASS_RATIO * abs_mass)
    if bool(bad.any()):
        b, t = bad.squeeze(-1).nonzero()[0].tolist()
        raise FsalignError(
            "normed_grad_log_softmax expects the gradient of the loss w.r.t. the log-probs to be -alpha * v "
            f"(summing to -alpha per frame), but frame {t} of sequence {b} has a gradient summing to "
            f"{float(mass[b, t]):.3g} with absolute mass {float(abs_mass[b, t]):.3g}; torch.nn.functional.ctc_loss "
            "returns p - v instead. Use fsalign.full_sum_loss."
        )
    live = mask & (abs_mass.squeeze(-1) > 0)
    safe_mass = torch.where(live.unsqueeze(-1), mass, torch.ones_like(mass))
    return torch.where(live.unsqueeze(-1), grad / safe_mass, torch.zeros_like(grad)), live


class _NormedGradLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, mask, v_min, v_max, scope, log_probs_fn):
        log_probs = logits.log_softmax(dim=-1) if log_probs_fn is None else log_probs_fn(logits)
        ctx.save_for_backward(logits if log_probs_fn is not None else log_probs, mask)
        ctx.options = (v_min, v_max, scope, log_probs_fn)
        return log_probs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        saved, mask = ctx.saved_tensors
        v_min, v_max, scope, log_probs_fn = ctx.options
        grad = grad.masked_fill(~mask.unsqueeze(-1), 0.0)
        v, live = _soft_alignment_from_grad(grad, mask)
        factor = normed_grad_factor(v, live, v_min, v_max, scope)
        if log_probs_fn is None:  # plain log_softmax backward: g - p * sum(g)
            grad_logits = grad - saved.exp() * grad.sum(dim=-1, keepdim=True)
        else:
            with torch.enable_grad():
                logits = saved.detach().requires_grad_(True)
                (grad_logits,) = torch.autograd.grad(log_probs_fn(logits), logits, grad)
        factor = factor if scope == "batch" else factor.unsqueeze(1)
        grad_logits = (grad_logits * factor.to(grad_logits.dtype)).masked_fill(~mask.unsqueeze(-1), 0.0)
        return grad_logits, None, None, None, None, None


def normed_grad_log_softmax(logits: torch.Tensor, lengths: torch.Tensor, v_min: float = 0.5, v_max: float = 1.1,
                            scope: str = "batch", log_probs_fn: Optional[LogProbsFn] = None) -> torch.Tensor:
    """log_softmax whose backward rescales the gradient per class (eq. 11).

    Forward: ``log_softmax(logits)`` (or ``log_probs_fn(logits)``, e.g.
    ``functools.partial(fsalign.blank_separated_log_probs, blank=0)`` to combine
    with blank separation, Table 4). Backward, with g the incoming gradient::

        v_t    = g_t / sum_j g_tj                      (soft alignment, eq. 9)
        vbar   = mean of v_t over valid frames         (eq. 10; batch or per sequence)
        factor = clamp((vbar * C)^-1, v_min, v_max)    (eq. 11; vbar = 0 -> v_max)
        grad_logits = VJP_{log_probs_fn}(g) * factor   (eq. 8 * factor for the softmax)

    Padding frames get zero gradient and never count; neither do frames whose
    incoming gradient is zero (e.g. an utterance the loss skips). See the module
    docstring for what the incoming gradient must be.

    Args:
      logits: Tensor of shape (B, T, C).
      lengths: Tensor of shape (B,), valid frames per sequence (any order).
      v_min: lower clamp of the factor.
      v_max: upper clamp of the factor.
      scope: ``"batch"`` or ``"seq"`` (footnote 2).
      log_probs_fn: maps logits (B, T, C) to normalised log-probs; default log_softmax.

    Returns:
      Tensor of shape (B, T, C): the log-probabilities.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be a tensor of shape (B, T, C), got {tuple(logits.shape)}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not 0.0 <= v_min <= v_max < float("inf"):
        raise ValueError(f"need 0 <= v_min <= v_max < inf, got v_min={v_min}, v_max={v_max}")
    mask = valid_frame_mask(lengths.to(logits.device), logits.shape[1], batch_size=logits.shape[0])
    return _NormedGradLogProbs.apply(logits, mask, float(v_min), float(v_max), scope, log_probs_fn)

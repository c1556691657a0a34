"""Gradient scores G (section 5, eq. 22-23, 49-50): how much each input frame matters to each label.

For every transcript position ``s`` the gradient of the label log-probability
``log p(a_s | a_1^{s-1}, x)`` w.r.t. the input feature frames ``x_t'`` shows
which frames the label depends on. Its log p-norm (eq. 22)::

    G[s, t'] = log || d log p(a_s | a_1^{s-1}, x) / d x_t' ||_p

turned into a score matrix over the columns (blank, position 1, ..., position S)
(GradScore, eq. 24-25, or GradScoreExt, eq. 43-48) and aligned with the
relaxed CTC topology (blank optional everywhere, every position its own
state) gives token and word boundaries at the input frame rate.

* :func:`gradient_scores` - ``G`` for any model following :class:`CtcModel`
  and/or :class:`AedModel` (CTC prefix scores eq. 23, AED, hybrid eq. 50),
  with the blank-gradient mask of eq. 49;
GradScore / GradScoreExt score matrices and their alignment live in
:mod:`fsalign.scores.gradscore`.

Dimension symbols legend:
  B: batch size (number of utterances)
  T': number of input feature frames (padded), before subsampling
  T: number of encoder frames (padded), after subsampling
  D: feature dimension
  C: number of CTC output columns (blank included)
  V: AED output vocabulary size
  S: number of transcript positions (padded); ``S_b`` valid in utterance ``b``
"""
import logging
import math
from typing import Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch

from fsalign.scores.prefix import (
    aed_label_log_probs,
    ctc_prefix_log_probs,
    joint_label_log_probs,
    transcript_targets,
)
from fsalign.util import valid_frame_mask

__all__ = ["EncoderModel", "CtcModel", "AedModel", "gradient_scores", "GRAD_PADDING", "PREFIXES"]

logger = logging.getLogger(__name__)

GRAD_PADDING = -math.inf
"""Value of ``G`` (and of score-matrix entries) outside the valid frames / positions."""

PREFIXES = ("forward", "onset")
"""CTC prefix-score definitions of eq. 23 (see :func:`fsalign.scores.prefix.ctc_prefix_log_probs`)."""


@runtime_checkable
class EncoderModel(Protocol):
    """What :func:`gradient_scores` needs from every model.

    Attributes:
      subsampling: encoder frames per input frame ratio F (T = ceil(T'/F));
        informational: ``G`` is always at the input frame rate.
    """

    subsampling: int

    def forward_encoder(
        self, features: torch.Tensor, feature_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Features (B, T', D) and lengths (B,) -> encoder output (B, T, ·) and lengths (B,).

        Must be differentiable w.r.t. ``features`` and keep utterances
        independent (no batch statistics: call ``model.eval()``).
        """


@runtime_checkable
class CtcModel(EncoderModel, Protocol):
    """A CTC model: ``ctc_logits`` turns the encoder output into (B, T, C) raw logits.

    The log-probabilities are ``log_softmax(logits)``, unless the model also
    defines ``ctc_log_probs(logits) -> (B, T, C)`` (e.g. the blank-separated
    head of eq. 15-17). The blank-gradient mask (eq. 49) acts on the logits.

    Attributes:
      blank: the blank column of the logits.
    """

    blank: int

    def ctc_logits(self, encoder_out: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, T, ·) -> logits (B, T, C)."""


@runtime_checkable
class AedModel(EncoderModel, Protocol):
    """An attention encoder-decoder model, scored teacher-forced."""

    def aed_log_probs(
        self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor, targets: torch.Tensor,
        target_lengths: torch.Tensor
    ) -> torch.Tensor:
        """Decoder log-probabilities of shape (B, S+1, V), teacher-forced.

        Row ``s`` predicts ``a_{s+1}`` after BOS and ``a_1^s`` (the model adds
        BOS itself); row ``S_b`` predicts EOS (not used). ``targets`` (B, S)
        are the transcript token ids as given to :func:`gradient_scores`.
        """


def _functional_transforms():
    """``(vjp, vmap)`` of torch.func (torch >= 2.0) or functorch (torch 1.13)."""
    try:
        from torch.func import vjp, vmap
    except ImportError:  # torch 1.13
        from functorch import vjp, vmap
    return vjp, vmap


def _mask_blank_gradient(logits: torch.Tensor, blank: int) -> torch.Tensor:
    """Same values; the gradient reaching the blank logit is zeroed (eq. 49).

    ``z·k + stopgrad(z·(1−k))`` with ``k`` = 0 at blank, 1 elsewhere: the
    backward hook ``(∇_z L)_ε ← 0`` of the paper, written with operations
    that vmap (the batched VJP) can transform, unlike tensor hooks.
    """
    keep = torch.ones(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    keep[blank] = 0.0
    return logits * keep + (logits * (1.0 - keep)).detach()


def _log_p_norm(grads: torch.Tensor, p: float) -> torch.Tensor:
    """``log ||g||_p`` over the last axis, in log space: ``(1/p) logsumexp(p log|g|)``.

    Gradient entries below the dtype's smallest normal number (exact zeros
    included, e.g. from underflow far from a label) count as that number, so
    ``G`` is finite on valid frames and positions and every frame stays
    alignable (the relaxed-topology Viterbi needs finite scores).
    """
    log_abs = grads.abs().clamp(min=torch.finfo(grads.dtype).tiny).log()
    if math.isinf(p):
        return log_abs.amax(-1)
    return torch.logsumexp(p * log_abs, dim=-1) / p


def gradient_scores(
    model: EncoderModel,
    features: torch.Tensor,
    feature_lengths: torch.Tensor,
    transcripts: Sequence[Sequence[Sequence[int]]],
    p: float = 0.1,
    mask_blank: bool = True,
    ctc_weight: float = 1.0,
    aed_weight: float = 0.0,
    batched: bool = True,
    chunk_size: Optional[int] = None,
    return_lengths: bool = False,
    prefix: str = "forward",
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Log p-norms of the input gradients of every label log-probability (eq. 22, 50).

    ``G[b, s, t'] = log || ∇_{x_t'} (λ_CTC log p_CTC + λ_AED log p_AED)(a_s | a_1^{s-1}, x) ||_p``
    with the CTC term from prefix scores (eq. 23, :func:`ctc_prefix_log_probs`)
    and the AED term teacher-forced without EOS. For ``p < 1`` the p-"norm" is
    ``(Σ_d |g_d|^p)^{1/p}``; ``p = inf`` gives the max norm.

    Utterances are independent, so the gradient of utterance b's label s only
    reaches utterance b's frames: one vector-Jacobian product per label index
    ``s`` serves the whole batch. With ``batched=True`` all of them run as one
    vmapped VJP (``torch.func``/functorch ``vmap(vjp_fn)``; in chunks of
    ``chunk_size`` labels if given), which is faster than torch 1.13's
    ``autograd.grad(is_grads_batched=True)`` (that falls back to per-sample
    loops for convolutions and norms). ``batched=False`` loops over ``s``
    with plain autograd (same result; less memory).

    Caution:
      The model must be in eval mode (dropout off, batch-norm with running
      statistics): batch statistics would mix utterances. A warning is logged
      otherwise. Parameters get no ``.grad``.

    Args:
      model: follows :class:`CtcModel` when ``ctc_weight > 0`` and
        :class:`AedModel` when ``aed_weight > 0``.
      features: Tensor of shape (B, T', D), input features (not modified).
      feature_lengths: Tensor of shape (B,), valid input frames.
      transcripts: utterance -> words -> token ids (CTC columns other than blank).
      p: the norm's p > 0 (default 0.1, the paper's best).
      mask_blank: zero the gradient of the blank logit (eq. 49; CTC only).
      ctc_weight: λ_CTC >= 0.
      aed_weight: λ_AED >= 0 (eq. 50; paper: λ_CTC + λ_AED = 1).
      batched: one batched VJP (True) or one VJP per label index (False).
      chunk_size: most label indices per batched VJP (None: all at once);
        bounds the memory of the batched backward.
      return_lengths: also return the frame and label lengths.
      prefix: the CTC prefix score, ``"forward"`` (default; eq. 23 read literally) or
        ``"onset"`` (Hori et al.); see :func:`ctc_prefix_log_probs` and docs/gradscore.md.

    Returns:
      ``G``: Tensor of shape (B, S, T'), dtype of ``features``, detached;
      ``GRAD_PADDING`` (-inf) at padding frames and positions and at positions
      of probability 0; finite elsewhere (gradients are floored at the
      dtype's smallest normal number). With ``return_lengths``: ``(G, frame_lengths,
      label_lengths)``, LongTensors of shape (B,).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 3 or not features.is_floating_point():
        raise ValueError(
            f"features must be a floating point tensor of shape (B, T', D), got shape "
            f"{tuple(getattr(features, 'shape', ()))}"
        )
    if not p > 0:
        raise ValueError(f"p must be > 0 (or inf), got {p}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    B, T_in, _ = features.shape
    device = features.device
    feature_lengths = torch.as_tensor(feature_lengths, device=device)
    frame_valid = valid_frame_mask(feature_lengths, T_in, batch_size=B)
    if len(transcripts) != B:
        raise ValueError(f"transcripts must have one entry per utterance ({B}), got {len(transcripts)}")
    targets, target_lengths = transcript_targets(transcripts, device)
    S = targets.shape[1]
    for name, weight, method in (("ctc", ctc_weight, "ctc_logits"), ("aed", aed_weight, "aed_log_probs")):
        if weight > 0 and not callable(getattr(model, method, None)):
            raise ValueError(
                f"{name}_weight={weight} needs a model with a `{method}` method ({type(model).__name__} has none)"
            )
    if getattr(model, "training", False):
        logger.warning(
            "gradient_scores: model is in training mode; call model.eval() (dropout/batch-norm mix utterances)"
        )

    def label_scores(x: torch.Tensor) -> torch.Tensor:  # (B, T', D) -> (B, S)
        h, h_lengths = model.forward_encoder(x, feature_lengths)
        ctc = aed = None
        if ctc_weight > 0:
            logits = model.ctc_logits(h)
            if mask_blank:
                logits = _mask_blank_gradient(logits, model.blank)
            normalise = getattr(model, "ctc_log_probs", None)
            log_probs = normalise(logits) if callable(normalise) else logits.log_softmax(-1)
            ctc = ctc_prefix_log_probs(log_probs, h_lengths, targets, target_lengths, model.blank, definition=prefix)
        if aed_weight > 0:
            dec = model.aed_log_probs(h, h_lengths, targets, target_lengths)
            aed = aed_label_log_probs(dec, targets, target_lengths)
        return joint_label_log_probs(ctc, aed, ctc_weight, aed_weight)

    x = features.detach()
    if batched:
        vjp, vmap = _functional_transforms()
        with torch.no_grad():  # no graph for the parameters; vjp tracks x itself
            scores, vjp_fn = vjp(label_scores, x)
        batched_vjp = vmap(vjp_fn)
    else:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)
            scores = label_scores(x)
    scores = scores.detach() if batched else scores
    use = valid_frame_mask(target_lengths, S, batch_size=B) & torch.isfinite(scores.detach())
    bad = (~use & valid_frame_mask(target_lengths, S)).any(1).nonzero().flatten().tolist()
    if bad:
        logger.warning("gradient_scores: utterances %s have positions of probability 0 "
                       "(too few encoder frames?); their G rows are -inf", bad)
    G = features.new_full((S, B, T_in), GRAD_PADDING)
    step = 1 if not batched else max(1, S if chunk_size is None else chunk_size)
    starts = list(range(0, S, step))
    for k, s0 in enumerate(starts):
        s1 = min(s0 + step, S)
        # cotangent k selects label index s0 + k in every utterance (where valid)
        grad_out = torch.zeros(s1 - s0, B, S, dtype=scores.dtype, device=device)
        idx = torch.arange(s1 - s0, device=device)
        grad_out[idx, :, idx + s0] = use[:, s0:s1].T.to(scores.dtype)
        if batched:
            (grads,) = batched_vjp(grad_out)
        else:
            (grads,) = torch.autograd.grad(scores, x, grad_out[0], retain_graph=k + 1 < len(starts))
            grads = grads[None]
        G[s0:s1] = _log_p_norm(grads.detach(), p)
    G = G.permute(1, 0, 2).contiguous()
    G = G.masked_fill(~frame_valid[:, None, :] | ~use[:, :, None], GRAD_PADDING)
    if return_lengths:
        return G, feature_lengths.long(), target_lengths
    return G

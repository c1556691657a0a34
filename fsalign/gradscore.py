"""Alignments from gradients (section 5, appendix A.7).

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
* :func:`grad_score_matrix` - GradScore / GradScoreExt score matrices;
* :func:`grad_align` - Viterbi alignment through :class:`RelaxedTopology`.

Dimension symbols legend:
  B: batch size (number of utterances)
  T': number of input feature frames (padded), before subsampling
  T: number of encoder frames (padded), after subsampling
  D: feature dimension
  C: number of CTC output columns (blank included)
  V: AED output vocabulary size
  S: number of transcript positions (padded); ``S_b`` valid in utterance ``b``
"""
import dataclasses
import logging
import math
from typing import List, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch

from fsalign.alignment import Alignment
from fsalign.prefix import (
    aed_label_log_probs,
    ctc_prefix_log_probs,
    joint_label_log_probs,
    transcript_targets,
)
from fsalign.scores import valid_frame_mask
from fsalign.topology import RelaxedTopology
from fsalign.viterbi import viterbi_align

__all__ = [
    "EncoderModel",
    "CtcModel",
    "AedModel",
    "gradient_scores",
    "grad_score_matrix",
    "grad_align",
    "GRAD_PADDING",
]

logger = logging.getLogger(__name__)

GRAD_PADDING = -math.inf
"""Value of ``G`` (and of score-matrix entries) outside the valid frames / positions."""

_VARIANTS = ("grad", "gradext")


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
        self,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
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


def _log_softmax_valid(x: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """log_softmax over the valid entries along ``dim``; uniform where none of them is finite."""
    x = x.masked_fill(~valid, -math.inf)
    has_mass = torch.isfinite(x).any(dim, keepdim=True)
    x = torch.where(has_mass, x, torch.zeros_like(x)).masked_fill(~valid, -math.inf)
    return x.log_softmax(dim).masked_fill(~valid, -math.inf)  # NaN rows (nothing valid) -> -inf


def grad_score_matrix(
    G: torch.Tensor,
    lengths: torch.Tensor,
    label_lengths: torch.Tensor,
    variant: str = "grad",
    blank_score: float = -6.0,
    percentile: float = 60.0,
) -> torch.Tensor:
    """Score matrix over (blank, position 1..S) from ``G`` (eq. 24-25 or 43-48).

    ``G' = log_softmax_t'(G)`` over the valid frames of each position (eq. 25,
    43). ``variant="grad"`` (GradScore): labels score ``G'``, blank the
    constant ``blank_score`` γ_ε. ``variant="gradext"`` (GradScoreExt)::

        g   = log(1/S_b Σ_s exp G'_s)            (44, per frame)
        l   = percentile of g over valid frames  (45, linear interpolation as numpy)
        g'  = 2 l - g                            (46, blank score)
        (G'', g'') = log_softmax over the S_b+1 columns of (G', g')   (47-48)

    The paper does not state the percentile interpolation; with hundreds of
    frames the choice hardly matters. A position whose ``G`` is -inf on every
    valid frame gets the uniform ``-log T'_b``; a frame where every ``G'`` is
    -inf (zero gradients) gets blank 0 in GradScoreExt.

    Args:
      G: Tensor of shape (B, S, T') from :func:`gradient_scores`.
      lengths: Tensor of shape (B,), valid frames.
      label_lengths: Tensor of shape (B,), valid positions S_b.
      variant: "grad" or "gradext".
      blank_score: γ_ε of GradScore (eq. 25).
      percentile: γ_percentile of GradScoreExt, in percent.

    Returns:
      Tensor of shape (B, T', S+1), dtype of ``G``: column 0 blank, column s
      position s (1-based); ``-inf`` at padding frames and positions.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    if not isinstance(G, torch.Tensor) or G.dim() != 3 or not G.is_floating_point():
        raise ValueError(
            f"G must be a floating point tensor of shape (B, S, T'), got shape {tuple(getattr(G, 'shape', ()))}"
        )
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    B, S, T = G.shape
    frame_valid = valid_frame_mask(torch.as_tensor(lengths, device=G.device), T, batch_size=B)
    label_lengths = torch.as_tensor(label_lengths, device=G.device)
    pos_valid = valid_frame_mask(label_lengths, S, batch_size=B)
    valid = pos_valid[:, :, None] & frame_valid[:, None, :]  # (B, S, T')
    Gp = _log_softmax_valid(G, valid, dim=2)  # eq. 43
    out = G.new_full((B, S + 1, T), -math.inf)
    if variant == "grad":
        out[:, 1:] = Gp
        out[:, 0] = torch.where(frame_valid, G.new_tensor(float(blank_score)), G.new_tensor(-math.inf))
        return out.transpose(1, 2)
    g = torch.logsumexp(Gp, dim=1) - label_lengths.clamp(min=1).to(G.dtype).log()[:, None]  # eq. 44, (B, T')
    finite_g = torch.isfinite(g) & frame_valid
    blank = torch.zeros_like(g)
    for b in range(B):
        if bool(finite_g[b].any()):
            level = torch.quantile(g[b][finite_g[b]], percentile / 100.0, interpolation="linear")  # eq. 45
            blank[b] = 2 * level - g[b]  # eq. 46
    joint = torch.cat([blank[:, None, :], Gp], dim=1).masked_fill(~finite_g[:, None, :], 0.0)
    joint = joint.masked_fill(~torch.cat([finite_g[:, None, :], valid], dim=1), -math.inf)
    out = joint.log_softmax(dim=1)  # eq. 47
    # frames without any label mass (zero gradients or S_b = 0) are blank
    out[:, 0] = torch.where(frame_valid & ~finite_g, torch.zeros_like(g), out[:, 0])
    out = out.masked_fill(~torch.cat([frame_valid[:, None, :], valid], dim=1), -math.inf)
    return out.transpose(1, 2)


def grad_align(
    G: torch.Tensor,
    lengths: torch.Tensor,
    transcripts: Sequence[Sequence[Sequence[int]]],
    variant: str = "grad",
    blank_score: float = -6.0,
    percentile: float = 60.0,
    label_lengths: Optional[torch.Tensor] = None,
    on_infeasible: str = "raise",
) -> List[Optional[Alignment]]:
    """GradScore / GradScoreExt alignment (eq. 24-25, 43-48) at the input frame rate.

    The best path over the relaxed topology on transcript positions (states
    ε, 1, ε, 2, ..., S, ε; section 5) through :class:`RelaxedTopology` and
    :func:`viterbi_align`, scored by :func:`grad_score_matrix`.

    Args:
      G: Tensor of shape (B, S, T') from :func:`gradient_scores`.
      lengths: Tensor of shape (B,), valid input frames.
      transcripts: utterance -> words -> token ids (the same as for ``G``).
      variant: "grad" (GradScore) or "gradext" (GradScoreExt).
      blank_score: γ_ε (GradScore).
      percentile: γ_percentile in percent (GradScoreExt).
      label_lengths: optional Tensor of shape (B,); checked against the transcripts.
      on_infeasible: as in :func:`viterbi_align` ("raise" or "skip").

    Returns:
      One :class:`Alignment` per utterance: ``labels`` holds score-matrix
      columns (0 blank, s = position s, 1-based), ``tokens[i].token`` the
      transcript's token id, spans in input frames (end exclusive).
    """
    B = G.shape[0] if isinstance(G, torch.Tensor) and G.dim() == 3 else None
    if B is None:
        raise ValueError(f"G must be a tensor of shape (B, S, T'), got shape {tuple(getattr(G, 'shape', ()))}")
    if len(transcripts) != B:
        raise ValueError(f"transcripts must have one entry per utterance ({B}), got {len(transcripts)}")
    targets, counts = transcript_targets(transcripts)
    if label_lengths is not None and not torch.equal(torch.as_tensor(label_lengths).cpu().long(), counts):
        raise ValueError(
            f"label_lengths {torch.as_tensor(label_lengths).tolist()} do not match the transcripts' "
            f"token counts {counts.tolist()}"
        )
    S = G.shape[1]
    if B and int(counts.max()) > S:
        raise ValueError(f"G has S={S} positions, but a transcript has {int(counts.max())} tokens")
    scores = grad_score_matrix(G, lengths, counts.to(G.device), variant, blank_score, percentile).float()
    # columns of positions beyond S_b have no arc in utterance b's graph; Viterbi wants them finite
    unused = torch.arange(S + 1, device=G.device)[None, None, :] > counts.to(G.device)[:, None, None]
    scores = torch.where(unused, scores[:, :, :1], scores)
    if S == 0:  # the topology needs a token column (no graph uses it)
        scores = torch.cat([scores, scores[:, :, :1]], dim=2)
    positions = []
    for words in transcripts:
        utt, next_pos = [], 1
        for w in words:
            utt.append(list(range(next_pos, next_pos + len(w))))
            next_pos += len(w)
        positions.append(utt)
    graphs = RelaxedTopology(num_labels=scores.shape[2], blank=0).compile(positions, device=G.device)
    alignments = viterbi_align(scores, lengths, graphs, on_infeasible=on_infeasible)
    for b, ali in enumerate(alignments):
        if ali is not None:
            ali.tokens = [dataclasses.replace(t, token=int(targets[b, t.position])) for t in ali.tokens]
    return alignments

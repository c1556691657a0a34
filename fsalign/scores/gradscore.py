"""GradScore and GradScoreExt (eq. 24-25, 43-48): score matrices from G, and their alignment.

``G`` (:func:`fsalign.scores.gradient.gradient_scores`) turned into a score matrix over the
columns (blank, position 1, ..., position S) and aligned with the relaxed CTC topology
(blank optional everywhere, every transcript position its own state) gives token and word
boundaries at the input frame rate.

Dimension symbols legend:
  B: batch size (number of utterances)
  T': number of input feature frames (padded)
  S: number of transcript positions (padded); ``S_b`` valid in utterance ``b``
"""
import functools
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from fsalign.engine.builtin import RelaxedTopology
from fsalign.errors import FsalignError
from fsalign.results.alignment import Alignment
from fsalign.scores.gradient import PREFIXES, gradient_scores
from fsalign.scores.matrix import ScoreMatrix
from fsalign.scores.prefix import transcript_targets
from fsalign.util import Seconds, check_option, is_finite_number, is_positive_int, valid_frame_mask

__all__ = ["VARIANTS", "GRAD_SOURCES", "ALIGN_PERCENTILE", "GradientScorer", "grad_score_matrix", "gradscore_matrix",
           "grad_align", "grad_source_weights"]

VARIANTS = ("grad", "gradext")
"""GradScore (eq. 24-25) and GradScoreExt (eq. 43-48)."""

ALIGN_PERCENTILE = 80.0
"""γ_percentile of the aligners (:class:`GradientScorer`, ``fsalign align --scores gradext``).

The matrix functions keep the paper's usual 60 %; for word boundaries 80 % measured better on
three synthesised corpora (boundary TSE 0.4 to 2.2 ms lower, docs/results.md), 90 % worse again.
"""

GRAD_SOURCES = ("ctc", "aed", "hybrid")
"""Which label log-probability G differentiates: CTC prefix scores, the AED decoder, or both (eq. 50)."""


def grad_source_weights(source: str, aed_weight: Optional[float] = None) -> Tuple[float, float]:
    """(λ_CTC, λ_AED) of eq. 50 for a grad source.

    ``"ctc"`` is (1, 0), ``"aed"`` (0, 1) and ``"hybrid"`` (1 − λ, λ) with λ = ``aed_weight``
    (default 0.5; the paper's weights add up to 1, appendix A.7).

    Raises:
      FsalignError: an unknown source, λ outside [0, 1], or λ with a source other than hybrid.
    """
    check_option("grad source", source, source in GRAD_SOURCES, f"one of {GRAD_SOURCES}")
    if source != "hybrid":
        if aed_weight is not None:
            raise FsalignError(f"aed weight {aed_weight} applies to grad source 'hybrid', not {source!r}")
        return (1.0, 0.0) if source == "ctc" else (0.0, 1.0)
    weight = 0.5 if aed_weight is None else aed_weight
    check_option("aed weight", weight, is_finite_number(weight) and 0 <= weight <= 1, "in [0, 1]")
    return 1.0 - float(weight), float(weight)


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
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
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


@functools.lru_cache(maxsize=64)
def _positions_topology(num_columns: int) -> RelaxedTopology:
    """The relaxed topology over (blank, position 1, ..., position S): one per matrix width."""
    return RelaxedTopology(num_labels=num_columns, blank=0)


def gradscore_matrix(
    G: torch.Tensor,
    lengths: torch.Tensor,
    transcripts: Sequence[Sequence[Sequence[int]]],
    variant: str = "grad",
    blank_score: float = -6.0,
    percentile: float = 60.0,
    frame_shift_s: Seconds = 0.01,
) -> ScoreMatrix:
    """The :class:`~fsalign.scores.matrix.ScoreMatrix` of GradScore / GradScoreExt (eq. 24-25, 43-48).

    Columns are (blank, position 1, ..., position S), aligned under the relaxed topology on
    transcript positions (states ε, 1, ε, 2, ..., S, ε; section 5); the matrix maps
    positions back to the transcripts' token ids. Frames are input frames, with no offset
    (feature frame ``k`` is centred on ``(k + 1/2) * frame_shift_s``).

    Args:
      G: Tensor of shape (B, S, T') from :func:`fsalign.scores.gradient.gradient_scores`.
      lengths: Tensor of shape (B,), valid input frames.
      transcripts: utterance -> words -> token ids (the same as for ``G``).
      variant: "grad" (GradScore) or "gradext" (GradScoreExt).
      blank_score: γ_ε (GradScore).
      percentile: γ_percentile in percent (GradScoreExt).
      frame_shift_s: seconds per input frame.
    """
    B = G.shape[0] if isinstance(G, torch.Tensor) and G.dim() == 3 else None
    if B is None:
        raise ValueError(f"G must be a tensor of shape (B, S, T'), got shape {tuple(getattr(G, 'shape', ()))}")
    if len(transcripts) != B:
        raise ValueError(f"transcripts must have one entry per utterance ({B}), got {len(transcripts)}")
    targets, counts = transcript_targets(transcripts)
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
    graphs = _positions_topology(scores.shape[2]).compile(positions, device=G.device)
    tokens = [targets[b, : int(counts[b])].tolist() for b in range(B)]  # position -> token id
    name = {"grad": "GradScore", "gradext": "GradScoreExt"}[variant]
    return ScoreMatrix(scores, torch.as_tensor(lengths).long(), graphs, frame_step_s=frame_shift_s,
                       time_offset_s=0.0, tokens=tokens, name=name)


def grad_align(G: torch.Tensor, lengths: torch.Tensor, transcripts: Sequence[Sequence[Sequence[int]]],
               variant: str = "grad", blank_score: float = -6.0, percentile: float = 60.0,
               label_lengths: Optional[torch.Tensor] = None, on_infeasible: str = "raise") -> List[Optional[Alignment]]:
    """GradScore / GradScoreExt alignment (eq. 24-25, 43-48) at the input frame rate.

    The best paths of :func:`gradscore_matrix`.

    Args:
      G: Tensor of shape (B, S, T') (as for :func:`gradscore_matrix`).
      lengths: Tensor of shape (B,), input frames.
      transcripts: the token ids per word of each utterance.
      variant: "grad" or "gradext".
      blank_score: γ_ε.
      percentile: γ_percentile.
      label_lengths: optional Tensor of shape (B,); checked against the transcripts.
      on_infeasible: as in :func:`fsalign.viterbi_align` ("raise" or "skip").

    Returns:
      One :class:`Alignment` per utterance: ``labels`` holds score-matrix
      columns (0 blank, s = position s, 1-based), ``tokens[i].token`` the
      transcript's token id, spans in input frames (end exclusive).
    """
    if label_lengths is not None:
        _, counts = transcript_targets(transcripts)
        if not torch.equal(torch.as_tensor(label_lengths).cpu().long(), counts):
            raise ValueError(
                f"label_lengths {torch.as_tensor(label_lengths).tolist()} do not match the transcripts' "
                f"token counts {counts.tolist()}"
            )
    return gradscore_matrix(G, lengths, transcripts, variant, blank_score, percentile).best_paths(on_infeasible)


class GradientScorer:
    """Gradient score matrices of a model: G (eq. 22-23, 49-50) -> GradScore(Ext) (eq. 24-25, 43-48).

    Every option is checked here, before any audio is read.

    Args:
      model: follows :class:`~fsalign.scores.gradient.CtcModel` when ``ctc_weight > 0`` and
        :class:`~fsalign.scores.gradient.AedModel` when ``aed_weight > 0`` (in eval mode).
      variant: "grad" (GradScore) or "gradext" (GradScoreExt).
      p: the norm's p > 0 (``inf``: the max norm).
      blank_score: γ_ε of GradScore, finite.
      percentile: γ_percentile of GradScoreExt, in [0, 100].
      prefix: the CTC prefix score, one of :data:`~fsalign.scores.gradient.PREFIXES`.
      mask_blank: zero the gradient of the blank logit (eq. 49).
      ctc_weight: λ_CTC >= 0.
      aed_weight: λ_AED >= 0 (not both 0).
      chunk_size: label positions per batched gradient (None: all at once).
      frame_shift_s: seconds per input feature frame.

    Raises:
      FsalignError: an option outside its range, or a model without what the weights need.
    """

    def __init__(self, model, variant: str = "gradext", p: float = 0.1, blank_score: float = -6.0,
                 percentile: float = ALIGN_PERCENTILE, prefix: str = "forward", mask_blank: bool = True,
                 ctc_weight: float = 1.0, aed_weight: float = 0.0, chunk_size: Optional[int] = 32,
                 frame_shift_s: Seconds = 0.01):
        check_option("variant", variant, variant in VARIANTS, f"one of {VARIANTS}")
        check_option("p", p, (is_finite_number(p) or p == math.inf) and p > 0, "a number > 0 (or inf)")
        check_option("blank score", blank_score, is_finite_number(blank_score), "a finite number")
        check_option("percentile", percentile, is_finite_number(percentile) and 0 <= percentile <= 100, "in [0, 100]")
        check_option("prefix", prefix, prefix in PREFIXES, f"one of {PREFIXES}")
        for name, weight in (("ctc weight", ctc_weight), ("aed weight", aed_weight)):
            check_option(name, weight, is_finite_number(weight) and weight >= 0, "a finite number >= 0")
        if ctc_weight + aed_weight == 0:
            raise FsalignError("ctc weight and aed weight must not both be 0")
        check_option("chunk size", chunk_size, chunk_size is None or is_positive_int(chunk_size), "an integer >= 1")
        for name, weight, method in (("ctc", ctc_weight, "ctc_logits"), ("aed", aed_weight, "aed_log_probs")):
            if weight > 0 and not callable(getattr(model, method, None)):
                raise FsalignError(f"{name} weight {weight} needs a model with `{method}` "
                                   f"({type(model).__name__} has none)")
        self.model = model
        self.variant, self.p, self.blank_score, self.percentile = variant, float(p), float(blank_score), percentile
        self.prefix, self.mask_blank = prefix, bool(mask_blank)
        self.ctc_weight, self.aed_weight, self.chunk_size = float(ctc_weight), float(aed_weight), chunk_size
        self.frame_shift_s = float(frame_shift_s)

    def settings(self) -> Dict[str, Any]:
        """Every option that determines the scores (recorded with alignments)."""
        return {"scores": self.variant, "grad_p": self.p, "grad_blank_score": self.blank_score,
                "grad_percentile": self.percentile, "grad_prefix": self.prefix, "mask_blank": self.mask_blank,
                "ctc_weight": self.ctc_weight, "aed_weight": self.aed_weight, "grad_chunk_size": self.chunk_size,
                "frame_step_s": self.frame_shift_s, "time_offset_s": 0.0}

    def __call__(self, features: torch.Tensor, feature_lengths: torch.Tensor,
                 transcripts: Sequence[Sequence[Sequence[int]]]) -> ScoreMatrix:
        """GradScore(Ext) matrix of a batch.

        Args:
          features: Tensor of shape (B, T', D) on the model's device.
          feature_lengths: Tensor of shape (B,).
          transcripts: utterance -> words -> token ids.
        """
        G = gradient_scores(self.model, features, feature_lengths, transcripts, p=self.p, mask_blank=self.mask_blank,
                            ctc_weight=self.ctc_weight, aed_weight=self.aed_weight, chunk_size=self.chunk_size,
                            prefix=self.prefix)
        return gradscore_matrix(G, feature_lengths, transcripts, self.variant, self.blank_score, self.percentile,
                                self.frame_shift_s)


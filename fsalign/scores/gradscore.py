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
import dataclasses
import math
from typing import List, Optional, Sequence

import torch

from fsalign.engine.builtin import RelaxedTopology
from fsalign.engine.viterbi import viterbi_align
from fsalign.results.alignment import Alignment
from fsalign.scores.prefix import transcript_targets
from fsalign.util import valid_frame_mask

__all__ = ["VARIANTS", "grad_score_matrix", "grad_align"]

VARIANTS = ("grad", "gradext")
"""GradScore (eq. 24-25) and GradScoreExt (eq. 43-48)."""


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

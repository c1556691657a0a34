"""Label log-probabilities per transcript position: CTC prefix scores, AED, hybrid.

Section 5 of the paper scores every transcript position ``s`` with the
conditional label log-probability ``log p(a_s | a_1^{s-1}, x)`` (eq. 22-23, 50).
This module computes these scores, differentiably w.r.t. the model outputs:

* :func:`ctc_prefix_log_probs` - CTC via prefix scores (eq. 23, Hori et al., 2017),
* :func:`aed_label_log_probs` - attention encoder-decoder, teacher-forced (EOS excluded),
* :func:`joint_label_log_probs` - the weighted hybrid of eq. 50.

Dimension symbols legend:
  B: batch size (number of utterances)
  T: number of frames of the CTC output (padded)
  C: number of CTC output columns (blank included)
  S: number of transcript positions (padded; ``S_b`` valid in utterance ``b``)
  V: AED output vocabulary size
"""
import math
from typing import Optional, Sequence, Tuple

import torch

from fsalign.util import check_blank, valid_frame_mask

__all__ = ["transcript_targets", "ctc_prefix_log_probs", "aed_label_log_probs", "joint_label_log_probs"]

_NEG_INF = -math.inf


def _log_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(exp(a) + exp(b))`` whose gradient is 0, not NaN, where both are -inf.

    ``torch.logaddexp(-inf, -inf)`` is -inf, but its backward computes
    ``exp(-inf - -inf) = NaN``; a NaN multiplied by a zero upstream gradient is
    still NaN and would poison the whole DP. The masks below keep it out.
    """
    both = (a == _NEG_INF) & (b == _NEG_INF)
    return torch.logaddexp(a.masked_fill(both, 0.0), b.masked_fill(both, 0.0)).masked_fill(both, _NEG_INF)


def _log_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``logsumexp`` over ``dim`` whose gradient is 0, not NaN, where all entries are -inf."""
    top = x.detach().amax(dim, keepdim=True)
    top = top.masked_fill(top == _NEG_INF, 0.0)
    total = (x - top).exp().sum(dim)
    empty = total == 0
    return (total.masked_fill(empty, 1.0).log() + top.squeeze(dim)).masked_fill(empty, _NEG_INF)


def _check_targets(targets: torch.Tensor, target_lengths: torch.Tensor, batch_size: int, what: str) -> torch.Tensor:
    """Validates (B, S) integer targets and (B,) lengths; returns the (B, S) validity mask."""
    if not isinstance(targets, torch.Tensor) or targets.dim() != 2 or targets.dtype.is_floating_point:
        raise ValueError(
            f"targets must be an integer tensor of shape (B, S), got "
            f"{getattr(targets, 'dtype', type(targets).__name__)} of shape {tuple(getattr(targets, 'shape', ()))}"
        )
    if targets.shape[0] != batch_size:
        raise ValueError(f"targets must have B={batch_size} rows (as {what}), got {targets.shape[0]}")
    target_lengths = torch.as_tensor(target_lengths, device=targets.device)
    return valid_frame_mask(target_lengths, targets.shape[1], batch_size=batch_size)


def transcript_targets(
    transcripts: Sequence[Sequence[Sequence[int]]], device=None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flattens word-structured transcripts to padded position targets.

    Args:
      transcripts: utterance -> words -> token ids.
      device: where the tensors go.

    Returns:
      ``(targets, target_lengths)``: LongTensor of shape (B, S) (padding 0)
      and LongTensor of shape (B,).
    """
    if isinstance(transcripts, (str, bytes)) or not isinstance(transcripts, Sequence):
        raise ValueError(
            "transcripts must be a list (utterances) of lists (words) of token-id lists, got "
            f"{type(transcripts).__name__}"
        )
    flat = []
    for b, words in enumerate(transcripts):
        if not isinstance(words, Sequence) or any(not isinstance(w, Sequence) for w in words):
            raise ValueError(
                f"utterance {b}: transcript must be a list of words, each a list of token ids, got {words!r}"
            )
        flat.append([int(t) for w in words for t in w])
    S = max((len(f) for f in flat), default=0)
    targets = torch.zeros(len(flat), S, dtype=torch.long)
    for b, f in enumerate(flat):
        targets[b, : len(f)] = torch.tensor(f, dtype=torch.long)
    lengths = torch.tensor([len(f) for f in flat], dtype=torch.long)
    return targets.to(device), lengths.to(device)


def ctc_prefix_log_probs(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    definition: str = "forward",
) -> torch.Tensor:
    """CTC label log-probabilities ``log p_CTC(a_s | a_1^{s-1}, x)`` from prefix scores (eq. 23).

    The prefix probability of ``a_1^s`` (Hori et al., 2017, the CTC prefix
    score ``psi``) is the probability that the emission of ``a_s`` *starts* at
    some frame ``t <= T`` right after the frames ``1..t-1`` produced exactly
    ``a_1^{s-1}``::

        P(a_1^s) = sum_{t=1}^{T} sum_{y_1^t : B(y_1^{t-1}) = a_1^{s-1}, B(y_1^t) = a_1^s}
                   prod_{tau<=t} p(y_tau | x)

    where ``B`` collapses repeats and removes blanks. The events are disjoint
    in ``t``, and with a locally normalised model the frames after ``t`` sum
    out, so ``P(a_1^s)`` is also the probability that the collapsed label
    sequence of a full alignment ``y_1^T`` *begins with* ``a_1^s``. Then::

        log p_CTC(a_s | a_1^{s-1}, x) = log P(a_1^s) - log P(a_1^{s-1}),   P(empty) = 1.

    (The sum over ``t`` in eq. 23 is this sum over the frame where ``a_s`` is
    first emitted; the log-probabilities of one utterance add up to
    ``log P(a_1^{S_b})``.) The DP is the CTC forward recursion over the states
    ``(eps, a_1, eps, ..., a_S, eps)``, vectorised over B and S and looped over
    time, in log space and in the dtype of ``log_probs``; gradients come from
    autograd and are NaN-free also where probabilities are 0.

    Args:
      log_probs: Tensor of shape (B, T, C), normalised per frame (any
        distribution: log_softmax, blank-separated, ...); padding frames are
        ignored, whatever their values.
      lengths: Tensor of shape (B,), valid frames per utterance, any order.
      targets: LongTensor of shape (B, S), token ids (columns other than
        ``blank``); entries at positions ``>= target_lengths[b]`` are ignored.
      target_lengths: Tensor of shape (B,), valid positions per utterance.
      blank: the blank column.
      definition: ``"onset"``: the prefix probability above (Hori et al.). ``"forward"``
        (default): eq. 23 read literally, the sum over ``t`` of the probability that ``y_1^t`` is a
        (complete) alignment of ``a_1^s``, i.e. the CTC forward variables of ``a_s`` and of
        the blank after it summed over ``t`` (footnote 7: "already part of the usual CTC
        loss calculation"); ``a_1^0`` sums the all-blank prefixes. Not a probability (the
        events overlap in ``t``), but its differences are the paper's label scores. Measured:
        its GradScore alignments are closer to the truth, on the exact synthetic model
        (mean word-boundary error 1.6 vs 3.0 frames) and on the recipe's CTC-char model
        (GradScoreExt TSE 32.5 vs 36.0 ms on the shipped dev set); see docs/gradscore.md.

    Returns:
      Tensor of shape (B, S), dtype of ``log_probs``: the conditional
      log-probability of every position; ``-inf`` where the prefix cannot fit
      into the frames (its probability is 0), ``0.0`` at padding positions.

    Raises:
      ValueError: on shapes, lengths or token ids that do not fit.
    """
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 3 or not log_probs.is_floating_point():
        raise ValueError(
            f"log_probs must be a floating point tensor of shape (B, T, C), got "
            f"{getattr(log_probs, 'dtype', type(log_probs).__name__)} of shape {tuple(getattr(log_probs, 'shape', ()))}"
        )
    B, T, C = log_probs.shape
    device = log_probs.device
    blank = check_blank(blank, C)
    lengths = torch.as_tensor(lengths, device=device)
    frame_valid = valid_frame_mask(lengths, T, batch_size=B)  # (B, T)
    targets = targets.to(device)
    pos_valid = _check_targets(targets, target_lengths, B, "log_probs")  # (B, S)
    S = targets.shape[1]
    if pos_valid.any():
        used = targets[pos_valid]
        if int(used.min()) < 0 or int(used.max()) >= C or bool((used == blank).any()):
            raise ValueError(
                f"targets must be token ids in [0, {C}) other than blank={blank}, got values "
                f"{sorted(set(used.tolist()))[:10]}"
            )
    if definition not in ("onset", "forward"):
        raise ValueError(f"definition must be 'onset' or 'forward', got {definition!r}")
    if S == 0:
        return log_probs.new_zeros(B, 0)

    # Padding frames become log 1: finite, so no NaN reaches the gradient; the
    # prefix sum below never reads them.
    lp = log_probs.masked_fill(~frame_valid[:, :, None], 0.0)
    tgt = targets.long().masked_fill(~pos_valid, blank)
    lp_label = lp.gather(2, tgt[:, None, :].expand(B, T, S))  # (B, T, S)
    lp_blank = lp[:, :, blank]  # (B, T)
    # a_s may follow a_{s-1} without a blank in between only when they differ
    no_skip = torch.ones(B, S, dtype=torch.bool, device=device)
    no_skip[:, 1:] = tgt[:, 1:] == tgt[:, :-1]

    neg_inf_col = log_probs.new_full((B, 1), _NEG_INF)
    # alpha_blank[:, s]: y_1^t collapses to a_1^s and ends in blank (s = 0: also the start state)
    alpha_blank = torch.cat([log_probs.new_zeros(B, 1), log_probs.new_full((B, S), _NEG_INF)], dim=1)
    # alpha_label[:, s-1]: y_1^t collapses to a_1^s and ends in a_s
    alpha_label = log_probs.new_full((B, S), _NEG_INF)
    # per-frame views via unbind: its backward stacks once (slicing [:, t] would
    # allocate and fill a (B, T, S) gradient at every frame)
    steps = range(int(lengths.max()) if B else 0)
    label_t, blank_t = lp_label.unbind(1), lp_blank.unbind(1)
    per_frame = []  # onset: the entries into a_s at t; forward: the alignments of a_1^s ending at t
    for t in steps:
        from_label = torch.cat([neg_inf_col, alpha_label[:, :-1]], dim=1).masked_fill(no_skip, _NEG_INF)
        enter = _log_add(alpha_blank[:, :S], from_label) + label_t[t]  # a_s first emitted at t
        new_blank = _log_add(alpha_blank[:, 1:], alpha_label)
        alpha_label = _log_add(alpha_label + label_t[t], enter)
        alpha_blank = torch.cat([alpha_blank[:, :1], new_blank], dim=1) + blank_t[t][:, None]
        if definition == "onset":
            per_frame.append(enter)
        else:  # y_1^t aligns a_1^s (s = 0..S): ends in a_s or in the blank after it
            per_frame.append(torch.cat([alpha_blank[:, :1], _log_add(alpha_blank[:, 1:], alpha_label)], dim=1))
    first = log_probs.new_zeros(B, 1)
    if not per_frame:
        prefix = log_probs.new_full((B, S), _NEG_INF)
    else:
        stacked = torch.stack(per_frame, dim=1).masked_fill(~frame_valid[:, : len(per_frame), None], _NEG_INF)
        prefix = _log_sum(stacked, dim=1)  # onset: log P(a_1^s), s = 1..S; forward: s = 0..S
        if definition == "forward":
            first, prefix = prefix[:, :1], prefix[:, 1:]

    previous = torch.cat([first, prefix[:, :-1]], dim=1)
    impossible = prefix == _NEG_INF
    # P(a_1^s) > 0 implies P(a_1^{s-1}) > 0, so masking impossible positions avoids -inf - -inf
    cond = (prefix - previous.masked_fill(previous == _NEG_INF, 0.0)).masked_fill(impossible, _NEG_INF)
    return cond.masked_fill(~pos_valid, 0.0)


def aed_label_log_probs(
    decoder_log_probs: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
) -> torch.Tensor:
    """Teacher-forced AED label log-probabilities ``log p_AED(a_s | a_1^{s-1}, x)`` (eq. 7, 22).

    The end-of-sequence label is excluded (section 5): only the rows that
    predict transcript tokens are read.

    Args:
      decoder_log_probs: Tensor of shape (B, S', V) with S' >= S, normalised
        over V; row ``s`` is the decoder output after reading ``a_1^s``
        (row 0 after BOS only), so it predicts ``a_{s+1}``. A row S_b (EOS)
        may be present; it is not used.
      targets: LongTensor of shape (B, S), token ids in [0, V).
      target_lengths: Tensor of shape (B,), valid positions per utterance.

    Returns:
      Tensor of shape (B, S), dtype of ``decoder_log_probs``, ``0.0`` at
      padding positions.

    Raises:
      ValueError: on shapes or token ids that do not fit.
    """
    if (
        not isinstance(decoder_log_probs, torch.Tensor)
        or decoder_log_probs.dim() != 3
        or not decoder_log_probs.is_floating_point()
    ):
        raise ValueError(
            f"decoder_log_probs must be a floating point tensor of shape (B, S+1, V), got shape "
            f"{tuple(getattr(decoder_log_probs, 'shape', ()))}"
        )
    B, S_dec, V = decoder_log_probs.shape
    targets = targets.to(decoder_log_probs.device)
    pos_valid = _check_targets(targets, target_lengths, B, "decoder_log_probs")
    S = targets.shape[1]
    if S_dec < S:
        raise ValueError(f"decoder_log_probs must have at least S={S} rows per utterance, got {S_dec}")
    tgt = targets.long().masked_fill(~pos_valid, 0)
    if pos_valid.any() and (int(tgt.min()) < 0 or int(tgt.max()) >= V):
        raise ValueError(
            f"targets must be in [0, {V}) (the AED vocabulary), got min {int(tgt.min())} max {int(tgt.max())}"
        )
    picked = decoder_log_probs[:, :S].gather(2, tgt[:, :, None]).squeeze(2)
    return picked.masked_fill(~pos_valid, 0.0)


def joint_label_log_probs(
    ctc: Optional[torch.Tensor],
    aed: Optional[torch.Tensor],
    ctc_weight: float,
    aed_weight: float,
) -> torch.Tensor:
    """The hybrid score of eq. 50: ``λ_CTC · log p_CTC + λ_AED · log p_AED`` per position.

    A term with weight 0 is left out entirely (so ``-inf`` in it cannot turn
    into NaN and it may be None). The paper uses ``λ_CTC + λ_AED = 1``; any
    non-negative pair works, and for GradScore only their ratio matters
    (a common factor shifts ``G`` by a constant per label, which the softmax
    over time removes).

    Args:
      ctc: Tensor of shape (B, S) from :func:`ctc_prefix_log_probs`, or None
        when ``ctc_weight == 0``.
      aed: Tensor of shape (B, S) from :func:`aed_label_log_probs`, or None
        when ``aed_weight == 0``.
      ctc_weight: λ_CTC >= 0.
      aed_weight: λ_AED >= 0; not both 0.

    Returns:
      Tensor of shape (B, S).
    """
    if ctc_weight < 0 or aed_weight < 0 or ctc_weight + aed_weight == 0:
        raise ValueError(
            f"ctc_weight and aed_weight must be >= 0 and not both 0, got {ctc_weight} and {aed_weight}"
        )
    terms = []
    for name, score, weight in (("ctc", ctc, ctc_weight), ("aed", aed, aed_weight)):
        if weight == 0:
            continue
        if score is None:
            raise ValueError(f"{name}_weight={weight} needs the {name} scores, got None")
        terms.append(score if weight == 1.0 else weight * score)
    if len(terms) == 2 and terms[0].shape != terms[1].shape:
        raise ValueError(
            f"ctc and aed scores must have the same shape (B, S), got {tuple(ctc.shape)} and {tuple(aed.shape)}"
        )
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]

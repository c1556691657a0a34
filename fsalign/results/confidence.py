"""Word and token confidence: the mean frame probability of the aligned token along the best path.

Dimension symbols used in this module:
  T: frames of one utterance
  K: columns of the frame distribution (the score matrix's columns that a frame's softmax runs over)

The definition (its one home; :meth:`fsalign.scores.matrix.ScoreMatrix.frame_confidences` computes
the frame part of it):

* the *frame probability* of frame ``t`` is ``p_t(l_t)``, where ``l_t = Alignment.labels[t]`` is the
  column the best path gives frame ``t`` and ``p_t = softmax`` over the frame's distribution
  columns of the score matrix. For posterior matrices these are the model's columns, so ``p_t`` is
  the model's own frame posterior (``exp`` of its log-probability, as torchaudio's MMS aligner
  and ctc-forced-aligner report it): the blank penalty is taken out again, the path-score scales
  (α, the prior β, γ) are never in it, and the garbage column of an alignment allowing a
  mismatching transcript is not one of them. For gradient-score matrices (GradScore,
  GradScoreExt) the columns are the blank and the utterance's own transcript positions, and
  ``p_t`` is the score normalised over them at the frame: the share of the frame that the
  aligned position claims against the other positions and the blank (GradScoreExt's scores are
  already this softmax, eq. 47);
* the confidence of a word (or token) is the mean of the frame probabilities over the frames of
  its span ``[start, end)`` whose label is a token column (not one of the topology's
  ``non_token_labels``: blank, silence, garbage), so a long blank inside a word neither raises
  nor lowers it. A span without such a frame (impossible for the built-in topologies) takes the
  mean over all its frames. Values are in [0, 1], rounded to :data:`CONFIDENCE_DIGITS` decimals
  so that every format stores them exactly;
* a word as written (``UtteranceTimes.written``, e.g. ``"1999"`` spoken as three words) takes the
  *minimum* of its spoken words' confidences: a written token is wrong if any of its words is,
  and a mean would let two good words hide a wrong third one.

A low confidence (below :data:`LOW_CONFIDENCE`) says that the model hears something other than the
transcript's word there: a transcript error, a mispronunciation, noise, or a model that does not
know the word. :func:`roc_auc` measures how well a score separates two groups, and
:func:`substitute_words` corrupts transcripts to measure it (the confidence of the correct and of
the substituted words).
"""
import random
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["CONFIDENCE_DIGITS", "LOW_CONFIDENCE", "label_probabilities", "span_confidences", "written_confidence",
           "roc_auc", "substitute_words"]

CONFIDENCE_DIGITS = 4
"""Decimals of a stored confidence (CTM column, TextGrid tier, cuts, journal)."""

LOW_CONFIDENCE = 0.5
"""Words below this confidence are listed as low-confidence words in the reports."""


def label_probabilities(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``softmax(scores[t])[labels[t]]`` of every frame.

    Args:
      scores: Tensor of shape (T, K): the frame distribution's columns of one utterance.
      labels: LongTensor of shape (T,): the column of every frame; one outside [0, K) (e.g. a garbage
        column) gets NaN.

    Returns:
      Tensor of shape (T,), float64, on the device of ``scores``.
    """
    labels = torch.as_tensor(labels, device=scores.device).long()
    T, K = scores.shape
    if labels.shape != (T,):
        raise ValueError(f"labels must have shape ({T},), got {tuple(labels.shape)}")
    log_p = scores.double().log_softmax(dim=-1)
    inside = (labels >= 0) & (labels < K)
    picked = log_p.gather(1, labels.clamp(0, max(K - 1, 0))[:, None])[:, 0] if K else log_p.new_zeros(T)
    return torch.where(inside, picked.exp(), torch.full_like(picked, float("nan")))


def span_confidences(probs: torch.Tensor, labels: torch.Tensor, spans: Sequence,
                     non_token_labels: Sequence[int]) -> List[float]:
    """The confidence of every span (module docstring): the mean frame probability over its token frames.

    Args:
      probs: Tensor of shape (T,): the frame probabilities (:func:`label_probabilities`).
      labels: LongTensor of shape (T,): the best path's column of every frame.
      spans: token or word spans of the alignment (anything with frames ``start``, ``end``: ``[start, end)``).
      non_token_labels: the columns that are no token (blank, silence, garbage).

    Returns:
      One confidence per span, in [0, 1], rounded to :data:`CONFIDENCE_DIGITS` decimals.
    """
    probs = probs.detach().double().cpu()
    labels = torch.as_tensor(labels).long().cpu()
    is_token = ~torch.isin(labels, torch.tensor(list(non_token_labels), dtype=torch.long)) & ~torch.isnan(probs)
    values = torch.where(is_token, probs, torch.zeros_like(probs))
    # prefix sums: the mean over any span in O(1)
    sums = torch.cat([values.new_zeros(1), values.cumsum(0)])
    counts = torch.cat([values.new_zeros(1), is_token.double().cumsum(0)])
    fallback = torch.nan_to_num(probs, nan=0.0)
    all_sums = torch.cat([values.new_zeros(1), fallback.cumsum(0)])
    out = []
    for span in spans:
        s, e = int(span.start), int(span.end)
        n = float(counts[e] - counts[s])
        if n > 0:
            mean = float(sums[e] - sums[s]) / n
        else:
            mean = float(all_sums[e] - all_sums[s]) / max(e - s, 1)
        out.append(round(min(1.0, max(0.0, mean)), CONFIDENCE_DIGITS))
    return out


def written_confidence(spoken: Sequence[Optional[float]]) -> Optional[float]:
    """The confidence of a written word: the minimum over its spoken words (None where none is known)."""
    known = [c for c in spoken if c is not None]
    return min(known) if known else None


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """The area under the ROC curve of a score separating ``positive`` from ``negative`` items.

    The Mann-Whitney form: the probability that a random positive item scores higher than a random
    negative one, ties counting one half, ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with
    ``R_pos`` the sum of the positive items' ranks among all (tied items share their mean rank).
    1 separates perfectly, 0.5 is chance.

    Raises:
      ValueError: a group is empty.
    """
    if not len(positive) or not len(negative):
        raise ValueError(f"AUC needs items in both groups, got {len(positive)} positive and {len(negative)} negative")
    values = torch.tensor(list(positive) + list(negative), dtype=torch.float64)
    order = torch.argsort(values)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    sorted_values = values[order]
    start = 0
    for k in range(1, len(values) + 1):  # tied runs share their mean rank
        if k == len(values) or sorted_values[k] != sorted_values[start]:
            ranks[order[start:k]] = (start + 1 + k) / 2
            start = k
    n_pos, n_neg = len(positive), len(negative)
    r_pos = float(ranks[:n_pos].sum())
    return (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def substitute_words(transcripts: Sequence[Sequence[str]], fraction: float = 0.1,
                     seed: int = 0) -> Tuple[List[List[str]], List[List[bool]]]:
    """Transcripts with ``fraction`` of all their words replaced by other words of the same transcripts.

    ``round(fraction * number of words)`` word places are drawn without replacement (seeded), and
    each gets a word of the transcripts' vocabulary other than the one it had, drawn uniformly.

    Returns:
      (the edited transcripts, per word whether it was substituted).

    Raises:
      ValueError: ``fraction`` outside [0, 1], or a vocabulary of fewer than two words.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    vocabulary = sorted({w for words in transcripts for w in words})
    if len(vocabulary) < 2:
        raise ValueError(f"substituting words needs at least 2 different words, got {len(vocabulary)}")
    rng = random.Random(seed)
    places = [(u, i) for u, words in enumerate(transcripts) for i in range(len(words))]
    chosen = set(rng.sample(places, round(fraction * len(places))))
    edited, substituted = [], []
    for u, words in enumerate(transcripts):
        flags = [(u, i) in chosen for i in range(len(words))]
        edited.append([rng.choice([v for v in vocabulary if v != w]) if f else w for w, f in zip(words, flags)])
        substituted.append(flags)
    return edited, substituted

"""Alignment and recognition metrics of appendix A.4.2.

Every metric is "calculated over a set of sequences", so each function returns
an additive statistic (sums and counts): add the results of several batches
with ``+`` and read ``.value`` (or the named properties) at the end.

* framewise cross entropy w.r.t. a reference alignment (eq. 12/18), per frame;
* average blank/silence posterior E p(eps|x);
* label/word error rate (N_sub + N_ins + N_del) / N_ref, via kaldialign;
* time stamp error (TSE): boundary ("LR") and centre variants, mean absolute and signed start and
  end errors, the share of boundaries within a tolerance;
* silence ratio (audio in no word) and blank ratio (audio in no token) of an alignment,
  and average token duration.

Dimension symbols legend:
  B: batch size
  T: number of frames (padded)
  C: number of score-matrix columns
"""
from dataclasses import dataclass
from typing import Hashable, List, Sequence, Tuple, Union

import kaldialign
import torch

from fsalign.util import check_blank, valid_frame_mask

__all__ = [
    "Average",
    "ErrorStats",
    "TimeStampError",
    "framewise_ce",
    "framewise_nll",
    "check_ref_labels",
    "blank_posterior",
    "error_rate",
    "word_error_rate",
    "collapse_ctc",
    "greedy_decode",
    "time_stamp_error",
    "silence_ratio",
    "blank_ratio",
    "uncovered",
    "average_token_duration",
]

# A span is (start, end) or any object with .start and .end (fsalign.WordSpan, TokenSpan).
Span = Union[Tuple[float, float], object]
LabelSequences = Union[torch.Tensor, Sequence[Sequence[int]]]


@dataclass(frozen=True)
class Average:
    """A mean over a set of items: ``total / count`` (NaN when empty); ``count`` may be a weight."""

    total: float
    count: float

    @property
    def value(self) -> float:
        """``total / count``, NaN when ``count`` is 0."""
        return self.total / self.count if self.count else float("nan")

    def __add__(self, other: "Average") -> "Average":
        return Average(self.total + other.total, self.count + other.count)

    def __float__(self) -> float:
        return self.value


@dataclass(frozen=True)
class ErrorStats:
    """Edit-distance counts; ``rate`` = (sub + ins + del) / ref_length (A.4.2)."""

    substitutions: int
    insertions: int
    deletions: int
    ref_length: int

    @property
    def errors(self) -> int:
        """Total number of edits: substitutions + insertions + deletions."""
        return self.substitutions + self.insertions + self.deletions

    @property
    def rate(self) -> float:
        """Error rate as a fraction (multiply by 100 for %); inf if the references are empty but not the hyps."""
        if self.ref_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.ref_length

    def __add__(self, other: "ErrorStats") -> "ErrorStats":
        return ErrorStats(
            self.substitutions + other.substitutions,
            self.insertions + other.insertions,
            self.deletions + other.deletions,
            self.ref_length + other.ref_length,
        )


@dataclass(frozen=True)
class TimeStampError:
    """Sums behind the TSE and the boundary errors over a set of sequences, in the unit of the spans.

    Δ is hypothesis minus reference: a positive Δstart is a word that starts late.

    Attributes:
      boundary_sum: sum over words of |Δstart| + |Δend|.
      centre_sum: sum over words of |Δcentre|, centre = (start + end) / 2.
      num_words: number of words.
      onset_sum, offset_sum: sums over words of |Δstart| and of |Δend|.
      onset_bias_sum, offset_bias_sum: sums over words of Δstart and of Δend (signed).
      tolerances: the tolerances τ of ``within``.
      within: per tolerance, the boundaries (each word's start and its end) with |Δ| <= τ.
    """

    boundary_sum: float
    centre_sum: float
    num_words: int
    onset_sum: float = 0.0
    offset_sum: float = 0.0
    onset_bias_sum: float = 0.0
    offset_bias_sum: float = 0.0
    tolerances: Tuple[float, ...] = ()
    within: Tuple[int, ...] = ()

    def _mean(self, total: float) -> float:
        return total / self.num_words if self.num_words else float("nan")

    @property
    def boundary(self) -> float:
        """TSE of A.4.2 ("LR" in Tables 3-6): boundary_sum / (2 num_words)."""
        return self.boundary_sum / (2 * self.num_words) if self.num_words else float("nan")

    @property
    def centre(self) -> float:
        """Centre TSE ("Center" in Tables 3-6): centre_sum / num_words."""
        return self._mean(self.centre_sum)

    @property
    def onset_offset(self) -> Tuple[float, float]:
        """(mean |Δstart|, mean |Δend|): the mean absolute onset and offset errors."""
        return self._mean(self.onset_sum), self._mean(self.offset_sum)

    @property
    def bias(self) -> Tuple[float, float]:
        """(mean Δstart, mean Δend): the signed onset and offset errors (> 0: the hypothesis is late)."""
        return self._mean(self.onset_bias_sum), self._mean(self.offset_bias_sum)

    @property
    def within_share(self) -> Tuple[float, ...]:
        """Per tolerance, the share of the 2 num_words boundaries with |Δ| <= τ (NaN without words)."""
        return tuple(n / (2 * self.num_words) if self.num_words else float("nan") for n in self.within)

    def __add__(self, other: "TimeStampError") -> "TimeStampError":
        if self.tolerances != other.tolerances:  # fine when one side is empty (all its sums are 0)
            if self.num_words and other.num_words:
                raise ValueError(f"cannot add time stamp errors with tolerances {self.tolerances} and "
                                 f"{other.tolerances}")
            return other if other.num_words else self
        return TimeStampError(
            self.boundary_sum + other.boundary_sum, self.centre_sum + other.centre_sum,
            self.num_words + other.num_words, self.onset_sum + other.onset_sum, self.offset_sum + other.offset_sum,
            self.onset_bias_sum + other.onset_bias_sum, self.offset_bias_sum + other.offset_bias_sum,
            self.tolerances, tuple(a + b for a, b in zip(self.within, other.within)),
        )


def _frame_mask(log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be a tensor of shape (B, T, C), got {tuple(log_probs.shape)}")
    return valid_frame_mask(lengths.to(log_probs.device), log_probs.shape[1], batch_size=log_probs.shape[0])


def check_ref_labels(ref_labels: torch.Tensor, mask: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Validates a reference alignment against the valid-frame ``mask`` (B, T); returns it as int64.

    Raises:
      ValueError: a shape other than ``mask``'s, or a label on a valid frame outside ``[0, num_labels)``.
    """
    if ref_labels.shape != mask.shape:
        raise ValueError(f"ref_labels must have shape (B, T) = {tuple(mask.shape)}, got {tuple(ref_labels.shape)}")
    ref_labels = ref_labels.to(mask.device).long()
    valid = ref_labels[mask]
    if valid.numel() > 0 and (int(valid.min()) < 0 or int(valid.max()) >= num_labels):
        raise ValueError(
            f"ref_labels on valid frames must be in [0, {num_labels}), "
            f"got min {int(valid.min())} max {int(valid.max())}"
        )
    return ref_labels


def framewise_nll(log_probs: torch.Tensor, lengths: torch.Tensor, ref_labels: torch.Tensor) -> torch.Tensor:
    """Framewise cross entropy w.r.t. a reference alignment (eq. 12, 18), summed per sequence, differentiable.

    Args:
      log_probs: Tensor of shape (B, T, C), normalised log-probabilities.
      lengths: Tensor of shape (B,).
      ref_labels: LongTensor of shape (B, T), reference column per frame (padding ignored).

    Returns:
      Tensor of shape (B,): -sum_t log p(ref_t | x_t) over the valid frames.
    """
    mask = _frame_mask(log_probs, lengths)
    ref = check_ref_labels(ref_labels, mask, log_probs.shape[-1])
    picked = log_probs.gather(-1, ref.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -torch.where(mask, picked, torch.zeros_like(picked)).sum(dim=1)


@torch.no_grad()
def framewise_ce(log_probs: torch.Tensor, lengths: torch.Tensor, ref_labels: torch.Tensor) -> Average:
    """Framewise cross entropy per frame ("Fw. CE" in Tables 1, 10-13, A.4.2): :func:`framewise_nll` averaged.

    ``total`` is -sum_t log p(ref_t | x_t) over the valid frames, ``count`` the number of frames.

    Args:
      log_probs: Tensor of shape (B, T, C), normalised log-probabilities.
      lengths: Tensor of shape (B,).
      ref_labels: LongTensor of shape (B, T), reference column per frame (padding ignored).
    """
    nll = framewise_nll(log_probs.double(), lengths, ref_labels)
    return Average(float(nll.sum()), int(lengths.sum()))


@torch.no_grad()
def blank_posterior(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> Average:
    """Average blank/silence posterior E p(eps|x) = (1/T) sum_t p(y_t = eps | x) (A.4.2).

    Args:
      log_probs: Tensor of shape (B, T, C).
      lengths: Tensor of shape (B,).
      blank: blank/silence column.
    """
    mask = _frame_mask(log_probs, lengths)
    blank = check_blank(blank, log_probs.shape[-1])
    return Average(float(log_probs[..., blank][mask].double().exp().sum()), int(mask.sum()))


def error_rate(refs: Sequence[Sequence[Hashable]], hyps: Sequence[Sequence[Hashable]]) -> ErrorStats:
    """Levenshtein counts summed over pairs of label (LER) or word (WER) sequences (A.4.2).

    Args:
      refs: reference sequences (labels, words, any hashable symbols).
      hyps: recognised sequences, parallel to ``refs``.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"need one hypothesis per reference, got {len(refs)} references and {len(hyps)} hypotheses")
    stats = ErrorStats(0, 0, 0, 0)
    for ref, hyp in zip(refs, hyps):
        result = kaldialign.edit_distance(list(ref), list(hyp))
        stats = stats + ErrorStats(result["sub"], result["ins"], result["del"], len(ref))
    return stats


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> ErrorStats:
    """WER counts of whitespace-separated transcripts (see :func:`error_rate`)."""
    return error_rate([r.split() for r in refs], [h.split() for h in hyps])


def collapse_ctc(labels: Sequence[int], blank: int = 0) -> List[int]:
    """Label sequence of a CTC path: merge repeated labels, then drop blanks."""
    out: List[int] = []
    previous = None
    for label in labels:
        label = int(label)
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return out


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> List[List[int]]:
    """Best-path decoding: per-frame argmax over valid frames, then :func:`collapse_ctc`.

    Args:
      log_probs: Tensor of shape (B, T, C) (any monotone scores work).
      lengths: Tensor of shape (B,).
      blank: the blank/silence column to drop.

    Returns:
      B label sequences.
    """
    best = log_probs.argmax(dim=-1).cpu()
    return [collapse_ctc(best[b, :n].tolist(), blank=blank) for b, n in enumerate(lengths.tolist())]


def _bounds(span: Span) -> Tuple[float, float]:
    if hasattr(span, "start") and hasattr(span, "end"):
        return float(span.start), float(span.end)
    start, end = span
    return float(start), float(end)


def time_stamp_error(ref: Sequence[Sequence[Span]], hyp: Sequence[Sequence[Span]],
                     tolerances: Sequence[float] = ()) -> TimeStampError:
    """Time stamp error and boundary errors of word spans w.r.t. a reference alignment (A.4.2).

    TSE = sum_w (|start_ref - start_hyp| + |end_ref - end_hyp|) / (2 N_words)
    (``.boundary``), and the centre variant sum_w |centre_ref - centre_hyp| / N_words
    (``.centre``); the mean absolute and signed start and end errors (``.onset_offset``,
    ``.bias``) and, per tolerance τ, the share of
    boundaries (a word's start and its end, 2 N_words in all) with |Δ| <= τ (``.within_share``;
    to a relative 1e-9, so that times of whole milliseconds 10 ms apart are within 10 ms).
    Units are those of the spans: frames (synthetic data) or seconds; both sides must use the
    same unit and end convention. Applied to the tokens of matched words it is the token
    boundary error (:func:`fsalign.results.compare.compare_alignments`).

    Args:
      ref: per sequence, the reference word spans: (start, end) pairs or objects
        with ``.start``/``.end`` (e.g. ``Alignment.words``).
      hyp: per sequence, the model's word spans; same number of words as ``ref``.
      tolerances: the τ of ``within``, in the unit of the spans (none by default).
    """
    if len(ref) != len(hyp):
        raise ValueError(f"need the same number of sequences, got {len(ref)} references and {len(hyp)} hypotheses")
    tolerances = tuple(float(t) for t in tolerances)
    boundary, centre, count = 0.0, 0.0, 0
    onset = offset = onset_bias = offset_bias = 0.0
    within = [0] * len(tolerances)
    for index, (ref_words, hyp_words) in enumerate(zip(ref, hyp)):
        if len(ref_words) != len(hyp_words):
            raise ValueError(
                f"sequence {index}: the reference has {len(ref_words)} words, the hypothesis {len(hyp_words)}"
            )
        for ref_span, hyp_span in zip(ref_words, hyp_words):
            (rs, re), (hs, he) = _bounds(ref_span), _bounds(hyp_span)
            boundary += abs(rs - hs) + abs(re - he)
            centre += abs((rs + re) - (hs + he)) / 2
            onset, offset = onset + abs(hs - rs), offset + abs(he - re)
            onset_bias, offset_bias = onset_bias + (hs - rs), offset_bias + (he - re)
            for k, tol in enumerate(tolerances):
                within[k] += (abs(hs - rs) <= tol * (1 + 1e-9)) + (abs(he - re) <= tol * (1 + 1e-9))
            count += 1
    return TimeStampError(boundary, centre, count, onset, offset, onset_bias, offset_bias, tolerances, tuple(within))


def uncovered(spans: Sequence[Span], duration: float) -> float:
    """How much of [0, duration] the union of ``spans`` leaves uncovered (frames or seconds)."""
    total, reach = 0.0, 0.0
    for start, end in sorted(map(_bounds, spans)):
        start, end = max(start, reach, 0.0), min(end, duration)
        if end > start:
            total += end - start
        reach = max(reach, min(end, duration))
    return duration - total


def _share_uncovered(spans: Sequence[Sequence[Span]], durations: Sequence[float], what: str) -> Average:
    if len(spans) != len(durations):
        raise ValueError(f"need one duration per sequence of {what}, got {len(durations)} for {len(spans)}")
    return Average(float(sum(uncovered(seq, d) for seq, d in zip(spans, durations))), float(sum(durations)))


def silence_ratio(words: Sequence[Sequence[Span]], durations: Sequence[float]) -> Average:
    """Silence ratio: the share of the audio covered by no word (A.4.2's "amount of silence").

    Args:
      words: per sequence, its word spans ((start, end) or objects with ``.start``/``.end``).
      durations: per sequence, its length (same unit: frames or seconds).

    Returns:
      :class:`Average` of uncovered length over total length.
    """
    return _share_uncovered(words, durations, "words")


def blank_ratio(tokens: Sequence[Sequence[Span]], durations: Sequence[float]) -> Average:
    """Blank ratio: the share of the audio covered by no token ("Sil. ratio" / "Si/B" of Tables 2-5).

    For a Viterbi alignment the token spans are exactly the frames aligned to a token, so
    over frames (``[a.tokens for a in alignments]``, ``[a.num_frames for ...]``) this is the
    share of frames aligned to blank (CTC) or silence (HMM); unlike :func:`silence_ratio` it
    counts the blank frames inside a CTC word as silence.

    Args:
      tokens: per sequence, its token spans.
      durations: per sequence, its length (same unit).

    Returns:
      :class:`Average` of uncovered length over total length.
    """
    return _share_uncovered(tokens, durations, "tokens")


def average_token_duration(spans: Sequence[Sequence[Span]]) -> Average:
    """Mean token duration ("Phon." in Tables 2 and 9): mean of end - start over all tokens.

    Args:
      spans: per sequence, token spans ((start, end) pairs or objects with
        ``.start``/``.end``, e.g. ``Alignment.tokens``), in frames or seconds.
    """
    durations = [end - start for seq in spans for start, end in map(_bounds, seq)]
    return Average(float(sum(durations)), len(durations))

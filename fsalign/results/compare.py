"""Comparing two alignments of the same utterances: time stamp error, silence and durations (A.4.2).

:func:`compare_alignments` is what ``fsalign tse`` reports; it takes the
:class:`~fsalign.results.times.UtteranceTimes` that :func:`fsalign.results.formats.read_utterances`
reads from any alignment format.
"""
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional

from fsalign.results.metrics import (
    Average,
    TimeStampError,
    average_token_duration,
    time_stamp_error,
    uncovered,
)

__all__ = ["AlignmentComparison", "SideStats", "compare_alignments", "word_mismatch"]


@dataclass
class SideStats:
    """Statistics of one side (reference or hypothesis) over the compared utterances.

    Attributes:
      silence_ratio: seconds covered by no word / total seconds
        (:func:`~fsalign.results.metrics.silence_ratio`; None without utterances).
      blank_ratio: seconds covered by no token / total seconds
        (:func:`~fsalign.results.metrics.blank_ratio`), where every compared utterance of this
        side has token times (else None). For a CTC alignment the token spans are the frames
        that emit a label, so this is the paper's "Sil. ratio" (the share of blank frames,
        Table 14), while ``silence_ratio`` counts blank frames inside a word as speech.
      word_duration_ms: mean word duration.
      token_duration_ms: mean token duration (None if this side has no token times).
      num_tokens: tokens behind ``token_duration_ms``.
    """

    silence_ratio: Optional[float] = None
    blank_ratio: Optional[float] = None
    word_duration_ms: Optional[float] = None
    token_duration_ms: Optional[float] = None
    num_tokens: int = 0


@dataclass
class AlignmentComparison:
    """What :func:`compare_alignments` measures (times in milliseconds).

    Attributes:
      tse_boundary_ms: TSE of A.4.2: sum over words of |Δstart| + |Δend|, over 2 N_words.
      tse_centre_ms: mean |Δcentre| over words.
      num_words: words compared.
      num_utterances: utterances compared (same word sequence on both sides).
      ref, hyp: :class:`SideStats` of each side over the compared utterances.
      durations_from_word_ends: compared utterances whose length neither side gave (two
        CTMs): their length is the later of the two last word ends.
      skipped: utterance id -> why it was not compared (word sequences differ).
      only_in_ref, only_in_hyp: utterance ids present on one side only.
    """

    tse_boundary_ms: Optional[float]
    tse_centre_ms: Optional[float]
    num_words: int
    num_utterances: int
    ref: SideStats
    hyp: SideStats
    durations_from_word_ends: int = 0
    skipped: Dict[str, str] = field(default_factory=dict)
    only_in_ref: List[str] = field(default_factory=list)
    only_in_hyp: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable dict of the fields, nested :class:`SideStats` included."""
        return asdict(self)


def word_mismatch(ref_words: List[str], hyp_words: List[str]) -> Optional[str]:
    """Why two word sequences cannot be compared word by word (None when they are equal)."""
    if ref_words == hyp_words:
        return None
    if len(ref_words) != len(hyp_words):
        return f"words differ: {len(ref_words)} in the reference, {len(hyp_words)} in the hypothesis"
    i = next(i for i, (r, h) in enumerate(zip(ref_words, hyp_words)) if r != h)
    return f"words differ: word {i + 1} is {ref_words[i]!r} in the reference, {hyp_words[i]!r} in the hypothesis"


def compare_alignments(ref: Mapping, hyp: Mapping) -> AlignmentComparison:
    """Time stamp error and silence/duration statistics of ``hyp`` w.r.t. ``ref`` (A.4.2).

    Utterances are matched by id. One whose word sequences differ (compared
    case-insensitively, silence already dropped by the readers) is skipped and listed;
    the TSE needs a one-to-one word correspondence. The silence ratio of a side is the
    fraction of the compared utterances' length covered by none of its words; an
    utterance's length is the reference's duration, else the hypothesis', else (two CTMs)
    the later of the two last word ends (so leading silence counts, trailing silence after
    the later side's last word does not).

    Args:
      ref: utterance id -> :class:`fsalign.results.times.UtteranceTimes` (reference).
      hyp: utterance id -> :class:`fsalign.results.times.UtteranceTimes` (hypothesis).

    Returns:
      :class:`AlignmentComparison`.
    """
    result = AlignmentComparison(None, None, 0, 0, SideStats(), SideStats())
    result.only_in_ref = [u for u in ref if u not in hyp]
    result.only_in_hyp = [u for u in hyp if u not in ref]
    tse = TimeStampError(0.0, 0.0, 0)
    silence = {"ref": 0.0, "hyp": 0.0}
    token_silence = {"ref": 0.0, "hyp": 0.0}
    all_tokens = {"ref": True, "hyp": True}
    length = 0.0
    words = {"ref": Average(0.0, 0), "hyp": Average(0.0, 0)}
    tokens = {"ref": Average(0.0, 0), "hyp": Average(0.0, 0)}
    for utt_id, r in ref.items():
        h = hyp.get(utt_id)
        if h is None:
            continue
        reason = word_mismatch([w.label.casefold() for w in r.words], [w.label.casefold() for w in h.words])
        if reason is not None:
            result.skipped[utt_id] = reason
            continue
        tse = tse + time_stamp_error([r.words], [h.words])
        duration = r.duration if r.duration is not None else h.duration
        if duration is None:
            duration = max([w.end for w in r.words + h.words] + [0.0])
            result.durations_from_word_ends += 1
        length += duration
        for side, utt in (("ref", r), ("hyp", h)):
            silence[side] += uncovered(utt.words, duration)
            if utt.tokens:
                token_silence[side] += uncovered(utt.tokens, duration)
            elif utt.words:  # words but no token times: no token-level ratio for this side
                all_tokens[side] = False
            words[side] = words[side] + average_token_duration([utt.words])
            tokens[side] = tokens[side] + average_token_duration([utt.tokens])
        result.num_utterances += 1
    result.num_words = tse.num_words
    if tse.num_words:
        result.tse_boundary_ms, result.tse_centre_ms = 1000 * tse.boundary, 1000 * tse.centre
    for side, stats in (("ref", result.ref), ("hyp", result.hyp)):
        stats.silence_ratio = silence[side] / length if length > 0 else None
        stats.blank_ratio = token_silence[side] / length if length > 0 and all_tokens[side] else None
        stats.word_duration_ms = 1000 * words[side].value if words[side].count else None
        stats.token_duration_ms = 1000 * tokens[side].value if tokens[side].count else None
        stats.num_tokens = tokens[side].count
    return result

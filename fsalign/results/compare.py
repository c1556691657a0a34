"""Comparing two alignments of the same utterances: word and token boundary errors, silence, durations (A.4.2).

:func:`compare_alignments` (one :class:`AlignmentComparer` over two mappings) is what ``fsalign
tse`` reports, and the same comparer scores the dev alignment of training (``EXP/eval.json``) and
``fsalign align-corpus --reference`` (its report); :func:`error_lines` prints the error numbers
for all three. It takes the :class:`~fsalign.results.times.UtteranceTimes` that
:func:`fsalign.results.formats.read_utterances` reads from any alignment format.

Words are matched by their sequence: an utterance whose words differ is skipped. Tokens (phones,
characters, pieces) are matched within matched words: a token belongs to the word whose span
holds its midpoint, and a word's tokens are compared one to one when both sides have the same
token sequence (case-insensitive), else that word's tokens are not compared.
"""
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from fsalign.results.metrics import (
    Average,
    TimeStampError,
    average_token_duration,
    time_stamp_error,
    uncovered,
)
from fsalign.results.times import TimedSpan, UtteranceTimes

__all__ = ["TOLERANCES_MS", "PLACES", "PAUSE_MIN_MS", "ERROR_FIELDS", "AlignmentComparison", "AlignmentComparer",
           "SideStats", "compare_alignments", "word_mismatch", "word_tokens", "with_tokens", "error_lines"]

TOLERANCES_MS = (10, 20, 25, 50)
"""The tolerances of ``within_ms`` and ``token_within_ms``: a boundary is within τ when |Δ| <= τ."""

PLACES = {"between_words": "between words", "after_pause": "starts after a pause",
          "before_pause": "ends before a pause"}
"""The places of ``by_place`` (key -> printed name), by the reference: a start or end where two words
touch, a start after a pause (or the first word's), an end before a pause (or the last word's)."""

PAUSE_MIN_MS = 10.0
"""A gap between two reference words of at least this many ms is a pause (shorter gaps: rounding)."""

ERROR_FIELDS = ("tse_boundary_ms", "tse_centre_ms", "onset_ms", "offset_ms", "onset_bias_ms", "offset_bias_ms",
                "within_ms", "by_place", "num_words", "num_utterances", "skipped_words", "token_boundary_ms",
                "token_within_ms", "num_tokens", "token_words", "token_words_skipped")
"""The fields of :meth:`AlignmentComparison.errors` (``EXP/eval.json`` and the align-corpus report)."""


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
    """What :func:`compare_alignments` measures (times in milliseconds; Δ = hypothesis − reference).

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
      onset_ms, offset_ms: mean |Δstart| and mean |Δend| over words (their mean is the TSE).
      onset_bias_ms, offset_bias_ms: mean Δstart and mean Δend (> 0: the hypothesis is late).
      within_ms: per tolerance of :data:`TOLERANCES_MS` (``"10"``, ...), the share of word
        boundaries (each word's start and its end: 2 N_words) with |Δ| <= τ.
      by_place: per place of :data:`PLACES`, ``{"boundaries": n, "error_ms": mean |Δ|, "bias_ms":
        mean Δ}`` over the word boundaries there (the errors None where there are none): where
        the error is, e.g. ends before pauses that come early because the pause grew.
      skipped_words: reference words of the skipped utterances.
      token_boundary_ms: token boundary error: mean over compared tokens of (|Δstart| + |Δend|) / 2
        (MFA's alignment score; the TSE of the tokens); None when no token was compared.
      token_within_ms: as ``within_ms``, over the compared tokens' boundaries.
      num_tokens: tokens compared (pairs).
      token_words: words whose tokens were compared (same token sequence on both sides).
      token_words_skipped: words of compared utterances with tokens on both sides whose token
        sequences differ (or are empty): their tokens are not compared.
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
    onset_ms: Optional[float] = None
    offset_ms: Optional[float] = None
    onset_bias_ms: Optional[float] = None
    offset_bias_ms: Optional[float] = None
    within_ms: Dict[str, float] = field(default_factory=dict)
    by_place: Dict[str, Dict[str, Optional[float]]] = field(default_factory=dict)
    skipped_words: int = 0
    token_boundary_ms: Optional[float] = None
    token_within_ms: Dict[str, float] = field(default_factory=dict)
    num_tokens: int = 0
    token_words: int = 0
    token_words_skipped: int = 0

    def to_dict(self) -> dict:
        """JSON-serialisable dict of the fields, nested :class:`SideStats` included."""
        return asdict(self)

    def errors(self) -> Dict[str, Any]:
        """The error numbers and counts (:data:`ERROR_FIELDS`), without the side statistics and id lists."""
        d = self.to_dict()
        return {k: d[k] for k in ERROR_FIELDS}


def word_mismatch(ref_words: List[str], hyp_words: List[str]) -> Optional[str]:
    """Why two word sequences cannot be compared word by word (None when they are equal)."""
    if ref_words == hyp_words:
        return None
    if len(ref_words) != len(hyp_words):
        return f"words differ: {len(ref_words)} in the reference, {len(hyp_words)} in the hypothesis"
    i = next(i for i, (r, h) in enumerate(zip(ref_words, hyp_words)) if r != h)
    return f"words differ: word {i + 1} is {ref_words[i]!r} in the reference, {hyp_words[i]!r} in the hypothesis"


def word_tokens(words: Sequence[TimedSpan], tokens: Sequence[TimedSpan]) -> List[List[TimedSpan]]:
    """Per word (in time order), its tokens: those whose midpoint lies in [start, end] of the word.

    A token in no word (a pause) belongs to none; where words overlap, a token goes to the
    last word starting at or before its midpoint.
    """
    starts = [w.start for w in words]
    out: List[List[TimedSpan]] = [[] for _ in words]
    for token in tokens:
        middle = (token.start + token.end) / 2
        i = bisect_right(starts, middle) - 1
        if i >= 0 and middle <= words[i].end:
            out[i].append(token)
    return out


def with_tokens(utterances: Mapping[str, UtteranceTimes],
                tokens: Mapping[str, Sequence[TimedSpan]]) -> Dict[str, UtteranceTimes]:
    """``utterances`` with their token times replaced by ``tokens[utt_id]`` (none where it has no entry).

    E.g. word times from a words CTM and phone times from a phones CTM
    (``fsalign tse --ref-tokens``).
    """
    return {u: UtteranceTimes(t.utt_id, t.duration, t.words, list(tokens.get(u, [])), t.channel, t.written)
            for u, t in utterances.items()}


def _token_pairs(ref: UtteranceTimes, hyp: UtteranceTimes) -> Tuple[List[TimedSpan], List[TimedSpan], int, int]:
    ref_seq, hyp_seq, same, other = [], [], 0, 0
    for r, h in zip(word_tokens(ref.words, ref.tokens), word_tokens(hyp.words, hyp.tokens)):
        if r and [t.label.casefold() for t in r] == [t.label.casefold() for t in h]:
            ref_seq += r
            hyp_seq += h
            same += 1
        else:
            other += 1
    return ref_seq, hyp_seq, same, other


def _shares(tse: TimeStampError) -> Dict[str, float]:
    if not tse.num_words:
        return {}
    return {f"{ms:g}": share for ms, share in zip(TOLERANCES_MS, tse.within_share)}


class AlignmentComparer:
    """Adds up the comparison of reference and hypothesis utterances, one pair at a time.

    :func:`compare_alignments` over two mappings; the dev evaluation of training feeds it
    utterance by utterance. :meth:`result` gives the :class:`AlignmentComparison`.
    """

    def __init__(self):
        zero = time_stamp_error([], [], [ms / 1000 for ms in TOLERANCES_MS])
        self.words, self.tokens = zero, zero
        self.result_ = AlignmentComparison(None, None, 0, 0, SideStats(), SideStats())
        self.length = 0.0
        self.silence = {"ref": 0.0, "hyp": 0.0}
        self.token_silence = {"ref": 0.0, "hyp": 0.0}
        self.all_tokens = {"ref": True, "hyp": True}
        self.durations = {"ref": Average(0.0, 0), "hyp": Average(0.0, 0)}
        self.token_durations = {"ref": Average(0.0, 0), "hyp": Average(0.0, 0)}
        self.places = {place: [0, 0.0, 0.0] for place in PLACES}  # boundaries, sum |Δ|, sum Δ

    def _add_places(self, ref: Sequence[TimedSpan], hyp: Sequence[TimedSpan]) -> None:
        pause = PAUSE_MIN_MS / 1000
        for i, (r, h) in enumerate(zip(ref, hyp)):
            after = i == 0 or r.start - ref[i - 1].end >= pause
            before = i == len(ref) - 1 or ref[i + 1].start - r.end >= pause
            for place, delta in (("after_pause" if after else "between_words", h.start - r.start),
                                 ("before_pause" if before else "between_words", h.end - r.end)):
                sums = self.places[place]
                sums[0] += 1
                sums[1] += abs(delta)
                sums[2] += delta

    def add(self, utt_id: str, ref: UtteranceTimes, hyp: UtteranceTimes) -> Optional[str]:
        """Compares one utterance; returns why it was skipped (words differ), or None when compared."""
        reason = word_mismatch([w.label.casefold() for w in ref.words], [w.label.casefold() for w in hyp.words])
        if reason is not None:
            self.result_.skipped[utt_id] = reason
            self.result_.skipped_words += len(ref.words)
            return reason
        tolerances = self.words.tolerances
        self.words = self.words + time_stamp_error([ref.words], [hyp.words], tolerances)
        self._add_places(ref.words, hyp.words)
        if ref.tokens and hyp.tokens:
            ref_seq, hyp_seq, same, other = _token_pairs(ref, hyp)
            self.tokens = self.tokens + time_stamp_error([ref_seq], [hyp_seq], tolerances)
            self.result_.token_words += same
            self.result_.token_words_skipped += other
        duration = ref.duration if ref.duration is not None else hyp.duration
        if duration is None:
            duration = max([w.end for w in ref.words + hyp.words] + [0.0])
            self.result_.durations_from_word_ends += 1
        self.length += duration
        for side, utt in (("ref", ref), ("hyp", hyp)):
            self.silence[side] += uncovered(utt.words, duration)
            if utt.tokens:
                self.token_silence[side] += uncovered(utt.tokens, duration)
            elif utt.words:  # words but no token times: no token-level ratio for this side
                self.all_tokens[side] = False
            self.durations[side] = self.durations[side] + average_token_duration([utt.words])
            self.token_durations[side] = self.token_durations[side] + average_token_duration([utt.tokens])
        self.result_.num_utterances += 1
        return None

    def result(self) -> AlignmentComparison:
        """The comparison of everything added so far."""
        result, words, tokens, length = self.result_, self.words, self.tokens, self.length
        result.num_words, result.num_tokens = words.num_words, tokens.num_words
        if words.num_words:
            result.tse_boundary_ms, result.tse_centre_ms = 1000 * words.boundary, 1000 * words.centre
            result.onset_ms, result.offset_ms = (1000 * v for v in words.onset_offset)
            result.onset_bias_ms, result.offset_bias_ms = (1000 * v for v in words.bias)
        result.within_ms = _shares(words)
        result.by_place = {place: {"boundaries": n, "error_ms": 1000 * err / n if n else None,
                                   "bias_ms": 1000 * bias / n if n else None}
                           for place, (n, err, bias) in self.places.items()}
        if tokens.num_words:
            result.token_boundary_ms = 1000 * tokens.boundary
        result.token_within_ms = _shares(tokens)
        for side, stats in (("ref", result.ref), ("hyp", result.hyp)):
            stats.silence_ratio = self.silence[side] / length if length > 0 else None
            stats.blank_ratio = self.token_silence[side] / length if length > 0 and self.all_tokens[side] else None
            stats.word_duration_ms = 1000 * self.durations[side].value if self.durations[side].count else None
            tokens_side = self.token_durations[side]
            stats.token_duration_ms = 1000 * tokens_side.value if tokens_side.count else None
            stats.num_tokens = tokens_side.count
        return result


def compare_alignments(ref: Mapping, hyp: Mapping) -> AlignmentComparison:
    """Word and token boundary errors and silence/duration statistics of ``hyp`` w.r.t. ``ref`` (A.4.2).

    Utterances are matched by id. One whose word sequences differ (compared
    case-insensitively, silence already dropped by the readers) is skipped and listed;
    the errors need a one-to-one word correspondence. Tokens are compared where both sides
    of a compared utterance have them, word by word (see the module docstring). The silence
    ratio of a side is the fraction of the compared utterances' length covered by none of
    its words; an utterance's length is the reference's duration, else the hypothesis',
    else (two CTMs) the later of the two last word ends (so leading silence counts, trailing
    silence after the later side's last word does not).

    Args:
      ref: utterance id -> :class:`fsalign.results.times.UtteranceTimes` (reference).
      hyp: utterance id -> :class:`fsalign.results.times.UtteranceTimes` (hypothesis).

    Returns:
      :class:`AlignmentComparison`.
    """
    comparer = AlignmentComparer()
    for utt_id, r in ref.items():
        if utt_id in hyp:
            comparer.add(utt_id, r, hyp[utt_id])
    result = comparer.result()
    result.only_in_ref = [u for u in ref if u not in hyp]
    result.only_in_hyp = [u for u in hyp if u not in ref]
    return result


def _ms(value: Optional[float], signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.1f} ms" if signed else f"{value:.1f} ms")


def _within(shares: Optional[Mapping[str, float]]) -> str:
    if not shares:
        return "n/a"
    return " / ".join(f"{100 * v:.1f}" for v in shares.values()) + " %"


def error_lines(errors: Mapping[str, Any]) -> List[str]:
    """The error numbers of :meth:`AlignmentComparison.errors` (or its JSON) as printed lines (n/a: missing)."""
    e = errors.get
    tolerances = " / ".join(f"{ms:g}" for ms in TOLERANCES_MS)
    lines = [
        f"TSE boundary: {_ms(e('tse_boundary_ms'))}, centre: {_ms(e('tse_centre_ms'))}",
        f"onset (word start) error: {_ms(e('onset_ms'))} (mean signed {_ms(e('onset_bias_ms'), True)}), "
        f"offset (word end) error: {_ms(e('offset_ms'))} (mean signed {_ms(e('offset_bias_ms'), True)})",
        f"word boundaries (starts and ends) within {tolerances} ms: {_within(e('within_ms'))}",
    ]
    places = e("by_place") or {}
    if any(p.get("boundaries") for p in places.values()):
        lines.append("by place (mean error, mean signed, boundaries): " + ", ".join(
            f"{PLACES.get(k, k)} {_ms(p['error_ms'])} ({_ms(p['bias_ms'], True)}, {p['boundaries']})"
            for k, p in places.items()))
    if e("num_tokens") or e("token_words_skipped"):
        lines += [f"token boundary error: {_ms(e('token_boundary_ms'))} over {e('num_tokens')} tokens of "
                  f"{e('token_words')} words ({e('token_words_skipped')} words with other tokens not compared)",
                  f"token boundaries within {tolerances} ms: {_within(e('token_within_ms'))}"]
    return lines

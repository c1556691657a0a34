"""Time stamp error over the words two alignments share, when their word sequences differ.

:func:`fsalign.results.compare.compare_alignments` compares utterances whose word sequences are
equal and skips the others. An alignment that allowed the transcript not to match the audio
(``--allow-mismatch``) leaves out the transcript words it skipped, and the transcript itself may
lack words that were spoken or hold words that were not: :func:`compare_matched` pairs the
words of the two sides by their labels in order (the longest matching blocks of
:class:`difflib.SequenceMatcher`, compared case-insensitively) and measures the TSE of the pairs.
"""
import difflib
from dataclasses import asdict, dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

from fsalign.results.metrics import TimeStampError, time_stamp_error
from fsalign.results.times import TimedSpan

__all__ = ["MatchedComparison", "matched_pairs", "compare_matched"]


@dataclass
class MatchedComparison:
    """What :func:`compare_matched` measures (times in milliseconds).

    Attributes:
      tse_boundary_ms: TSE of A.4.2 over the matched words (None without any).
      tse_centre_ms: mean |Δcentre| over the matched words.
      num_words: matched words.
      ref_words, hyp_words: words of each side in the compared utterances.
      num_utterances: utterances on both sides.
    """

    tse_boundary_ms: Optional[float]
    tse_centre_ms: Optional[float]
    num_words: int
    ref_words: int
    hyp_words: int
    num_utterances: int

    def to_dict(self) -> dict:
        """JSON-serialisable dict of the fields."""
        return asdict(self)


def matched_pairs(ref: Sequence[TimedSpan], hyp: Sequence[TimedSpan]) -> List[Tuple[int, int]]:
    """(reference index, hypothesis index) of the words paired by label, in order."""
    matcher = difflib.SequenceMatcher(None, [w.label.casefold() for w in ref], [w.label.casefold() for w in hyp],
                                      autojunk=False)
    return [(block.a + k, block.b + k) for block in matcher.get_matching_blocks() for k in range(block.size)]


def compare_matched(ref: Mapping, hyp: Mapping) -> MatchedComparison:
    """TSE of the words both sides share, utterance by utterance (module docstring).

    Args:
      ref: utterance id -> :class:`fsalign.results.times.UtteranceTimes` (reference).
      hyp: utterance id -> :class:`fsalign.results.times.UtteranceTimes` (hypothesis).

    Returns:
      :class:`MatchedComparison` over the utterances present on both sides.
    """
    tse = TimeStampError(0.0, 0.0, 0)
    ref_words = hyp_words = utterances = 0
    for utt_id, r in ref.items():
        h = hyp.get(utt_id)
        if h is None:
            continue
        pairs = matched_pairs(r.words, h.words)
        tse = tse + time_stamp_error([[r.words[i] for i, _ in pairs]], [[h.words[j] for _, j in pairs]])
        ref_words += len(r.words)
        hyp_words += len(h.words)
        utterances += 1
    if not tse.num_words:
        return MatchedComparison(None, None, 0, ref_words, hyp_words, utterances)
    return MatchedComparison(1000 * tse.boundary, 1000 * tse.centre, tse.num_words, ref_words, hyp_words, utterances)

"""Word and token times in memory: :class:`TimedSpan` and :class:`UtteranceTimes`.

Every alignment format of :mod:`fsalign.results.formats` and :mod:`fsalign.results.manifests`
is read into, and written from, these two types. Silence is not a word: readers drop spans
whose label is empty or one of :data:`SILENCE_LABELS` (:func:`words_only`).
"""
from dataclasses import dataclass, field
from typing import Iterable, List, Optional

from fsalign.util import Seconds

__all__ = ["TimedSpan", "UtteranceTimes", "SkippedWord", "MismatchTimes", "UNTRANSCRIBED_LABEL", "SILENCE_LABELS",
           "LEVELS", "is_silence", "words_only", "check_level"]

SILENCE_LABELS = frozenset({"", "<eps>", "sil", "sp", "<sil>"})
"""Labels (lower-cased, stripped) that mark silence, not a word or token."""

LEVELS = ("word", "token")

UNTRANSCRIBED_LABEL = "<unk>"
"""The label of untranscribed stretches (garbage spans) in TextGrids and cuts."""


@dataclass(frozen=True)
class TimedSpan:
    """One word or token.

    Attributes:
      label: the word or token.
      start: start in seconds, relative to the start of the cut (recording for a whole-recording cut).
      end: end in seconds (exclusive).
      score: the confidence in [0, 1] (:mod:`fsalign.results.confidence`), None where unknown (a
        reference, a format without it). Part of equality: a span read back from a format that
        stores it equals the span written.
    """

    label: str
    start: Seconds
    end: Seconds
    score: Optional[float] = None

    @property
    def duration(self) -> Seconds:
        """``end - start`` in seconds."""
        return self.end - self.start


@dataclass(frozen=True)
class SkippedWord:
    """A transcript word that an alignment allowing mismatch left out: it gets no time.

    Attributes:
      label: the word (spoken form, as the words of :class:`UtteranceTimes`).
      index: its index among the transcript's spoken words (0-based).
      at: where the transcript puts it: the end of the aligned word before it, 0 for none
        (seconds, relative as the spans are); a place to show it, not a time of the word.
    """

    label: str
    index: int
    at: Seconds


@dataclass
class MismatchTimes:
    """What an alignment that allowed a mismatching transcript found besides the words.

    Attributes:
      skipped: the transcript words it left out, in transcript order.
      untranscribed: the stretches it gave to garbage (untranscribed speech, noise), in time order,
        labelled :data:`UNTRANSCRIBED_LABEL`.
    """

    skipped: List[SkippedWord] = field(default_factory=list)
    untranscribed: List[TimedSpan] = field(default_factory=list)


@dataclass
class UtteranceTimes:
    """The word and token times of one aligned utterance.

    Attributes:
      utt_id: utterance (cut) id.
      duration: length of the utterance in seconds; None where the source does not say (CTM).
      words: word spans in time order (the spoken words: what the model aligned).
      tokens: token spans in time order (may be empty).
      channel: the CTM channel column.
      written: the transcript's words as written (``"Hello,"``, ``"40"``), each spanning the
        spoken words it became (:func:`fsalign.corpus.normalize.normalize`); empty where the
        source does not have them.
      mismatch: the skipped words and untranscribed stretches of an alignment that allowed the
        transcript not to match the audio (``--allow-mismatch``); None for one that did not.
    """

    utt_id: str
    duration: Optional[Seconds]
    words: List[TimedSpan] = field(default_factory=list)
    tokens: List[TimedSpan] = field(default_factory=list)
    channel: int = 1
    written: List[TimedSpan] = field(default_factory=list)
    mismatch: Optional[MismatchTimes] = None

    def shifted(self, offset: Seconds) -> "UtteranceTimes":
        """The same spans ``offset`` seconds later (e.g. relative to the recording instead of the cut)."""
        def move(spans):
            return [TimedSpan(s.label, round(s.start + offset, 9), round(s.end + offset, 9), s.score) for s in spans]

        duration = None if self.duration is None else self.duration + offset
        mismatch = None
        if self.mismatch is not None:
            mismatch = MismatchTimes([SkippedWord(w.label, w.index, round(w.at + offset, 9))
                                      for w in self.mismatch.skipped], move(self.mismatch.untranscribed))
        return UtteranceTimes(self.utt_id, duration, move(self.words), move(self.tokens), self.channel,
                              move(self.written), mismatch)

    def spans(self, level: str = "word") -> List[TimedSpan]:
        """``words`` or ``tokens``."""
        return self.words if check_level(level) == "word" else self.tokens


def check_level(level: str) -> str:
    """Returns ``level`` if it is one of :data:`LEVELS`; raises ValueError otherwise."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return level


def is_silence(label: str) -> bool:
    """True for an empty label or a silence marker of :data:`SILENCE_LABELS`."""
    return label.strip().lower() in SILENCE_LABELS


def words_only(spans: Iterable[TimedSpan]) -> List[TimedSpan]:
    """The spans that are not silence (:func:`is_silence`), sorted by (start, end)."""
    return sorted((s for s in spans if not is_silence(s.label)), key=lambda s: (s.start, s.end))
